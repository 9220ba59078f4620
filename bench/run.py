"""Benchmark: this project's pipeline against the plain recipe, side by side in one process.

    python bench/run.py --quick            # 2 CPU cores, about 3 minutes
    python bench/run.py --gpu              # CUDA machine, full version
    python bench/run.py --quick --json out.json

Every comparison runs both sides in the same run, on the same machine, data, model and batch
size, and reports the ratio (machines are noisy: ratios are the result, not absolute times).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


# ------------------------------------------------------------------ data

def _write_jpegs(args):
    out, start, stop, w, h, seed = args
    from PIL import Image
    from core.data.demo import KINDS, draw_landmark as render
    kinds = list(KINDS)[:10]
    rows = []
    for i in range(start, stop):
        k = i % len(kinds)
        im = render(kinds[k], seed, i, h).resize((w, h), Image.BILINEAR)
        d = Path(out) / f"c{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f"{i:06d}.jpg", quality=90)
        rows.append(k)
    return rows


def make_jpegs(out: Path, n: int, w: int = 640, h: int = 480, workers: int = 1) -> Path:
    """n synthetic w x h JPEG photos in 10 class folders (generated here, no downloads)."""
    import multiprocessing as mp
    chunks = [(str(out), s, min(n, s + 256), w, h, 0) for s in range(0, n, 256)]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            pool.map(_write_jpegs, chunks)
    else:
        list(map(_write_jpegs, chunks))
    return out


# ------------------------------------------------------------------ 1. training end to end

def _cfg(data, model, size, batch, pipeline, workers, epochs):
    from core.train.config import TrainConfig
    # the plain side is the tutorial recipe whole: PIL per epoch, fp32, NCHW, the default optimizer loop
    speed = {} if pipeline == "prepared" else dict(precision="fp32", channels_last="off", fused="off")
    return TrainConfig(data=str(data), model=model, weights="none", classes=0, epochs=epochs, batch_size=batch,
                       image_size=size, holdout=0.0, val=0.05, pipeline=pipeline, workers=workers, seed=0, **speed)


def train_side(data, model, size, batch, pipeline, workers, epochs, run_dir, keep: dict | None = None) -> dict:
    """Time `epochs` training epochs from JPEG files; preparation (decode once) timed apart.
    `keep`: filled with the model, loader, optimizer, config, device and data (bench/gpu_bench.py)."""
    import torch
    from core.train import engine
    from core.train.models import build_model
    from core.runs.store import RunFolder
    from core.train.sinks import NullSink
    cfg = _cfg(data, model, size, batch, pipeline, workers, epochs)
    dev = engine.select_device("auto")
    t0 = time.perf_counter()
    d = engine.load_data(cfg, RunFolder(run_dir))          # prepared: decodes every JPEG once (cold cache)
    prep_s = time.perf_counter() - t0
    net = build_model(model, len(d.labels), "none").to(dev)
    if engine.channels_last(cfg, dev):
        net = net.to(memory_format=torch.channels_last)
    opt, _ = engine.make_optimizer(cfg, net)
    loader = engine._loader(cfg, d, "train", True, dev)
    n = int((d.manifest["split"] == "train").sum())
    warm = 3 if dev.type == "cuda" else 1        # cuDNN autotunes over a few steps; oneDNN needs one
    engine.train_one_epoch(net, _Head(loader, warm), opt, cfg, dev, 0, 0, NullSink())
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        engine.train_one_epoch(net, loader, opt, cfg, dev, e, 0, NullSink())
    if dev.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    out = {"images": n, "epochs": epochs, "prepare_s": prep_s, "train_s": train_s,
           "img_s_training": n * epochs / train_s}
    if pipeline == "prepared":
        out["img_s_from_memory"] = from_memory(net, loader, opt, cfg, dev)
    if keep is not None:
        keep.update(net=net, loader=loader, opt=opt, cfg=cfg, dev=dev, data=d)
    return out


def from_memory(net, loader, opt, cfg, dev) -> float:
    """The same training step fed one batch already on the device, over and over: what the
    model and hardware do with no input pipeline at all (the ceiling for any pipeline)."""
    import torch
    from core.train import engine
    from core.train.sinks import NullSink
    it = loader.epoch(0)
    x, y = next(it)
    it.close()
    batch = (x.to(dev), y.to(dev))
    steps = max(2, min(len(loader), 10))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    engine.train_one_epoch(net, _Head(itertools.repeat(batch), steps), opt, cfg, dev, 0, 0, NullSink())
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(y) / (time.perf_counter() - t0)


class _Head:
    """The first k batches of a loader (warm-up: cuDNN autotune, worker start, page cache)."""

    def __init__(self, loader, k):
        self.loader, self.k = loader, k

    def __len__(self):
        return self.k

    def __iter__(self):
        return self.epoch(0)

    def epoch(self, e):
        for i, b in enumerate(self.loader.epoch(e) if hasattr(self.loader, "epoch") else iter(self.loader)):
            if i >= self.k:
                return
            yield b


def bench_training(data, model, size, batch, workers, epochs, amortise, tmp) -> dict:
    from core import paths
    os.environ["LANDMARKS_HOME"] = str(tmp / f"home_{model}")   # cold prepared cache
    paths.home()
    plain = train_side(data, model, size, batch, "plain", workers, epochs, _mk(tmp / f"plain_{model}"))
    proj = train_side(data, model, size, batch, "prepared", workers, epochs, _mk(tmp / f"proj_{model}"))
    n = proj["images"]
    # end to end over `amortise` epochs: plain decodes every epoch; the project decodes once
    plain_img_s = plain["img_s_training"]
    proj_img_s = n * amortise / (proj["prepare_s"] + amortise * proj["train_s"] / epochs)
    ceiling = proj["img_s_from_memory"]
    return {"model": model, "image_size": size, "batch": batch, "images": n, "epochs_measured": epochs,
            "amortised_over_epochs": amortise, "plain_img_s": plain_img_s, "project_img_s": proj_img_s,
            "project_img_s_training_only": proj["img_s_training"], "project_prepare_s": proj["prepare_s"],
            "ratio": proj_img_s / plain_img_s, "from_memory_img_s": ceiling,
            "ceiling_ratio": ceiling / plain_img_s, "project_share_of_ceiling": proj_img_s / ceiling}


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# ------------------------------------------------------------------ 2. preparation

def bench_prepare(files: list[str], size: int) -> dict:
    """Images/s on one core: draft decode + reduce (project) vs full decode + resize (plain)."""
    from PIL import Image
    from core.data.prepared import _decode

    def plain(p):
        im = Image.open(p).convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        return np.asarray(im.resize((round(w * s), round(h * s)), Image.BILINEAR))

    def timed(fn):
        t0 = time.perf_counter()
        for p in files:
            fn(p)
        return len(files) / (time.perf_counter() - t0)

    def project(p):
        return _decode((p, size))

    timed(plain), timed(project)                                  # warm the page cache
    rounds = [(timed(plain), timed(project)) for _ in range(3)]   # alternating blocks, median of 3
    plain_s, proj_s = (statistics.median(r[i] for r in rounds) for i in (0, 1))
    return {"size": size, "images": len(files), "plain_img_s_per_core": plain_s,
            "project_img_s_per_core": proj_s, "ratio": proj_s / plain_s, "rounds": rounds}


# ------------------------------------------------------------------ 2b. demo data generation

def bench_demo(tmp: Path, images: int = 600, size: int = 128) -> dict:
    """Synthetic demo photos written per second on one core (render + JPEG encode + CSV)."""
    from core.data.demo import generate
    generate(tmp / "demo_warm", classes=12, images=48, size=size, seed=1)      # imports, first-call caches
    t0 = time.perf_counter()
    generate(tmp / "demo_bench", classes=12, images=images, size=size, seed=0)
    secs = time.perf_counter() - t0
    return {"images": images, "size": size, "seconds": secs, "img_s": images / secs}


# ------------------------------------------------------------------ 3. dataset statistics

def make_gldv2_csv(path: Path, rows: int = 4_100_000, classes: int = 203_000, seed: int = 0) -> Path:
    """A GLDv2-shaped train.csv: Zipf-like counts over `classes` landmarks."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, classes + 1) ** 0.9
    counts = np.maximum(1, np.floor(w / w.sum() * (rows - classes)).astype(np.int64) + 1)
    counts[0] += rows - counts.sum()
    labels = rng.permutation(np.repeat(rng.permutation(classes * 3)[:classes], counts))
    ids = np.char.mod("%016x", rng.integers(0, 2**62, rows, dtype=np.int64))
    urls = np.char.add("https://upload.wikimedia.org/wikipedia/commons/x/xx/", ids)
    pacsv.write_csv(pa.table({"id": ids, "url": urls, "landmark_id": labels}), path)
    lids = np.unique(labels)                      # GLDv2's names file: a Wikimedia category URL per class
    cats = np.char.add("http://commons.wikimedia.org/wiki/Category:Landmark_", lids.astype(str))
    pacsv.write_csv(pa.table({"landmark_id": lids, "category": cats}), path.parent / "train_label_to_category.csv")
    return path


