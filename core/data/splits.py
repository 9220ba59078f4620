"""The seed's split: top-N classes, a stratified holdout split off first, then train/val.

Deterministic from a seed; no image in two splits; every class with three or more images
keeps at least one holdout image. The manifest (path, label, split) is written beside the run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import UserError
from core.files import atomic_output


def top_classes(counts: pd.Series, n: int) -> list[str]:
    """The n most frequent labels (ties broken by label so the choice is deterministic)."""
    if n and n > len(counts):
        raise UserError(f"Asked for the {n} most frequent classes, but the data set has only "
                        f"{len(counts)}; choose {len(counts)} or fewer.")
    df = pd.DataFrame({"label": counts.index.astype(str), "count": counts.to_numpy()})
    df = df.sort_values(["count", "label"], ascending=[False, True], kind="stable")
    return df["label"].head(n if n else len(df)).tolist()


def _take(n: int, frac: float, minimum: int) -> int:
    k = int(round(n * frac))
    return min(max(k, minimum), n)


def split(samples: pd.DataFrame, holdout: float, val: float, seed: int) -> pd.DataFrame:
    """Add a `split` column (train/val/holdout), stratified per label."""
    rng = np.random.default_rng(seed)
    out = []
    for label, g in samples.groupby("label", sort=True):
        idx = g.index.to_numpy().copy()
        rng.shuffle(idx)
        n = len(idx)
        n_hold = _take(n, holdout, 1 if (n >= 3 and holdout > 0) else 0)
        n_val = _take(n - n_hold, val, 1 if n - n_hold >= 2 else 0)
        parts = ["holdout"] * n_hold + ["val"] * n_val + ["train"] * (n - n_hold - n_val)
        out.append(pd.Series(parts, index=idx))
    result = samples.copy()
    result["split"] = pd.concat(out).reindex(samples.index)
    return result


def make_manifest(samples: pd.DataFrame, classes: int, holdout: float, val: float, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """Select the top-N classes and split them; returns (manifest, ordered class labels)."""
    labels = top_classes(samples["label"].value_counts(), classes)
    chosen = samples[samples["label"].isin(set(labels))].sort_values("path", kind="stable").reset_index(drop=True)
    manifest = split(chosen, holdout, val, seed)
    manifest["target"] = manifest["label"].map({l: i for i, l in enumerate(labels)}).astype(int)
    return manifest, labels


def save_manifest(manifest: pd.DataFrame, path: Path) -> None:
    with atomic_output(path) as tmp:
        manifest[["path", "label", "target", "split"]].to_csv(tmp, index=False)


def load_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"path": str, "label": str, "split": str})
