"""Google Landmarks' real size (issue 20): class-per-folder sets of 1,000, 15,000 and 81,313 classes
(GLDv2-clean's count), 3-4 generated 32 px images each, trained one epoch (small_cnn, CPU), evaluated,
their run files weighed and every page rendered with that run and data set selected.

    python bench/scale.py                        # 1,000, 15,000 and 81,313 classes
    python bench/scale.py --classes 1000,15000
    python bench/scale.py --quick                # 1,000 classes only
    python bench/scale.py --steps 50 --threads 1 # 81,313 capped at 50 steps (see capped_run); one torch thread

For each set it reports: the `train` command (one epoch, wall time, images/s of the epoch, peak RSS of
the process), the evaluation of the trained run over its three splits in a process of its own (images/s,
peak RSS), `eval --json` (time, output size), every file of the run folder (goal: ≤ 50 MB without the
checkpoint) and each page's render time with Streamlit's AppTest, cold then warm (goal: ≤ 2 s warm at
10,000 classes, ≤ 5 s at 81,313; AppTest runs the page's script without a browser, so a browser adds its
drawing time on top). Peak memory is the child process's ru_maxrss (os.wait4); goal: train and evaluate
within 8 GB at 81,313 classes.

The generated sets are cached under workspace/bench/scale/ (a rerun only trains and measures); each
measurement uses a fresh LANDMARKS_HOME beside them, so its runs and caches start empty.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "workspace" / "bench" / "scale"
APP = str(ROOT / "dashboard" / "app.py")
SIZES = (1_000, 15_000, 81_313)
IMAGE_PX = 32
PAGES = ("dataset", "train", "runs", "sweeps", "evaluate", "classify", "class_model", "compare")
RUN_FOLDER_GOAL_MB, RAM_GOAL_GB = 50, 8


# ------------------------------------------------------------------ data

def _pattern(classes: int) -> np.ndarray:
    """(classes, 32, 32, 3) uint8 is too big at 81,313: one 4x5 grid of bits per class instead,
    coloured by the class's bits (17 bits name 131,072 classes), drawn per image below."""
    bits = (np.arange(classes)[:, None] >> np.arange(20)) & 1
    return bits.reshape(classes, 4, 5).astype(np.uint8)


def generate(classes: int, seed: int = 0) -> Path:
    """A class-per-folder set of `classes` folders c00000.., 3 or 4 JPEGs each: noise plus the class's
    bit pattern as bright and dark cells. Kept under CACHE; a complete set is not written again."""
    from PIL import Image
    out = CACHE / f"data-{classes}"
    done = out / ".complete"
    if done.exists():
        return out
    t0 = time.perf_counter()
    grid = _pattern(classes)
    for c in range(classes):
        d = out / f"c{c:05d}"
        n = 3 + c % 2
        if (d / f"{n - 1}.jpg").exists():       # written by an interrupted run (the last file is written last)
            continue
        d.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, c])
        cells = np.kron(grid[c], np.ones((8, 6), np.uint8))[:, :30]          # 32 x 30 cells of 8 x 6 px
        base = np.zeros((IMAGE_PX, IMAGE_PX, 3), np.uint8)
        base[:, :30] = (cells[..., None] * np.array([200, 160, 90], np.uint8))
        noise = rng.integers(0, 56, (n, IMAGE_PX, IMAGE_PX, 3), dtype=np.uint8)
        for k in range(n):
            Image.fromarray(base + noise[k]).save(d / f"{k}.jpg", quality=90)
        if c % 10_000 == 9_999:
            print(f"  generated {c + 1:,}/{classes:,} classes", file=sys.stderr)
    done.write_text(json.dumps({"classes": classes, "images": sum(3 + c % 2 for c in range(classes))}))
    print(f"  generated {classes:,} classes in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


# ------------------------------------------------------------------ measured child processes

def child(cmd: list[str], env: dict, timeout: float = 4 * 3600) -> dict:
    """Run `cmd`, return {rc, seconds, peak_gb, stdout, stderr}: peak is the child's own ru_maxrss
    (os.wait4 reports the rusage of the one process waited for, children it waited for included)."""
    log = CACHE / f"child-{os.getpid()}.log"     # one per bench process: two may run at once
    t0 = time.perf_counter()
    with open(log, "w") as err, subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                                 text=True) as p:
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t0
    return {"rc": p.returncode, "seconds": secs, "peak_gb": usage.ru_maxrss / 2**20, "stdout": out,
            "stderr": log.read_text()[-3000:]}