def bench_stats(tmp: Path, rows: int, classes: int) -> dict:
    from core.data import readers as data
    from core import paths
    root = tmp / "gldv2"
    root.mkdir(exist_ok=True)
    make_gldv2_csv(root / "train.csv", rows, classes)
    os.environ["LANDMARKS_HOME"] = str(tmp / "home_stats")
    paths.home()

    import pandas as pd
    cats = {}

    def page_numbers():
        """What the Dataset page computes: counts, imbalance, readable names of the top 50 (the
        names file is read once and kept in memory, as the page's cache_resource does)."""
        counts = data.class_counts(root)
        if "df" not in cats:
            cats["df"] = pd.read_csv(root / "train_label_to_category.csv", dtype=str, engine="pyarrow")
        top = counts.head(50)
        return data.imbalance(counts, 50), data.readable_names(cats["df"][cats["df"]["landmark_id"].isin(
            top.index.astype(str))])

    t0 = time.perf_counter()
    page_numbers()
    cold = time.perf_counter() - t0
    warm = statistics.median(_time(page_numbers) for _ in range(5))
    t0 = time.perf_counter()
    pd.read_csv(root / "train.csv")["landmark_id"].value_counts()  # the plain alternative
    plain = time.perf_counter() - t0
    return {"rows": rows, "classes": classes, "cold_s": cold, "warm_s": warm, "plain_pandas_s": plain,
            "warm_ratio_vs_plain": plain / warm}


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ 4. classify latency

