"""Evaluate and Compare at many classes (issue 20): two finished runs with generated evaluations
(no training: 3 images per class, 70 % right, the rest spread over random classes) are written
straight to a fresh run store, then each page is rendered with Streamlit's AppTest, once cold and
then warm (the caches filled). Goal: every page ≤ 2 s warm at 10,000 classes.

    python bench/eval_pages.py                   # 10,000 classes
    python bench/eval_pages.py --classes 1000 15000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
APP = str(ROOT / "dashboard" / "app.py")
PAGES = {"Evaluate": "../pages/evaluate.py", "Compare": "../pages/compare.py"}
GOAL_S = 2.0


def make_runs(home: Path, classes: int) -> list[str]:
    from core.runs.store import RunStore
    from core.train import metrics
    from core.train.config import TrainConfig
    store = RunStore()
    ids = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        cfg = TrainConfig(data=str(home / "data"), model="small_cnn", weights="none", classes=classes, epochs=1,
                          image_size=32)
        run_id = store.create(cfg, status="done")
        run = store.run(run_id)
        for split in ("train", "val", "holdout"):
            y = np.repeat(np.arange(classes), 3)
            pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, classes, len(y)))
            top = np.stack([(pred + i) % classes for i in range(5)], axis=1)
            out = metrics.Outputs(y, pred, rng.random(len(y)), top, np.where(y == pred, 0.8, 0.01))
            m, conf = metrics.evaluation(out, classes)
            run.write_confusion(split, conf)
            m.update(labels=[str(1000 + i) for i in range(classes)], names=[f"Landmark {i}" for i in range(classes)])
            store.log_eval(run_id, split, m)
        store.set(run_id, summary={"holdout_acc": m["acc"], "val_acc": m["acc"], "train_acc": m["acc"]},
                  finished=time.time())
        ids.append(run_id)
    return ids


def render(page: str) -> tuple[float, float, bool, str]:
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page(page)
    t0 = time.perf_counter()
    at.run()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    at.run()
    warm = time.perf_counter() - t0
    shown = f"{len(at.get('plotly_chart'))} charts, {len(at.dataframe)} tables"
    return cold, warm, bool(at.exception) or bool(at.error), shown


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="+", default=[10_000])
    a = p.parse_args()
    ok = True
    for classes in a.classes:
        with tempfile.TemporaryDirectory() as d:
            os.environ["LANDMARKS_HOME"] = str(Path(d) / "home")
            t0 = time.perf_counter()
            make_runs(Path(d), classes)
            folder = next((Path(d) / "home" / "runs").glob("*-small_cnn-*"))
            sizes = {f.name: f.stat().st_size for f in sorted(folder.iterdir()) if f.is_file()}
            print(f"{classes} classes: two runs written in {time.perf_counter() - t0:.1f} s; run files: "
                  + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
            for name, page in PAGES.items():
                cold, warm, failed, shown = render(page)
                good = warm <= GOAL_S and not failed
                ok &= good
                print(f"  {name:<9} cold {cold:5.2f} s  warm {warm:5.2f} s  goal ≤ {GOAL_S} s warm  "
                      f"{'PASS' if good else 'FAIL'}{' (the page raised or showed an error)' if failed else ''}  "
                      f"({shown})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