def last_json(text: str) -> dict:
    lines = [l for l in text.strip().splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def evaluate_run(run_dir: str) -> dict:
    """(Child mode) the run's checkpoint evaluated on its three splits as fit's final evaluation
    does (engine.evaluate per split), without writing into the run."""
    import torch
    from core.runs.folder import RunFolder
    from core.train import engine
    from core.train.config import TrainConfig
    from core.train.models import build_model
    folder = RunFolder(run_dir)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in folder.read_config().items()
                         if k in TrainConfig.__dataclass_fields__})
    device = torch.device("cpu")
    t0 = time.perf_counter()
    data = engine.load_data(cfg, folder)
    model = build_model(cfg.model, len(data.labels), "none")
    engine.load_checkpoint(folder.checkpoint, model)
    loaded = time.perf_counter() - t0
    out = {"load_s": loaded, "splits": {}}
    for split in ("holdout",):    # the train command evaluated all three already (its peak RSS includes it)
        t0 = time.perf_counter()
        m, _, _ = engine.evaluate(model, engine._loader(cfg, data, split, False, device), cfg, device,
                                  len(data.labels))
        secs = time.perf_counter() - t0
        out["splits"][split] = {"images": m["n"], "seconds": secs, "images_per_s": m["n"] / secs, "acc": m["acc"]}
    return out


class _First:
    """The first `steps` batches of epoch 1 of a PreparedBatches loader (a capped epoch)."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, steps

    def __len__(self):
        return min(self.steps, len(self.loader))

    def __iter__(self):
        for i, batch in enumerate(self.loader.epoch(1)):
            if i == self.steps:
                return
            yield batch


def capped_run(data: str, classes: int, steps: int) -> dict:
    """(Child mode, --steps) where one epoch is too slow for the machine: a run made by the engine's
    own pieces (load_data: the split, classes.json and the decoded store; the model, its optimizer,
    `steps` real training steps, the checkpoint; `steps` batches of holdout evaluation), then
    finished with *generated* predictions for every split (70 % right) written as final_evaluation
    writes them, so the run files and the pages have the real shape. Times are measured, the
    predictions are not the model's."""
    import torch
    from core.runs.store import RunStore
    from core.train import engine, metrics, recipes
    from core.train.config import TrainConfig
    from core.train.models import build_model
    from core.train.sinks import NullSink
    cfg = TrainConfig(data=data, model="small_cnn", weights="none", classes=0, epochs=1, image_size=IMAGE_PX,
                      device="cpu").validate()
    store = RunStore()
    run_id = store.create(cfg, status="running")
    folder, device, out = store.run(run_id), torch.device("cpu"), {"run_id": run_id}
    t0 = time.perf_counter()
    d = engine.load_data(cfg, folder)
    out["load_data_s"] = time.perf_counter() - t0
    model = build_model(cfg.model, len(d.labels), "none").to(memory_format=torch.channels_last)
    recipe = recipes.recipe_for(cfg)
    recipes.prepare_model(model, recipe)
    train = engine._loader(cfg, d, "train", True, device, recipe.augment)
    optimizer, scheduler = engine.make_optimizer(cfg, model, len(train))
    t0 = time.perf_counter()
    row = engine.train_one_epoch(model, _First(train, steps), optimizer, cfg, device, 1, 0, NullSink(),
                                 recipe=recipe, scheduler=scheduler)
    out.update(train_steps=steps, train_images_per_s=row["images_per_s"], train_images=int(len(train.targets)),
               steps_per_epoch=len(train))
    folder.checkpoint.parent.mkdir(exist_ok=True)
    engine.save_checkpoint(folder.checkpoint, model, optimizer, scheduler, 1, cfg, d.labels, time.perf_counter() - t0)
    hold = engine._loader(cfg, d, "holdout", False, device)
    t0 = time.perf_counter()
    o = engine.predict_outputs(model, _First(hold, steps), cfg, device)
    out.update(eval_images=len(o), eval_images_per_s=len(o) / (time.perf_counter() - t0),
               holdout_images=int(len(hold.targets)))
    rng, n = np.random.default_rng(0), len(d.labels)
    summary = {}
    for split in ("train", "val", "holdout"):
        sel = (d.manifest["split"] == split).to_numpy()
        y = d.manifest["target"].to_numpy()[sel].astype(np.int64)
        pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, n, len(y)))
        top = np.stack([pred] + [(pred + i) % n for i in range(1, 5)], axis=1)
        gen = metrics.Outputs(y, pred, rng.random(len(y)), top, np.where(y == pred, 0.8, 0.01))
        m, confusion = metrics.evaluation(gen, n)
        folder.write_confusion(split, confusion)
        if split != "train":
            engine.save_predictions(folder.predictions_file(split), d.manifest, split, gen)
        m["labels"], m["names"] = list(d.labels), list(d.names)
        store.log_eval(run_id, split, m)
        summary.update({f"{split}_{k}": m.get(k) for k in ("acc", "top5", "gap", "balanced_acc", "macro_f1")})
    store.log_epoch(run_id, {"epoch": 1, **row, "val_loss": None, "val_acc": summary["val_acc"], "lr": cfg.lr})
    store.set(run_id, status="done", summary={**summary, "epochs_completed": 1}, finished=time.time())
    return out