def bench_classify(size: int = 224, n: int = 20) -> dict:
    import torch
    from PIL import Image
    from core.train.config import TrainConfig
    from core.explain import explain, to_map
    from core.train.models import build_model
    from core.serve.predictor import Predictor
    model = build_model("resnet18", 10, "none").eval()
    pred = Predictor("bench", model, [str(i) for i in range(10)], [f"c{i}" for i in range(10)],
                     TrainConfig(data="", image_size=size))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))

    def top5():
        return pred.top(pred.tensor(img), 5)

    def saliency():
        x = pred.tensor(img)
        return to_map(explain(model, x, 0, "saliency")[0])

    for _ in range(3):
        top5(), saliency()
    with torch.inference_mode(False):
        cls = statistics.median(_time(top5) for _ in range(n)) * 1000
        sal = statistics.median(_time(saliency) for _ in range(n)) * 1000
    return {"model": "resnet18", "size": size, "repeats": n, "classify_ms": cls, "saliency_ms": sal}


# ------------------------------------------------------------------ main

def device_name() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


PROFILES = {
    # images, size, batch, epochs measured, workers, vgg images, stats rows, stats classes
    "quick": dict(images=640, size=64, batch=64, epochs=2, workers=2, vgg_images=192, amortise=10,
                  stats_rows=4_100_000, stats_classes=203_000, prep_files=200, gen_workers=2),
    "gpu": dict(images=20_000, size=224, batch=256, epochs=2, workers=16, vgg_images=8_000, amortise=10,
                stats_rows=4_100_000, stats_classes=203_000, prep_files=1000, gen_workers=16),
}


