"""Data set versions (issue 22): exclude or relabel images without touching the photos.

A version is a small folder, LANDMARKS_HOME/versions/<name>/, holding
  version.json  {"base": absolute path of the base data set, "name", "created", "parent_version"}
  changes.csv   path,action,new_label,reason  (path relative to the base's folder; action exclude|relabel)
The base's photos and CSVs are never modified. A version of a version records the original base
and the parent's changes followed by its own (the last change of a path wins), so reading one never
recurses. readers.detect_layout sees version.json and its reader (`read_version`) loads the base's
index and applies the changes, so every command and page that takes a data set takes a version too;
the index keeps the base's (`index.base`) so that training can keep the base's holdout
(core.data.splits.base_places).
"""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from core import paths
from core.data import registry
from core.data.changes import (CHANGES_FILE, COLUMNS, VERSION_FILE, Version, apply, is_version,  # noqa: F401
                               normalise, read_version, relative)
from core.data.readers import DatasetIndex, detect_layout, load_index
from core.errors import UserError, writing
from core.files import atomic_write

EXAMPLES = 5     # known classes a refusal lists


def versions_dir() -> Path:
    return paths.ensure_dir(paths.home() / "versions", "versions")


# ------------------------------------------------------------------ making

def _check_name(name: str) -> str:
    name = registry.check_name(name)
    if registry.by_name(name) is not None or (versions_dir() / name).exists():
        raise UserError(f"A data set named {name!r} already exists; choose another name.")
    return name


def _refuse_unknown_paths(given: list[str], present: set, root: Path, base: Path) -> None:
    gone = [p for p in given if p not in present]
    if gone:
        more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
        of = f"the version {base.name} of {root} (excluded already?)" if base != root else f"the data set {root}"
        raise UserError(f"{gone[0]!r}{more} is not an image of {of}; give paths relative to "
                        f"{root} (as `inspect` lists them) or absolute ones inside it.")


def _refuse_unknown_labels(relabel: dict, labels: pd.Series) -> None:
    known = set(labels)
    bad = next(((p, lab) for p, lab in relabel.items() if lab not in known), None)
    if bad:
        some = ", ".join(map(str, sorted(known, key=str)[:EXAMPLES])) + (", …" if len(known) > EXAMPLES else "")
        raise UserError(f"Cannot relabel {bad[0]} to {bad[1]!r}: the data set has no such class "
                        f"(its {len(known)} classes include {some}).")


def _refuse_emptied(before: pd.Series, after: pd.Series, index: DatasetIndex) -> None:
    emptied = sorted(set(before) - set(after), key=str)
    if emptied:
        lab = emptied[0]
        name = index.name(lab)
        named = f"{name!r} ({lab})" if name != lab else repr(lab)
        more = f" (and {len(emptied) - 1} other class{'es' if len(emptied) > 2 else ''})" if len(emptied) > 1 else ""
        raise UserError(f"These changes would leave class {named}{more} with no images (it has "
                        f"{int((before == lab).sum())}); keep at least one of its images.")


def plan(base, exclude=(), relabel: dict | None = None, reason: str = "") -> tuple[DatasetIndex, pd.DataFrame]:
    """(the index of `base`, the new changes), checked: one sentence for a path not in the data set,
    a relabel to an unknown class, a class left empty, a path in both lists, or nothing to change."""
    base = Path(base).expanduser().resolve()
    index = load_index(base)
    root = index.root
    ex = list(dict.fromkeys(normalise(p, root) for p in exclude or () if str(p).strip()))
    rl = {normalise(p, root): str(lab).strip() for p, lab in (relabel or {}).items() if str(p).strip()}
    if not ex and not rl:
        raise UserError("Nothing to change: give at least one image to exclude or relabel.")
    both = next((p for p in ex if p in rl), None)
    if both:
        raise UserError(f"{both} is listed both to exclude and to relabel; keep it in one list.")
    rel = relative(index.samples["path"], root)
    _refuse_unknown_paths([*ex, *rl], set(rel), root, base)
    _refuse_unknown_labels(rl, index.samples["label"])
    new = pd.DataFrame([(p, "exclude", "", reason) for p in ex] + [(p, "relabel", lab, reason) for p, lab in rl.items()],
                       columns=COLUMNS)
    _refuse_emptied(index.samples["label"], apply(index, new).samples["label"], index)
    return index, new


