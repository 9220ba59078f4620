"""Learning checks that train for many seconds to compare how well things learn. They were tests;
they are benchmarks now (issue 18: the suite checks behaviour, fast): each trains, prints the
numbers it measured and the bar the old test asserted, and says PASS or FAIL.

    python bench/learning.py                   # every check, a few minutes on 2 CPU cores
    python bench/learning.py finetune nproc    # some of them
    python bench/learning.py --json out.json

Checks:
  finetune  the finetune recipe learns faster than the poster's from pretrained weights: a small
            CNN pretrained 12 epochs on the 4 demo classes, fine-tuned 1 epoch on 3 of them with
            a new head, seeds 0 and 1; finetune's mean (train, val) accuracy > poster's + 0.08
            (measured 0.84 vs 0.66). Was tests/test_recipes.py.
  nproc     a run on 2 processes (torchrun, gloo on the CPU, 2 x 16 images a step) learns as well
            as the same run on 1 process (32 a step): 10 epochs each at 16 px, both holdout
            accuracies > 0.5 and within 0.25 of each other. Was tests/test_distributed.py.
  epochs    8 epochs on the demo raise train accuracy, and val and train accuracy end > 0.6 (the
            majority class is 0.42). Was tests/test_engine.py (the suite keeps a 3-epoch check).
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


def tiny(data, **kw):
    """The test suite's tiny configuration (tests/conftest.py tiny_config)."""
    from core.train.config import TrainConfig
    base = dict(data=str(data), model="small_cnn", weights="none", classes=4, epochs=3, batch_size=32,
                lr=1e-3, image_size=32, holdout=0.05, val=0.2, seed=0)
    return TrainConfig(**{**base, **kw})


def demo(tmp: Path) -> Path:
    """The suite's demo data set: 4 classes, 240 images of 48 px."""
    from core.data.demo import generate
    out = tmp / "demo"
    if not out.exists():
        generate(out, classes=4, images=240, size=48, seed=0)
    return out


def folder(tmp: Path, name: str):
    from core.runs.store import RunFolder
    (tmp / name).mkdir()
    return RunFolder(tmp / name)


def check_finetune(tmp: Path) -> dict:
    from core.train.engine import fit
    data = demo(tmp)
    pre = folder(tmp, "pre")
    fit(tiny(data, epochs=12), pre)
    acc: dict[str, list[float]] = {}
    for recipe in ("finetune", "poster"):
        for seed in (0, 1):
            out = fit(tiny(data, classes=3, epochs=1, batch_size=8, weights=str(pre.checkpoint), recipe=recipe,
                           seed=seed), folder(tmp, f"{recipe}{seed}"))
            acc.setdefault(recipe, []).extend([out["train_acc"], out["val_acc"]])
    finetune, poster = (sum(acc[r]) / len(acc[r]) for r in ("finetune", "poster"))
    return {"finetune": round(finetune, 3), "poster": round(poster, 3), "bar": "finetune > poster + 0.08",
            "pass": finetune > poster + 0.08}


def check_nproc(tmp: Path) -> dict:
    import torch
    from core.runs.jobs import run_job
    from core.runs.store import RunStore
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        return {"skipped": "torch.distributed with gloo is not available", "pass": False}
    data = demo(tmp)
    run = dict(model="small_cnn", weights="none", classes=4, epochs=10, image_size=16, holdout=0.3, val=0.2,
               recipe="poster", lr=3e-3, device="cpu", seed=0)
    home = tmp / "nproc_home"
    env = dict(os.environ, LANDMARKS_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    flags = [x for k, v in run.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "core", "train", "--data", str(data), *flags, "--batch-size", "16", "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        return {"error": p.stderr[-2000:], "pass": False}
    two = json.loads(p.stdout.strip().splitlines()[-1])
    os.environ["LANDMARKS_HOME"] = str(tmp / "one_home")
    store = RunStore()
    one = run_job(store, store.create(tiny(data, **{**run, "batch_size": 32}), status="running"))
    a, b = two["holdout_acc"], one["holdout_acc"]
    return {"two_processes": a, "one_process": b, "bar": "both > 0.5 and within 0.25",
            "pass": a > 0.5 and b > 0.5 and abs(a - b) <= 0.25}


def check_epochs(tmp: Path) -> dict:
    from core.runs.jobs import run_job
    from core.runs.store import RunStore
    os.environ["LANDMARKS_HOME"] = str(tmp / "epochs_home")
    store = RunStore()
    run_id = store.create(tiny(demo(tmp), epochs=8), status="running")
    out = run_job(store, run_id)
    ep = store.epochs(run_id)
    rose = bool(ep["train_acc"].iloc[-1] > ep["train_acc"].iloc[0])
    return {"train_acc": out["train_acc"], "val_acc": out["val_acc"], "bar": "rose, and both > 0.6",
            "pass": rose and out["val_acc"] > 0.6 and out["train_acc"] > 0.6}


CHECKS = {"finetune": check_finetune, "nproc": check_nproc, "epochs": check_epochs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checks", nargs="*", help=f"some of {', '.join(CHECKS)} (default: all)")
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()
    unknown = [c for c in a.checks if c not in CHECKS]
    if unknown:
        ap.error(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
    results = {}
    for name in a.checks or CHECKS:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            r = CHECKS[name](Path(d))
            r["seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = r
        print(f"{'PASS' if r['pass'] else 'FAIL'} {name}: {json.dumps(r)}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["pass"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