def run(profile: str, only: set[str]) -> dict:
    import torch
    p = PROFILES[profile]
    torch.set_num_threads(os.cpu_count() or 1)
    out = {"profile": profile, "device": device_name(), "date": time.strftime("%Y-%m-%d"),
           "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        t0 = time.perf_counter()
        photos = make_jpegs(tmp / "photos", p["images"], workers=p["gen_workers"])
        out["seconds_generate"] = time.perf_counter() - t0
        files = sorted(str(f) for f in photos.rglob("*.jpg"))
        if "prepare" in only:
            step = max(1, len(files) // p["prep_files"])          # every class, not the first few
            out["prepare"] = bench_prepare(files[::step][:p["prep_files"]], 224)
            out["prepare_ratio"] = out["prepare"]["ratio"]
        if "demo" in only:
            out["demo"] = bench_demo(tmp)
            out["demo_img_s"] = out["demo"]["img_s"]
        if "train" in only:
            r = bench_training(photos, "resnet18", p["size"], p["batch"], p["workers"], p["epochs"], p["amortise"], tmp)
            out["train_resnet18"] = r
            out.update(train_ratio_resnet18=r["ratio"], train_img_s_project_resnet18=r["project_img_s"],
                       train_img_s_plain_resnet18=r["plain_img_s"],
                       train_img_s_from_memory_resnet18=r["from_memory_img_s"])
            vgg_photos = tmp / "photos_vgg"
            vgg_photos.mkdir()
            for f in files[:p["vgg_images"]]:
                (vgg_photos / Path(f).parent.name).mkdir(exist_ok=True)
                os.link(f, vgg_photos / Path(f).parent.name / Path(f).name)
            batch = min(p["batch"], 96)
            r = bench_training(vgg_photos, "vgg16", p["size"], batch, p["workers"], 1, p["amortise"], tmp)
            out["train_vgg16"] = r
            out["train_ratio_vgg16"] = r["ratio"]
        if "stats" in only:
            s = bench_stats(tmp, p["stats_rows"], p["stats_classes"])
            out["stats"] = s
            out.update(stats_cold_s=s["cold_s"], stats_warm_s=s["warm_s"])
        if "classify" in only:
            c = bench_classify()
            out["classify"] = c
            out.update(classify_ms=c["classify_ms"], saliency_ms=c["saliency_ms"])
    return out


def table(r: dict) -> str:
    lines = [f"device: {r['device']}  profile: {r['profile']}  torch {r['torch']}  {r['date']}", "",
             "| benchmark | plain | this project | ratio |", "|---|---|---|---|"]
    for m in ("resnet18", "vgg16"):
        t = r.get(f"train_{m}")
        if t:
            lines.append(f"| train {m} {t['image_size']}px b{t['batch']}, {t['images']} JPEGs 640x480, end to end "
                         f"(prepare amortised over {t['amortised_over_epochs']} epochs) | {t['plain_img_s']:.0f} img/s "
                         f"| {t['project_img_s']:.0f} img/s (training only {t['project_img_s_training_only']:.0f}; "
                         f"prepare {t['project_prepare_s']:.1f} s) | {t['ratio']:.2f}x |")
            lines.append(f"| ↳ {m} fed from memory (no input pipeline: the ceiling) | | "
                         f"{t['from_memory_img_s']:.0f} img/s; project end to end = {t['project_share_of_ceiling']:.0%} "
                         f"of it | {t['ceiling_ratio']:.2f}x (max) |")
    if "prepare" in r:
        q = r["prepare"]
        lines.append(f"| prepare 640x480 JPEG -> {q['size']}px, one core | {q['plain_img_s_per_core']:.0f} img/s "
                     f"| {q['project_img_s_per_core']:.0f} img/s | {q['ratio']:.2f}x |")
    if "demo" in r:
        g = r["demo"]
        lines.append(f"| synthetic demo photos at {g['size']} px, one core (target >= 500 img/s) | | "
                     f"{g['img_s']:.0f} img/s | |")
    if "stats" in r:
        s = r["stats"]
        lines.append(f"| dataset stats, {s['rows']:,} rows / {s['classes']:,} classes | pandas read_csv "
                     f"{s['plain_pandas_s']:.2f} s | cold {s['cold_s']:.2f} s, warm {s['warm_s']:.3f} s "
                     f"| {s['warm_ratio_vs_plain']:.0f}x (warm) |")
    if "classify" in r:
        c = r["classify"]
        lines.append(f"| classify ResNet-18 224px CPU, median of {c['repeats']} | | top-5 {c['classify_ms']:.0f} ms, "
                     f"saliency {c['saliency_ms']:.0f} ms | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="CPU, about 3 minutes on 2 cores (default)")
    g.add_argument("--gpu", action="store_true", help="full version for a CUDA machine")
    ap.add_argument("--only", default="prepare,train,demo,stats,classify")
    ap.add_argument("--json", default=None, metavar="PATH")
    a = ap.parse_args(argv)
    if a.gpu:
        import torch
        if not torch.cuda.is_available():
            print("error: --gpu needs a CUDA device; use --quick on this machine.", file=sys.stderr)
            return 2
    r = run("gpu" if a.gpu else "quick", set(a.only.split(",")))
    print(table(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