def render_pages(pages: list[str], warm_only: bool = False) -> dict:
    """(Child mode) each page through the whole app with AppTest: a cold run, then a warm one."""
    from streamlit.testing.v1 import AppTest
    out = {}
    for page in pages:
        at = AppTest.from_file(APP, default_timeout=600)
        at.switch_page(f"../pages/{page}.py")
        t0 = time.perf_counter()
        at.run()
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        at.run()
        warm = time.perf_counter() - t0
        problems = [str(e.value)[:200] for e in at.exception] + [str(e.value)[:200] for e in at.error]
        out[page] = {"cold_s": cold, "warm_s": warm, "problems": problems}
    return out


# ------------------------------------------------------------------ one class count

def train_and_evaluate(res: dict, data: Path, home: Path, env: dict) -> str:
    """The `train` command for one epoch, then the holdout evaluated again in a process of its own."""
    py = sys.executable
    train = child([py, "-m", "core", "train", "--data", str(data), "--model", "small_cnn", "--weights", "none",
                   "--classes", "0", "--epochs", "1", "--image-size", str(IMAGE_PX), "--device", "cpu", "--json"], env)
    if train["rc"] != 0:
        raise SystemExit(f"train failed at {res['classes']} classes:\n{train['stderr']}")
    summary = last_json(train["stdout"])
    res["train"] = {"seconds": train["seconds"], "peak_gb": train["peak_gb"],
                    "epoch_images_per_s": summary.get("images_per_s"), "run_id": summary["run_id"]}
    ev = child([py, __file__, "--_evaluate", str(home / "runs" / summary["run_id"])], env)
    if ev["rc"] != 0:
        raise SystemExit(f"evaluation failed at {res['classes']} classes:\n{ev['stderr']}")
    res["evaluate"] = {**last_json(ev["stdout"]), "seconds": ev["seconds"], "peak_gb": ev["peak_gb"]}
    return summary["run_id"]


def measure(classes: int, threads: int = 0, steps: int = 0) -> dict:
    data = generate(classes)
    home = CACHE / f"home-{classes}"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "LANDMARKS_HOME": str(home), "CUDA_VISIBLE_DEVICES": ""}
    if threads:       # on a shared machine one thread per process is steadier than two fighting for cores
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    py = sys.executable
    res = {"classes": classes, "images": json.loads((data / ".complete").read_text())["images"],
           "threads": threads or os.cpu_count(), "load_before": os.getloadavg()[0]}

    if steps:
        run = child([py, __file__, "--_capped", f"{data},{classes},{steps}"], env)
        if run["rc"] != 0:
            raise SystemExit(f"the capped run failed at {classes} classes:\n{run['stderr']}")
        res["capped"] = {**last_json(run["stdout"]), "seconds": run["seconds"], "peak_gb": run["peak_gb"]}
        run_id = res["capped"]["run_id"]
    else:
        run_id = train_and_evaluate(res, data, home, env)
    run_dir = home / "runs" / run_id
    cli = child([py, "-m", "core", "eval", run_id, "--json"], env)
    res["eval_cli"] = {"seconds": cli["seconds"], "peak_gb": cli["peak_gb"], "json_mb": len(cli["stdout"]) / 1e6,
                       "rc": cli["rc"]}

    files = {str(f.relative_to(run_dir)): f.stat().st_size for f in sorted(run_dir.rglob("*")) if f.is_file()}
    res["run_files"] = files
    res["run_mb_without_checkpoints"] = sum(v for k, v in files.items() if not k.startswith("checkpoints")) / 1e6
    res["index_mb"] = sum(f.stat().st_size for f in (home / "runs").glob("runs.db*")) / 1e6

    pages = child([py, __file__, "--_pages", ",".join(PAGES)], env)
    if pages["rc"] != 0:
        raise SystemExit(f"page rendering failed at {classes} classes:\n{pages['stderr']}")
    res["pages"] = last_json(pages["stdout"])
    res["pages_peak_gb"] = pages["peak_gb"]
    res["load_after"] = os.getloadavg()[0]
    return res


