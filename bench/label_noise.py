"""Label noise and near-duplicates found by `python -m core inspect` (issue 22).

    python bench/label_noise.py DATA [--flip 0.05] [--dups 0.02] [--epochs 2] [--size 64]
                                     [--model efficientnet_lite0] [--folds 5] [--keep]
    python bench/label_noise.py --reuse TMP [--folds 5]   # a kept (or cut short) earlier try: inspect only

DATA is a class-per-folder photo set (e.g. ../shared/datasets/monuments44); it is copied to a temp
folder (DATA itself is never changed), where
  * a share `--flip` of the photos is moved to another class's folder (a flipped label),
  * a share `--dups` of the other photos gets a near-copy beside it: re-encoded as JPEG q=80 and
    resized by a factor drawn from 0.95..1.05 (the same class: a copy that may land in another split).
Then a short run is trained with the CLI (small settings) and inspected with the CLI, and it prints
  * recall: the share of flipped photos among the top 2 x (number flipped) label issues (goal >= 0.8),
  * the share of planted pairs among the duplicates found (goal >= 0.95), and how many other pairs,
  * inspect time / training time (goal <= 3),
  * the cosine similarity of the planted pairs (min, 1st percentile) against each other photo's
    nearest neighbour (99th, 99.9th percentile, max) on the tiny-image descriptor inspect finds
    duplicates with: what core.serve.inspect.THRESHOLD rests on (--head: also on the ImageNet head
    features, which do not separate them at 64 px).
The last line is one JSON object with these figures.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def plant(data: Path, out: Path, flip: float, dups: float, seed: int = 0) -> tuple[set, list]:
    """Copy `data` to `out` with flipped labels and near-copies; returns (flipped paths, planted pairs),
    relative to `out`."""
    shutil.copytree(data, out)
    rng = np.random.default_rng(seed)
    photos = sorted(p for p in out.rglob("*") if p.suffix.lower() in EXTS)
    classes = sorted({p.parent.name for p in photos})
    order = rng.permutation(len(photos))
    n_flip, n_dup = round(flip * len(photos)), round(dups * len(photos))
    flipped = set()
    for i in order[:n_flip]:
        p = photos[i]
        to = rng.choice([c for c in classes if c != p.parent.name])
        q = out / to / f"flip_{p.parent.name}_{p.name}"
        p.rename(q)
        flipped.add(q.relative_to(out).as_posix())
    pairs = []
    for i in order[n_flip:n_flip + n_dup]:
        p = photos[i]
        im = Image.open(p).convert("RGB")
        f = rng.uniform(0.95, 1.05)
        q = p.with_name(f"dup_{p.stem}.jpg")
        im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BILINEAR).save(q, quality=80)
        pairs.append((p.relative_to(out).as_posix(), q.relative_to(out).as_posix()))
    return flipped, pairs


def planted_in(data: Path) -> tuple[set, list]:
    """(flipped, planted pairs) of a folder `plant` made, read back from its file names."""
    photos = sorted(p for p in data.rglob("*") if p.suffix.lower() in EXTS)
    flipped = {p.relative_to(data).as_posix() for p in photos if p.name.startswith("flip_")}
    pairs = []
    for q in (p for p in photos if p.name.startswith("dup_")):
        orig = [p for p in q.parent.glob(q.stem.removeprefix("dup_") + ".*") if p.suffix.lower() in EXTS]
        pairs += [(orig[0].relative_to(data).as_posix(), q.relative_to(data).as_posix())] if orig else []
    return flipped, pairs


def cli(*args) -> tuple[dict, float]:
    t = time.time()
    out = subprocess.run([sys.executable, "-m", "core", *map(str, args), "--json"], cwd=REPO, text=True,
                         stdout=subprocess.PIPE)
    if out.returncode:
        sys.exit(f"python -m core {args[0]} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1]), time.time() - t


def similarities(run, planted: list, head: bool = False) -> dict:
    """Planted pairs' cosine against every other photo's nearest neighbour, on the tiny-image
    descriptor inspect finds duplicates with (`head`: on the ImageNet head features instead)."""
    from core.serve import inspect as insp
    m, _, _ = insp.split_frame(run)
    if head:
        feats, ok, _ = insp.embed_split(run, m)
    else:
        ok = np.array([Path(p).exists() for p in m["path"]])
        feats = insp.tiny_descriptors(m["path"], ok)
    root = Path(run.config().data).resolve()
    rel = [insp.relative(p, root) for p in m["path"][ok]]
    at = {p: i for i, p in enumerate(rel)}
    s = feats @ feats.T
    np.fill_diagonal(s, -1)
    pl = np.array([s[at[a], at[b]] for a, b in planted if a in at and b in at])
    in_pair = {at[x] for pair in planted for x in pair if x in at}
    others = np.array([s[i].max() for i in range(len(rel)) if i not in in_pair])
    q = lambda a, p: round(float(np.percentile(a, p)), 4) if len(a) else None  # noqa: E731
    return {"planted_min": q(pl, 0), "planted_p1": q(pl, 1), "nearest_other_p99": q(others, 99),
            "nearest_other_p999": q(others, 99.9), "nearest_other_max": q(others, 100)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?")
    ap.add_argument("--reuse", default=None, help="the temp folder of an earlier try: its data and trained run")
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--dups", type=float, default=0.02)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    ap.add_argument("--head", action="store_true", help="similarities on the ImageNet head features too")
    a = ap.parse_args()
    tmp = Path(a.reuse) if a.reuse else Path(tempfile.mkdtemp(prefix="label_noise-"))
    try:
        data, runs = tmp / "data", tmp / "runs"
        if a.reuse:                      # its run: the one trained there; training time from its record
            from core.runs.store import RunStore
            flipped, planted = planted_in(data)
            row = RunStore(runs).list()[0]
            rec = RunStore(runs).require(row["run_id"]).read_record()
            trained = {"run_id": row["run_id"], "holdout_acc": (row.get("summary") or {}).get("holdout_acc")}
            t_train = (float(rec["finished"]) - float(rec["started"]) if rec.get("finished") and rec.get("started")
                       else float((row.get("summary") or {})["seconds"]))
        else:
            flipped, planted = plant(Path(a.data).expanduser().resolve(), data, a.flip, a.dups)
            trained, t_train = cli("train", "--data", data, "--model", a.model, "--classes", 0, "--epochs",
                                   a.epochs, "--image-size", a.size, "--runs", runs)
        run_id = trained["run_id"]
        _, t_inspect = cli("inspect", run_id, "--folds", a.folds, "--runs", runs)
        from core.runs.store import RunStore
        run = RunStore(runs).require(run_id)
        full = run.read_inspect()
        top = {r["image"] for r in full["label_issues"][:2 * len(flipped)]}
        found = {tuple(sorted((d["a"], d["b"]))) for d in full["duplicates"]}
        want = {tuple(sorted(p)) for p in planted}
        out = {"data": a.data, "images": full["images"], "flipped": len(flipped), "planted_pairs": len(planted),
               "recall_top_2x": round(len(flipped & top) / max(1, len(flipped)), 4),
               "flagged_by_cleanlab": sum(r["flagged"] for r in full["label_issues"]),
               "planted_pairs_found": round(len(want & found) / max(1, len(want)), 4),
               "other_pairs": len(found - want), "threshold": full["threshold"], "features": full["features"],
               "train_s": round(t_train, 1), "inspect_s": round(t_inspect, 1),
               "inspect_over_train": round(t_inspect / t_train, 3), "holdout_acc": trained.get("holdout_acc"),
               "leaks": full["leaks"], **similarities(run, planted)}
        if a.head:
            out["head_features"] = similarities(run, planted, head=True)
        for k, v in out.items():
            print(f"{k:>22}: {v}", file=sys.stderr)
        print(json.dumps(out))
    finally:
        if a.keep or a.reuse:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
