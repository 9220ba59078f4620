"""What a download leaves besides the images: OUT/train.csv (id,url,landmark_id of the chosen images
actually on disk, rewritten atomically at the end of every run, stopped or not), the chosen
classes' rows of `train_label_to_category.csv` (when that file lies beside the CSV) and the
report's parts (totals, per class what could not be had and why, a few examples of each failure)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.data.download.base import LABELS, SHORTFALL, STATUSES
from core.data.download.images import target
from core.data.download.shards import Run, Shard
from core.files import atomic_output


def write_index(out: Path, work: pd.DataFrame) -> pd.Series:
    """OUT/train.csv of the chosen images on disk (all shards: machines may share OUT). Returns the mask."""
    on_disk = pd.Series([target(out, i).exists() for i in work["id"]], index=work.index, dtype=bool)
    if on_disk.any():
        with atomic_output(out / "train.csv") as tmp:     # .train.csv.<pid>.tmp: images._FILE_TMP
            work.loc[on_disk, ["id", "url", "landmark_id"]].to_csv(tmp, index=False)
    return on_disk


def copy_names(csv: Path, out: Path, labels: set) -> bool:
    f = csv.parent / "train_label_to_category.csv"
    if not f.is_file() or f.resolve() == (out / f.name).resolve():
        return False
    try:
        df = pd.read_csv(f, dtype=str, keep_default_na=False, engine="pyarrow")
    except Exception:  # noqa: BLE001 - names are optional: a broken file costs only the readable names
        return False
    if "landmark_id" in df.columns:
        df = df[df["landmark_id"].isin(labels)]
    with atomic_output(out / f.name) as tmp:
        df.to_csv(tmp, index=False)
    return True


def per_class(run: Run, work: pd.DataFrame, rows: list[int] | None, shards: list[Shard], on_disk: pd.Series,
              classes: dict, default: str = "") -> list[dict]:
    """Per chosen class (of this machine's share): listed, on disk, and each reason for a shortfall."""
    status: dict[str, str] = {}
    for s in shards:
        status.update(s.status)
    mine = work.iloc[rows] if rows is not None else work
    df = pd.DataFrame({"label": mine["landmark_id"].to_numpy(), "on_disk": on_disk.loc[mine.index].to_numpy(),
                       "status": [status.get(i, default) for i in mine["id"]]})
    out = []
    for label, g in df.groupby("label", sort=False):
        row = {"landmark_id": str(label), "listed": int(len(g)), "on_disk": int(g["on_disk"].sum())}
        row["short"] = row["listed"] - row["on_disk"]
        lost = g.loc[~g["on_disk"], "status"].value_counts()
        row.update({k: int(lost.get(k, 0)) for k in SHORTFALL})
        row["not_tried"] = int(row["short"] - sum(row[k] for k in SHORTFALL))
        out.append(row)
    rank = {label: r for r, label in enumerate(classes)}
    out.sort(key=lambda r: rank.get(r["landmark_id"], len(rank)))
    return out


def examples(run: Run, shards: list[Shard], per: int = 5) -> dict:
    """A few failures of each kind: {outcome: [{id, url, why}]}."""
    url = dict(zip(run.ids, run.urls))
    out: dict[str, list] = {}
    for s in shards:
        for image_id, st in s.status.items():
            if st in SHORTFALL and len(out.setdefault(st, [])) < per:
                out[st].append({"id": image_id, "url": url.get(image_id, ""), "why": s.why.get(image_id, "")})
    return out


def describe(counts: dict) -> str:
    """'12 fetched · 3 already there · 1 dead links' (only the non-zero outcomes)."""
    parts = [f"{int(counts.get(s) or 0):,} {LABELS[s]}" for s in STATUSES if counts.get(s)]
    return " · ".join(parts) or "nothing yet"