def report(r: dict) -> bool:
    c = r["classes"]
    page_goal = 2.0 if c <= 10_000 else 5.0   # the goals: 2 s at 10,000 classes, 5 s at 81,313
    cli = r["eval_cli"]
    ok = True
    print(f"\n== {c:,} classes, {r['images']:,} images ({IMAGE_PX} px); {r['threads']} thread(s) per process, "
          f"load average {r['load_before']:.1f} before, {r['load_after']:.1f} after ==")
    if "capped" in r:
        k = r["capped"]
        epoch_s = k["train_images"] / k["train_images_per_s"]
        print(f"capped run (one process): load_data {k['load_data_s']:.0f} s (split, classes.json, decoded store), "
              f"{k['train_steps']} of {k['steps_per_epoch']:,} training steps at {k['train_images_per_s']:.0f} images/s "
              f"(a whole epoch of {k['train_images']:,} images: ~{epoch_s / 60:.0f} min), holdout evaluation "
              f"{k['eval_images']:,} of {k['holdout_images']:,} images at {k['eval_images_per_s']:.0f} images/s; "
              f"{k['seconds']:.0f} s wall, peak RSS {k['peak_gb']:.2f} GB; predictions generated (70 % right)")
        peak = k["peak_gb"]
    else:
        t, e = r["train"], r["evaluate"]
        print(f"train (1 epoch, small_cnn, CPU): {t['seconds']:.0f} s wall, epoch {t['epoch_images_per_s']:.0f} "
              f"images/s, peak RSS {t['peak_gb']:.2f} GB")
        rates = ", ".join(f"{s} {v['images']:,} img {v['images_per_s']:.0f}/s" for s, v in e["splits"].items())
        print(f"evaluate (holdout, own process): {e['seconds']:.0f} s wall (data + model {e['load_s']:.1f} s; "
              f"{rates}), peak RSS {e['peak_gb']:.2f} GB")
        peak = max(t["peak_gb"], e["peak_gb"])
    ram_ok = peak <= RAM_GOAL_GB
    ok &= ram_ok
    print(f"  goal: train + evaluate within {RAM_GOAL_GB} GB: {'PASS' if ram_ok else 'FAIL'}")
    print(f"eval --json: {cli['seconds']:.1f} s, {cli['json_mb']:.1f} MB of JSON, peak RSS {cli['peak_gb']:.2f} GB")
    print("run files: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in r["run_files"].items()))
    size_ok = r["run_mb_without_checkpoints"] <= RUN_FOLDER_GOAL_MB
    ok &= size_ok
    print(f"  run folder without checkpoints {r['run_mb_without_checkpoints']:.1f} MB (goal ≤ {RUN_FOLDER_GOAL_MB} MB: "
          f"{'PASS' if size_ok else 'FAIL'}); run index {r['index_mb']:.1f} MB")
    print(f"pages (AppTest, peak RSS {r['pages_peak_gb']:.2f} GB), goal ≤ {page_goal:g} s warm:")
    for page, p in r["pages"].items():
        good = p["warm_s"] <= page_goal and not p["problems"]
        ok &= good
        print(f"  {page:<12} cold {p['cold_s']:6.2f} s  warm {p['warm_s']:6.2f} s  {'PASS' if good else 'FAIL'}"
              + (f"  {p['problems']}" if p["problems"] else ""))
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", default=",".join(map(str, SIZES)), help="comma-separated class counts")
    p.add_argument("--quick", action="store_true", help="1,000 classes only")
    p.add_argument("--steps", type=int, default=0,
                   help="for the 81,313-class set only: train and evaluate this many batches instead of a whole "
                        "epoch and finish the run with generated predictions (see capped_run)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (default: every core)")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.add_argument("--_evaluate", help=argparse.SUPPRESS)
    p.add_argument("--_pages", help=argparse.SUPPRESS)
    p.add_argument("--_capped", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._evaluate:
        print(json.dumps(evaluate_run(a._evaluate)))
        return 0
    if a._capped:
        data, classes, steps = a._capped.split(",")
        print(json.dumps(capped_run(data, int(classes), int(steps))))
        return 0
    if a._pages:
        print(json.dumps(render_pages(a._pages.split(","))))
        return 0
    sizes = [1_000] if a.quick else [int(c) for c in a.classes.split(",")]
    CACHE.mkdir(parents=True, exist_ok=True)
    results, ok = [], True
    for classes in sizes:
        results.append(measure(classes, a.threads, a.steps if classes == SIZES[-1] else 0))
        ok &= report(results[-1])
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
