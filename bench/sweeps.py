"""Benchmark: what a sweep adds to the training it runs (issue: trial overhead <= 5 s on the CPU).

    python bench/sweeps.py [--trials 4] [--epochs 2] [--json out.json]

A grid sweep of small_cnn runs on a generated demo set (4 classes, 240 images, 32 px) is driven
exactly as `python -m core sweep` drives it. For each trial, from the run store:
  start overhead  = its worker's first training step - the moment it could start (queued, or the
                    previous trial's end: the driver keeps one trial waiting in the queue per device)
                    (process start, imports, data index, model build: what a trial costs before it trains)
  hand-over       = the next trial's first step - this trial's end
                    (the driver noticing the end, telling Optuna, queueing the next, plus its start overhead)
  training        = last step - first step (the work itself)
Side by side: the same training as one plain `python -m core train` in this process's child,
timed from process start to its first step (the floor any run pays, sweep or not).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweeps-"))
    os.environ["LANDMARKS_HOME"] = str(tmp / "home")
    from core.data.demo import generate
    from core.runs import sweeps
    from core.runs.store import RunStore
    from core.train.config import TrainConfig
    generate(tmp / "demo", classes=4, images=240, size=48, seed=0)
    base = TrainConfig(data=str(tmp / "demo"), model="small_cnn", weights="none", classes=4, epochs=a.epochs,
                       batch_size=32, image_size=32, holdout=0.05)
    sweeps.create("bench", base, {"seed": list(range(a.trials))})
    store = RunStore()
    t0 = time.time()
    info = sweeps.drive("bench", store)
    wall = time.time() - t0
    rows = []
    for c in sorted(info["configs"], key=lambda c: c["number"]):
        run = store.get(c["run_id"])
        steps = store.steps(c["run_id"])
        rows.append({"queued": run["queued_at"], "first": float(steps["t"].min()), "last": float(steps["t"].max()),
                     "end": run["finished"]})
    # a trial waits in the queue while the one before it trains: its overhead starts when the slot frees
    start = [r["first"] - max(r["queued"], prev["end"] if prev else 0) for prev, r in zip([None] + rows, rows)]
    hand = [b["first"] - a_["end"] for a_, b in zip(rows, rows[1:])]
    train = [r["last"] - r["first"] for r in rows]
    # the plain floor: one CLI run, process start -> first step
    env = dict(os.environ, PYTHONPATH=str(ROOT), LANDMARKS_HOME=str(tmp / "plain"))
    t1 = time.time()
    subprocess.run([sys.executable, "-m", "core", "train", "--data", str(tmp / "demo"), "--model", "small_cnn",
                    "--weights", "none", "--classes", "4", "--epochs", "1", "--batch-size", "32", "--image-size", "32",
                    "--holdout", "0.05", "--json"], env=env, cwd=str(ROOT), check=True, capture_output=True)
    os.environ["LANDMARKS_HOME"] = str(tmp / "plain")
    plain = RunStore()
    pr = plain.list()[0]
    plain_start = float(plain.steps(pr["run_id"])["t"].min()) - t1
    out = {"trials": len(rows), "wall_s": wall, "start_overhead_s": statistics.median(start),
           "hand_over_s": statistics.median(hand) if hand else None, "training_s": statistics.median(train),
           "plain_cli_start_s": plain_start, "per_trial": {"start": start, "hand_over": hand, "training": train}}
    print(f"{len(rows)} trials in {wall:.1f} s; per trial (median): start overhead {out['start_overhead_s']:.2f} s, "
          f"hand-over {out['hand_over_s'] or 0:.2f} s, training {out['training_s']:.2f} s; a plain CLI run "
          f"takes {plain_start:.2f} s from process start to its first step")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
