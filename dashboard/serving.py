"""The server settings of .streamlit/config.toml, held however the app is started (issue 19 #7).

Streamlit reads `.streamlit/config.toml` from the current folder and from the main script's
folder. `dashboard/.streamlit/config.toml` is a link to the repository's file, so
`streamlit run /path/to/dashboard/app.py` started from any folder binds to 127.0.0.1 with the
same upload cap, error details and toolbar. As a second line (an older Streamlit, a copied app
file), the entry point calls `hold()`, which

* applies the file's values of the options that take effect while the server runs (the upload
  cap, error details in the browser, the toolbar) unless they were given on the command line or
  by a STREAMLIT_* environment variable, and
* refuses to serve (one sentence, in the page and in the server log) when the server listens on
  anything but loopback and nobody asked for that: `--server.address ADDRESS` (or
  STREAMLIT_SERVER_ADDRESS) or LANDMARKS_ALLOW_REMOTE=1 ask for it.
"""
from __future__ import annotations

import ipaddress
import os
import sys
import tomllib
from pathlib import Path

from streamlit import config

CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"
REMOTE_ENV = "LANDMARKS_ALLOW_REMOTE"
HELD = ("server.maxUploadSize", "client.showErrorDetails", "client.toolbarMode")
# where Streamlit says an option came from when the operator gave it when starting the server
EXPLICIT = {getattr(config, "_DEFINED_BY_FLAG", "command-line argument or environment variable"),
            getattr(config, "_DEFINED_BY_ENV_VAR", "environment variable")}
_told: set[str] = set()


def file_options(path: Path = CONFIG) -> dict:
    """The repository's config.toml as {"section.option": value}."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {f"{section}.{key}": value for section, values in data.items() if isinstance(values, dict)
            for key, value in values.items() if not isinstance(value, dict)}


def explicit(key: str) -> bool:
    return config.get_where_defined(key) in EXPLICIT


def loopback(address: str | None) -> bool:
    """True for an address only this machine can reach (a loopback IP, localhost, a unix socket)."""
    if not address:
        return False                                   # Streamlit's default: every interface
    if address.startswith("unix://") or address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False                                   # a host name: it may be any interface


def under_test() -> bool:
    """streamlit.testing's AppTest runs the script without a server: nothing listens."""
    return bool(config.get_option("global.appTest"))


def refusal() -> str | None:
    """The sentence that refuses a server listening beyond this machine that nobody asked for."""
    if under_test():
        return None
    address = config.get_option("server.address")
    if loopback(address) or explicit("server.address") or os.environ.get(REMOTE_ENV, "").strip() == "1":
        return None
    where = "every network interface" if not address else f"address {address}"
    return (f"This workbench has no login and serves only this machine, but this server listens on {where}; "
            f"to expose it on purpose, start it with --server.address ADDRESS (or {REMOTE_ENV}=1), "
            f"preferably behind an authenticating proxy (see SECURITY.md).")


def hold(path: Path = CONFIG) -> str | None:
    """Apply the file's run-time options (see HELD) that were not given explicitly; the refusal
    sentence when the server must not serve (also written once to the server log), else None."""
    wanted = file_options(path)
    for key in HELD:
        if key in wanted and not explicit(key) and config.get_option(key) != wanted[key]:
            config.set_option(key, wanted[key], where_defined=str(path))
    why = refusal()
    if why and why not in _told:
        _told.add(why)
        print(f"landmarks: {why}", file=sys.stderr)
    return why
