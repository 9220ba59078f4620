"""Where datasets, runs and caches live: everything under LANDMARKS_HOME (default ./workspace)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def home() -> Path:
    p = Path(os.environ.get("LANDMARKS_HOME") or (REPO / "workspace")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def _sub(name: str) -> Path:
    p = home() / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def datasets_dir() -> Path:
    return _sub("datasets")


def runs_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        p = Path(override).expanduser()
        p.mkdir(parents=True, exist_ok=True)
        return p
    return _sub("runs")


def cache_dir() -> Path:
    return _sub("cache")


def demo_dir() -> Path:
    return datasets_dir() / "demo"
