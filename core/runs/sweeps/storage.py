"""Where sweeps live: an Optuna storage URL (SQLite in LANDMARKS_HOME by default), its password kept
out of the URL, and the claim lock that makes a claim atomic on SQLite."""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from pathlib import Path

from core import paths
from core.errors import UserError
from core.files import atomic_write, file_lock



DB_FILE = "sweeps.db"


def _optuna():
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


PASSWORD_ENV, PASSWORD_FILE_ENV = "LANDMARKS_STORAGE_PASSWORD", "LANDMARKS_STORAGE_PASSWORD_FILE"


CREDENTIALS = "credentials.json"


def _split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None)."""
    m = re.match(r"^([a-zA-Z][\w+.-]*://)([^:@/]*):([^@/]*)@(.*)$", url)
    if not m:
        return url, None
    from urllib.parse import unquote
    return f"{m.group(1)}{m.group(2)}@{m.group(4)}", unquote(m.group(3))


def storage_url(url: str | None = None) -> str:
    """The storage's URL as it is shown and stored: never with a password (one given inline is
    kept in LANDMARKS_HOME/credentials.json, mode 0600, for open_storage)."""
    url = url or f"sqlite:///{paths.home() / DB_FILE}"
    public, password = _split_password(url)
    if password is not None:
        _remember_password(public, password)
    return public


def masked(text: str, url: str | None) -> str:
    """`text` with the storage's password (if any) replaced by ***."""
    password = _password_for(storage_url(url)) if url else None
    return text.replace(password, "***") if password else text


def _credentials_file() -> Path:
    return paths.home() / CREDENTIALS


def _remember_password(public: str, password: str) -> None:
    f = _credentials_file()
    with file_lock(f.with_name(f".{CREDENTIALS}.lock")):
        try:
            known = json.loads(f.read_text())
        except (OSError, ValueError):
            known = {}
        if known.get(public) != password:
            known[public] = password
            atomic_write(f, json.dumps(known))
            os.chmod(f, 0o600)


def _password_for(public: str) -> str | None:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if os.environ.get(PASSWORD_FILE_ENV):
        try:
            return Path(os.environ[PASSWORD_FILE_ENV]).expanduser().read_text().strip()
        except OSError as e:
            raise UserError(f"Cannot read the storage password file {os.environ[PASSWORD_FILE_ENV]} "
                            f"({e.strerror}); fix {PASSWORD_FILE_ENV}.") from None
    try:
        return json.loads(_credentials_file().read_text()).get(public)
    except (OSError, ValueError):
        return None


def _with_password(public: str) -> str:
    password = _password_for(public) if "@" in public else None
    if not password:
        return public
    from urllib.parse import quote
    scheme, rest = public.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{quote(password, safe='')}@{host}"


def open_storage(url: str | None):
    optuna = _optuna()
    url = storage_url(url)
    kw = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with claim_lock(url):            # two processes creating one SQLite storage at once collide
            if url.startswith("sqlite:///"):
                _wal(Path(url[len("sqlite:///"):]))
            return optuna.storages.RDBStorage(_with_password(url), engine_kwargs=kw)
    except Exception as e:  # noqa: BLE001 - a bad URL, a server that cannot be reached, a missing driver
        why = masked(str(e).splitlines()[0][:160] if str(e).strip() else type(e).__name__, url)
        raise UserError(f"Cannot open the sweep storage {url} ({why}).") from None


@contextlib.contextmanager
def claim_lock(storage: str | None):
    """Held while a driver claims a trial (and while a study is created): Optuna's WAITING→RUNNING
    step is a row lock on a database server, but not atomic on SQLite, so SQLite storages take a
    file lock beside their database (every driver of an SQLite storage is on this machine)."""
    url = storage_url(storage)
    if not url.startswith("sqlite:///") or getattr(_held, url, 0):
        yield                            # a server's row lock does it; or this thread holds it already
        return
    db = Path(url[len("sqlite:///"):])
    with file_lock(db.with_name(f".{db.name}.claim.lock")):
        setattr(_held, url, 1)
        try:
            yield
        finally:
            setattr(_held, url, 0)


_held = threading.local()                # the claim locks this thread holds (a flock is per open file)


def _wal(db: Path) -> None:
    """Write-ahead logging (kept in the file): the Sweeps page reads while drivers write, unblocked."""
    import sqlite3
    if db.parent.is_dir():
        with sqlite3.connect(db, timeout=60) as c:
            if c.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":   # switching needs the file alone
                c.execute("PRAGMA journal_mode=WAL")
