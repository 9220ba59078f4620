"""A data set version's own files (issue 22), read and applied; core.data.versions makes them.

  version.json  {"base": absolute path of the base data set, "name", "created", "parent_version"}
  changes.csv   path,action,new_label,reason  (path relative to the base's folder; action exclude|relabel)

Below core.data.readers (its "version" layout reads a version with these) and core.data.versions:
nothing here imports either.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from core.errors import UserError

VERSION_FILE = "version.json"
CHANGES_FILE = "changes.csv"
COLUMNS = ["path", "action", "new_label", "reason"]
ACTIONS = ("exclude", "relabel")


def is_version(root) -> bool:
    return (Path(root).expanduser() / VERSION_FILE).is_file()


@dataclass(frozen=True)
class Version:
    root: Path
    name: str
    base: Path
    created: float
    parent_version: str | None
    changes: pd.DataFrame          # COLUMNS, one row per change in order (a later one wins)

    def final(self) -> pd.DataFrame:
        """The last change of each path: what the version does to it."""
        return self.changes.drop_duplicates("path", keep="last")

    def counts(self) -> tuple[int, int]:
        f = self.final()["action"]
        return int((f == "exclude").sum()), int((f == "relabel").sum())

    def summary(self) -> str:
        ex, re = self.counts()
        return f"{ex} excluded, {re} relabelled"

    def as_dict(self) -> dict:
        ex, re = self.counts()
        return {"name": self.name, "path": str(self.root), "base": str(self.base), "created": self.created,
                "parent_version": self.parent_version, "excluded": ex, "relabelled": re}


def read_version(root) -> Version:
    root = Path(root).expanduser().resolve()
    try:
        meta = json.loads((root / VERSION_FILE).read_text())
        changes = pd.read_csv(root / CHANGES_FILE, dtype=str, keep_default_na=False)
        base = Path(meta["base"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"The data set version {root} cannot be read ({type(e).__name__}: {e}); "
                        f"make it again from its base data set.") from None
    if list(changes.columns[:len(COLUMNS)]) != COLUMNS or not changes["action"].isin(ACTIONS).all():
        raise UserError(f"{root / CHANGES_FILE} is not a list of changes (columns {','.join(COLUMNS)}, "
                        f"action exclude or relabel); make the version again from its base data set.")
    return Version(root, str(meta.get("name") or root.name), base, float(meta.get("created") or 0),
                   meta.get("parent_version"), changes[COLUMNS])


def relative(paths_: pd.Series, root: Path) -> pd.Series:
    """Index paths (absolute) relative to the data set folder, as changes.csv and `inspect` give them."""
    prefix = str(root).rstrip(os.sep) + os.sep
    s = paths_.astype(str)
    return s.where(~s.str.startswith(prefix), s.str.slice(len(prefix)))


def normalise(path: str, root: Path) -> str:
    """A path a user gave (relative to the data set folder, or absolute) as changes.csv keeps it."""
    p = str(path).strip()
    if os.path.isabs(os.path.expanduser(p)):
        p = os.path.normpath(os.path.expanduser(p))
        prefix = str(root).rstrip(os.sep) + os.sep
        return p[len(prefix):] if p.startswith(prefix) else p
    return os.path.normpath(p)


def apply(index, changes: pd.DataFrame):
    """A new index: `index` less the excluded images, relabelled ones under their new label.
    Changes naming images the base no longer has are left aside (they are gone anyway)."""
    final = changes.drop_duplicates("path", keep="last").set_index("path")
    rel = relative(index.samples["path"], index.root)
    action = rel.map(final["action"])
    samples = index.samples.assign(label=index.samples["label"].where(
        action != "relabel", rel.map(final["new_label"])))
    samples = samples[(action != "exclude").to_numpy()].reset_index(drop=True)
    return replace(index, layout="version", samples=samples, base=index)
