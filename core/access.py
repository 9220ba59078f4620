"""What a browser user may open by typing a path: LANDMARKS_HOME/datasets, the folders the operator
lists in LANDMARKS_DATA_ROOTS and, for weights, LANDMARKS_HOME/runs. The CLI is not confined."""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import UserError
from core.paths import datasets_dir, runs_dir

DATA_ROOTS_ENV = "LANDMARKS_DATA_ROOTS"   # os.pathsep-separated folders the operator opens to the browser


def browser_roots() -> list[Path]:
    """Folders a browser user may open by typing a path: LANDMARKS_HOME/datasets and the
    operator's LANDMARKS_DATA_ROOTS, symlinks resolved."""
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
