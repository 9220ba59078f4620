"""Where datasets, runs and caches live: everything under LANDMARKS_HOME (default ./workspace).

The wording of a disk problem is core.errors' (write_error, writing, DISK_FULL: re-exported here
for older imports); what the browser may open is core.access'."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from core.errors import DISK_FULL, write_error, writing  # noqa: F401 - re-exported

REPO = Path(__file__).resolve().parent.parent


def ensure_dir(p: Path, what: str, fix: str = "choose a writable one") -> Path:
    """mkdir -p that answers with a sentence, and checks the folder can be written to."""
    with writing(p, what, fix, any_error=True):
        p.mkdir(parents=True, exist_ok=True)
        if not os.access(p, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    return p


def home() -> Path:
    p = Path(os.environ.get("LANDMARKS_HOME") or (REPO / "workspace")).expanduser()
    return ensure_dir(p, "LANDMARKS_HOME")


def _sub(name: str) -> Path:
    return ensure_dir(home() / name, name)


def datasets_dir() -> Path:
    return _sub("datasets")


def runs_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return ensure_dir(Path(override).expanduser(), "runs")
    return _sub("runs")


def cache_dir() -> Path:
    return _sub("cache")


def demo_dir() -> Path:
    return datasets_dir() / "demo"
