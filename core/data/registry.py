"""Data sets the app remembers: a name for every folder a user pointed at (a typed path, a
download, the demo), kept in LANDMARKS_HOME/datasets.json.

The file is the truth (one small JSON list, rewritten atomically under a lock, so the app and a
download worker can both add to it). Forgetting a data set removes its entry, never its files.
"""
from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

from core import paths
from core.access import browser_roots
from core.errors import UserError, writing
from core.files import atomic_write, file_lock

FILE = "datasets.json"
SOURCES = ("typed", "download", "demo", "run", "version")
RESERVED = {"demo"}      # the app's own synthetic demo is offered under this name
_NAME = re.compile(r"^[\w][\w .\-()]{0,63}$")


def _file(home: Path | None) -> Path:
    return (home or paths.home()) / FILE


@contextmanager
def _locked(home: Path | None):
    f = _file(home)
    with writing(f.parent, "LANDMARKS_HOME"):
        with file_lock(f.with_suffix(".lock")):
            yield f


def _read(f: Path) -> list[dict]:
    try:
        data = json.loads(f.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        # a damaged list is kept aside, not overwritten: the folders themselves are untouched
        f.replace(f.with_name(f"{f.name}.damaged-{int(time.time())}"))
        return []
    return [d for d in data if isinstance(d, dict) and d.get("name") and d.get("path")] if isinstance(data, list) else []


def _write(f: Path, entries: list[dict]) -> None:
    with writing(f.parent, "LANDMARKS_HOME"):
        atomic_write(f, json.dumps(entries, indent=1))


def _key(path) -> str:
    return str(Path(path).expanduser().resolve())


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(r) for r in roots)


def listed(home: Path | None = None, browser: bool = False) -> list[dict]:
    """Every remembered data set, the most recently used first ({name, path, source, added, used});
    forgotten ones are left out. `browser`: only what a browser user may open, as a typed path
    must be: a folder found or typed (source "typed") that no longer lies under the allowed roots
    (core.access.browser_roots; a symlink followed by an earlier version, a root the operator took
    away) is left out. Downloads and the data of runs were chosen on the command line or already
    confined when chosen in the app."""
    entries = [d for d in _read(_file(home)) if not d.get("hidden")]
    if browser:
        roots = browser_roots()
        entries = [d for d in entries if d.get("source") != "typed" or _inside(Path(d["path"]), roots)]
    return sorted(entries, key=lambda d: -float(d.get("used") or 0))


def discover() -> list[Path]:
    """The data set folders in LANDMARKS_HOME/datasets, resolved, sorted by name: a symlink is
    followed only when its target lies under the allowed roots (issue 19 #10: a link to /etc
    placed in datasets/ must not offer /etc), as confine() does for a typed path."""
    roots = browser_roots()
    found = []
    for child in sorted(paths.datasets_dir().iterdir()):
        try:
            p = child.resolve(strict=True)
        except (OSError, RuntimeError):           # a dangling link or a loop
            continue
        if p.is_dir() and _inside(p, roots) and p not in found:
            found.append(p)
    return found


def by_path(path, home: Path | None = None) -> dict | None:
    k = _key(path)
    return next((d for d in _read(_file(home)) if d["path"] == k), None)


def by_name(name: str, home: Path | None = None) -> dict | None:
    return next((d for d in _read(_file(home)) if d["name"] == name), None)


def name_of(path, home: Path | None = None) -> str:
    """The remembered name of a data set folder, else the folder's own name."""
    if not path:
        return "—"
    d = by_path(path, home)
    return d["name"] if d else Path(str(path)).name or str(path)


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    i = 2
    while f"{name} ({i})" in taken:
        i += 1
    return f"{name} ({i})"


def check_name(name: str) -> str:
    name = (name or "").strip()
    if name.lower() in RESERVED:
        raise UserError(f"{name!r} is the name of the app's synthetic demo; choose another name.")
    if not _NAME.match(name):
        raise UserError(f"{name!r} is not a usable data set name: use 1-64 letters, digits, spaces, "
                        f"'.', '-', '_' or brackets, starting with a letter or digit.")
    return name


def remember(path, name: str | None = None, source: str = "typed", home: Path | None = None,
             touch: bool = True, extra: dict | None = None) -> dict:
    """Register `path` (idempotent: a known folder keeps its name) and mark it used now. `extra`:
    what a new entry keeps besides (a version's "base" and "changes", e.g. "2 excluded, 0 relabelled")."""
    if source not in SOURCES:
        raise ValueError(f"unknown data set source {source!r}")
    k = _key(path)
    with _locked(home) as f:
        entries = _read(f)
        now = time.time()
        for d in entries:
            if d["path"] == k:
                if touch:            # chosen again (typed, downloaded): a forgotten entry comes back
                    d["used"] = now
                    d.pop("hidden", None)
                break
        else:
            base = check_name(name) if name else (Path(k).name or "data set")
            d = {"name": _unique(base, {e["name"] for e in entries} | RESERVED), "path": k, "source": source,
                 "added": now, "used": now, **(extra or {})}
            entries.append(d)
        _write(f, entries)
    return dict(d)


def describe(d: dict, home: Path | None = None) -> str:
    """An entry as the pickers show it: its name, and for a version its base and changes
    ("clean-1 — version of monuments44: 2 excluded, 0 relabelled")."""
    if d.get("source") != "version" or not d.get("base"):
        return d["name"]
    return f"{d['name']} — version of {name_of(d['base'], home)}: {d.get('changes', 'changes')}"


def rename(old: str, new: str, home: Path | None = None) -> dict:
    new = check_name(new)
    with _locked(home) as f:
        entries = _read(f)
        d = next((e for e in entries if e["name"] == old), None)
        if d is None:
            raise UserError(f"There is no data set named {old!r}.")
        if new != old and any(e["name"] == new for e in entries):
            raise UserError(f"A data set named {new!r} already exists; choose another name.")
        d["name"] = new
        _write(f, entries)
    return dict(d)


def forget(name: str, home: Path | None = None) -> None:
    """Leave it out of the pickers (the folder and the runs trained on it stay). The entry is kept,
    marked hidden, so that finding the folder again (under datasets/, or as a run's data) does not
    bring it back by itself; typing or downloading it again does."""
    with _locked(home) as f:
        entries = _read(f)
        d = next((e for e in entries if e["name"] == name and not e.get("hidden")), None)
        if d is None:
            raise UserError(f"There is no data set named {name!r}.")
        d["hidden"] = True
        _write(f, entries)
