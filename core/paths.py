"""Where datasets, runs and caches live: everything under LANDMARKS_HOME (default ./workspace)."""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from core.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def ensure_dir(p: Path, what: str, fix: str = "choose a writable one") -> Path:
    """mkdir -p that answers with a sentence, and checks the folder can be written to."""
    with writing(p, what, fix, any_error=True):
        p.mkdir(parents=True, exist_ok=True)
        if not os.access(p, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    return p


DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_error(e: OSError, p: Path, what: str, fix: str = "choose a writable one",
                any_error: bool = False) -> UserError | None:
    """The one sentence for an OSError met while writing under `p`; None when it is not a disk
    problem the user can fix (and `any_error` is off), so that a real bug keeps its traceback."""
    reason = (e.strerror or str(e)).lower()
    if e.errno in DISK_FULL:
        return UserError(f"The disk holding {p} is full ({reason}); free space and run again.")
    if any_error or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"Cannot write the {what} folder {p} ({reason}); {fix}.")
    return None


@contextmanager
def writing(p: Path, what: str, fix: str = "choose a writable one", any_error: bool = False):
    """Turns a full disk or a folder that cannot be written into write_error's sentence."""
    try:
        yield
    except OSError as e:
        err = write_error(e, p, what, fix, any_error)
        if err is None:
            raise
        raise err from None


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


# ------------------------------------------------------------------ paths typed in the browser

DATA_ROOTS_ENV = "LANDMARKS_DATA_ROOTS"   # os.pathsep-separated folders the operator opens to the browser


def browser_roots() -> list[Path]:
    """Folders a browser user may open by typing a path: LANDMARKS_HOME/datasets and the
    operator's LANDMARKS_DATA_ROOTS, symlinks resolved. The CLI is not confined."""
    roots = [datasets_dir().resolve()]
    for part in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep):
        if part.strip():
            r = Path(part.strip()).expanduser().resolve()
            if r not in roots:
                roots.append(r)
    return roots


def weight_roots() -> list[Path]:
    """browser_roots() plus LANDMARKS_HOME/runs, where the runs' checkpoints live."""
    roots = browser_roots()
    runs = runs_dir().resolve()
    return roots + [runs] if runs not in roots else roots


def confine(typed: str, what: str = "data set folder", roots: list[Path] | None = None) -> Path:
    """The resolved path (user folder expanded, symlinks followed) when it lies under one of
    `roots` (default browser_roots()); else a UserError whose sentence is the same whether or
    not the path exists, so the browser learns nothing about folders outside the roots."""
    roots = browser_roots() if roots is None else roots
    try:
        p = Path(str(typed).strip()).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte, an unknown ~user
        p = None
    if p is not None and any(p.is_relative_to(r) for r in roots):
        return p
    shown = ", ".join(str(r) for r in roots)
    raise UserError(f"The {what} must be under {shown}: only those folders can be opened from the browser, "
                    f"so ask the operator to add its folder to {DATA_ROOTS_ENV}.")