def make_version(base, name: str, exclude=(), relabel: dict | None = None, reason: str = "",
                 remember: bool = True) -> Path:
    """Write a new version of `base` (a data set folder or a version) and register it; returns
    its folder. Everything is checked before anything is written; the folder appears whole
    (written aside, then renamed) or not at all."""
    name = _check_name(name)
    base = Path(base).expanduser().resolve()
    parent = read_version(base) if is_version(base) else None
    _, new = plan(base, exclude, relabel, reason)
    changes = pd.concat([parent.changes, new], ignore_index=True) if parent else new
    meta = {"base": str(parent.base if parent else base), "name": name, "created": time.time(),
            "parent_version": str(parent.root) if parent else None}
    out = versions_dir() / name
    with writing(out.parent, "versions"):
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
        try:
            changes.to_csv(tmp / CHANGES_FILE, index=False, quoting=csv.QUOTE_MINIMAL)
            atomic_write(tmp / VERSION_FILE, json.dumps(meta, indent=1))
            os.rename(tmp, out)           # refuses (ENOTEMPTY/EEXIST) if the name was taken meanwhile
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise UserError(f"A data set named {name!r} already exists; choose another name.") from None
            raise
    if remember:
        v = read_version(out)
        registry.remember(out, name, source="version", extra={"base": meta["base"], "changes": v.summary()})
    return out


def versions_of(data) -> list[Version]:
    """The versions (under LANDMARKS_HOME/versions) of the data set `data` (its base when `data`
    is a version), oldest first."""
    root = Path(data).expanduser().resolve()
    detect_layout(root)               # a folder that is not a data set: one sentence
    base = read_version(root).base if is_version(root) else root
    found = []
    for d in sorted(versions_dir().iterdir()):
        if d.name.startswith(".") or not is_version(d):
            continue
        try:
            v = read_version(d)
        except UserError:
            continue
        if v.base == base:
            found.append(v)
    return sorted(found, key=lambda v: v.created)


# ------------------------------------------------------------------ reading the user's lists

def _rows(path) -> list[list[str]]:
    f = Path(path).expanduser()
    try:
        text = f.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"Cannot read {f} ({getattr(e, 'strerror', None) or type(e).__name__}).") from None
    return [[c.strip() for c in r] for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]


PATH_HEADERS = {"path", "image", "file"}
LABEL_HEADERS = {"new_label", "label", "suggested", "landmark_id"}


def read_path_list(path) -> list[str]:
    """A text file of paths (one a line) or a CSV whose `path` (or `image`) column, else first, holds them."""
    rows = _rows(path)
    col = 0
    if rows and set(map(str.lower, rows[0])) & PATH_HEADERS:
        head = [c.lower() for c in rows.pop(0)]
        col = next(i for i, c in enumerate(head) if c in PATH_HEADERS)
    return [r[col] for r in rows if len(r) > col and r[col]]


def read_relabel_list(path) -> dict[str, str]:
    """A CSV of path,new_label (a header row naming them is optional)."""
    rows = _rows(path)
    cols = (0, 1)
    if rows and set(map(str.lower, rows[0])) & PATH_HEADERS:
        head = [c.lower() for c in rows.pop(0)]
        p = next(i for i, c in enumerate(head) if c in PATH_HEADERS)
        lab = next((i for i, c in enumerate(head) if c in LABEL_HEADERS), None)
        if lab is None:
            raise UserError(f"{path} has no new_label column; expected path,new_label.")
        cols = (p, lab)
    short = next((r for r in rows if len(r) <= max(cols) or not r[cols[1]]), None)
    if short is not None:
        raise UserError(f"{path}: the row {','.join(short)!r} has no new label; expected path,new_label.")
    return {r[cols[0]]: r[cols[1]] for r in rows}
