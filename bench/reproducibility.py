"""Reproducibility (issue 24): the same configuration trained twice, and one recipe over three seeds.

    python bench/reproducibility.py                       # small settings, a few minutes on 2 CPU cores
    python bench/reproducibility.py --model efficientnet_lite0 --weights imagenet --image-size 64 \
        --epochs 2 --data DIR                             # the app's default model on your data
    python bench/reproducibility.py --json out.json

1. `python -m core train` twice with one seed, each in a process of its own, without and then with
   --deterministic: the largest difference between the two runs' figures (every step's loss, every
   epoch's loss and accuracy, the final train/val/holdout metrics). Goal with --deterministic: 0.
2. `python -m core train --seeds 0,1,2` (the CLI's seed group: one split, three initialisations and
   batch orders): each seed's holdout accuracy and the group's mean ± sample sd.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUMMARY = ("train_acc", "val_acc", "holdout_acc", "holdout_top5", "holdout_gap")


def train(runs: Path, argv: list) -> dict:
    """One `python -m core train ... --json` in a process of its own; its JSON line."""
    env = {**os.environ, "LANDMARKS_HOME": str(runs.parent)}
    out = subprocess.run([sys.executable, "-m", "core", "train", *argv, "--runs", str(runs), "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"train failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def figures(store, run_id: str) -> dict:
    """Every number a run's reader sees: step losses, epoch rows, the final metrics."""
    steps = store.steps(run_id)["loss"].tolist()
    epochs = store.epochs(run_id)[["train_loss", "train_acc", "val_loss", "val_acc"]].to_numpy().ravel().tolist()
    s = store.get(run_id)["summary"]
    return {"steps": steps, "epochs": epochs, "summary": [s.get(k) for k in SUMMARY]}


def largest_difference(a: dict, b: dict) -> float:
    return max(abs(x - y) for k in a for x, y in zip(a[k], b[k]) if x is not None and y is not None)


def twice(runs: Path, base: list, deterministic: bool) -> dict:
    from core.runs.store import RunStore
    flag = ["--deterministic"] if deterministic else []
    t = time.time()
    ids = [train(runs, base + ["--seed", "0"] + flag)["run_id"] for _ in range(2)]
    store = RunStore(runs)
    a, b = (figures(store, r) for r in ids)
    return {"deterministic": deterministic, "largest_difference": largest_difference(a, b),
            "steps_compared": len(a["steps"]), "seconds_for_two": round(time.time() - t, 1)}


def seeds(runs: Path, base: list, seed_list: str) -> dict:
    from core.runs.store import RunStore
    t = time.time()
    out = train(runs, base + ["--seeds", seed_list])
    store = RunStore(runs)
    per_seed = {store.run(r).config().seed: store.get(r)["summary"]["holdout_acc"] for r in out["runs"]}
    return {"seeds": per_seed, "n": out["n"], "mean": out["mean"], "sd": out["sd"],
            "seconds": round(time.time() - t, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a data set (default: the demo generator's 6 classes, 360 images of 48 px)")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--weights", default="none")
    p.add_argument("--image-size", default="32")
    p.add_argument("--epochs", default="2")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--json")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="repro-"))
    data = a.data
    if not data:
        from core.data.demo import generate
        data = str(tmp / "demo")
        generate(data, classes=6, images=360, size=48, seed=0)
    base = ["--data", data, "--model", a.model, "--weights", a.weights, "--image-size", a.image_size,
            "--epochs", a.epochs, "--holdout", "0.1"]
    print(f"settings: {' '.join(base)}", file=sys.stderr)
    results = {"settings": base, "twice": [twice(tmp / "runs", base, d) for d in (False, True)],
               "group": seeds(tmp / "runs", base, a.seeds)}
    for r in results["twice"]:
        print(f"same seed twice, deterministic={r['deterministic']}: largest difference "
              f"{r['largest_difference']:.3g} over {r['steps_compared']} step losses, the epoch rows and "
              f"the final metrics ({r['seconds_for_two']} s for both)")
    g = results["group"]
    print("seeds: " + ", ".join(f"{s}: {v:.3f}" for s, v in g["seeds"].items()) +
          f"; holdout accuracy {g['mean']['holdout_acc']:.3f} ± {g['sd']['holdout_acc']:.3f} (n = {g['n']}); "
          f"val {g['mean']['val_acc']:.3f} ± {g['sd']['val_acc']:.3f} ({g['seconds']} s)")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
