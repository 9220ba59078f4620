"""Where datasets, runs and caches live: everything under LANDMARKS_HOME (default ./workspace)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

REPO = Path(__file__).resolve().parent.parent


def ensure_dir(p: Path, what: str) -> Path:
    """mkdir -p that answers with a sentence, and checks the folder can be written to."""
    try:
        p.mkdir(parents=True, exist_ok=True)
        if not os.access(p, os.W_OK | os.X_OK):
            raise PermissionError("permission denied")
    except OSError as e:
        reason = e.strerror or str(e)
        raise UserError(f"Cannot write the {what} folder {p} ({reason.lower()}); choose a writable one.") from None
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
