"""Seconds and megabytes of a report of 6 runs with their class model images already made (issue 24:
goal ≤ 30 s on the CPU and ≤ 20 MB).

Makes its own runs in a temporary LANDMARKS_HOME: the synthetic demo (10 classes), one run trained
briefly, its class model images of the report's classes drawn once, then the run's folder copied to
6 runs (the report reads each run's files and explains with each run's model, so 6 copies cost what 6
trainings would; the index is rebuilt from the folders). Then `report` over the 6, timed.

    python bench/report.py [--model small_cnn] [--image-size 96] [--runs 6] [--steps 20] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="gradient-ascent steps of each class model image (its "
                    "making is set-up, not measured: the report only reads the files)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    home = Path(tempfile.mkdtemp(prefix="bench-report-"))
    os.environ["LANDMARKS_HOME"] = str(home)
    try:
        ids, made_s = _runs(home, a)
        from core.report import build_report
        from core.runs.reproduce import POSTER
        from core.runs.store import RunStore
        store = RunStore()
        t0 = time.perf_counter()
        out = build_report([store.require(i) for i in ids], home / "report.html", poster=POSTER)
        seconds = time.perf_counter() - t0
        html = (home / "report.html").read_text()
        result = {"runs": len(ids), "model": a.model, "image_size": a.image_size, "seconds": round(seconds, 2),
                  "mb": round(out["bytes"] / 1e6, 2), "images_inlined": html.count("data:image/png;base64,"),
                  "missing_class_models": html.count("class='missing'"), "setup_s": round(made_s, 1)}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return result


def _runs(home: Path, a) -> tuple[list[str], float]:
    """One trained run with its class model images, copied to `a.runs` runs; (their ids, seconds)."""
    import core.runs.tasks  # noqa: F401 - the job kinds register themselves
    from core.data.demo import generate
    from core.explain.files import class_model_png
    from core.report import MAX_CLASSES
    from core.runs.jobs import run_job
    from core.runs.store import RunStore
    from core.serve.predictor import load_predictor
    from core.train.config import TrainConfig
    t0 = time.perf_counter()
    data = home / "datasets" / "demo"
    generate(data, classes=10, images=600, size=max(a.image_size, 64), seed=0)
    store = RunStore()
    cfg = TrainConfig(data=str(data), model=a.model, weights="none", classes=10, epochs=1, batch_size=32,
                      image_size=a.image_size, seed=0)
    first = store.create(cfg, status="running")
    assert run_job(store, first)["status"] == "done"
    run = store.require(first)
    pred = load_predictor(run)
    for t in range(MAX_CLASSES):
        class_model_png(pred, t, run.class_models_dir, steps=a.steps)
    ids = [first]
    for k in range(1, a.runs):
        rid = f"{first}-copy{k}"
        shutil.copytree(run.dir, store.root / rid)
        rec = json.loads((store.root / rid / "run.json").read_text())
        (store.root / rid / "run.json").write_text(json.dumps({**rec, "run_id": rid}))
        ids.append(rid)
    RunStore.rebuild()
    return ids, time.perf_counter() - t0


if __name__ == "__main__":
    main()
