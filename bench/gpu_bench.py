"""Issue 11's single-GPU figures in one run of under 5 minutes (started by bench/gpu_check.sh).

    bash bench/gpu_check.sh                  # prints the table; GPU_CHECK_JSON=PATH also writes every figure
    GPU_CHECK_IMAGES=8000 bash bench/gpu_check.sh

Everything is generated here (640x480 JPEGs drawn by core.data.demo, models with weights=None):
the machine needs no network. Stages, in this order (each prints its row as soon as it is measured;
one that would not finish inside GPU_CHECK_BUDGET_S is skipped and says so):

  prepare   preparation img/s: nvJPEG on the GPU, the CPU process pool, one core; GPU rows vs CPU rows
  resnet18  ResNet-18 b256 end to end over a 10-epoch schedule: the plain recipe (ImageFolder-style
            PIL decode per epoch + DataLoader workers, fp32, NCHW) against this project (prepared on
            the GPU, amortised over the schedule); the same step fed from memory
  compile   the fed-from-memory ceiling compiled (torch.compile, speed.COMPILE_KWARGS): compile
            seconds, img/s, and the steps after which compiling pays back (core/train/speed.py)
  vgg16     VGG-16 b96 end to end, plain recipe against this project
  cold      one training epoch with the prepared store dropped from the page cache
            (posix_fadvise DONTNEED, no root needed), against a warm one

Sizes (environment): GPU_CHECK_IMAGES (19000, as issue 11), GPU_CHECK_VGG_IMAGES (8000),
GPU_CHECK_SIZE (224), GPU_CHECK_BATCH (256), GPU_CHECK_VGG_BATCH (96), GPU_CHECK_EPOCHS (2 measured
of the ResNet-18 schedule), GPU_CHECK_AMORTISE (10), GPU_CHECK_WORKERS (usable cores),
GPU_CHECK_ONLY (comma list of stages), GPU_CHECK_BUDGET_S (280), GPU_CHECK_TMP (a folder with
~8 GB free; default the system's), GPU_CHECK_JSON (path).

GPU_CHECK_DRY_RUN_CPU=1 runs the stages on the CPU at toy sizes (the "GPU" decode is the same
batched code with torchvision's CPU decoder): a check of this script where there is no GPU. Its
figures mean nothing.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import itertools
import json
import mmap
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

T0 = time.perf_counter()
DRY = os.environ.get("GPU_CHECK_DRY_RUN_CPU") == "1"
DEV = "cpu" if DRY else "cuda"


def sync() -> None:
    import torch
    if not DRY:
        torch.cuda.synchronize()


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def left() -> float:
    return env_int("GPU_CHECK_BUDGET_S", 280) - (time.perf_counter() - T0)


# ------------------------------------------------------------------ page cache

def drop_page_cache(path: str) -> None:
    """Write back, then ask the kernel to drop the file's pages (mapped pages stay: unmap first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fs_type(path: str) -> str:
    """The file system holding `path` (tmpfs keeps files in memory: no cold cache there)."""
    best, kind = "", "?"
    try:
        for line in open("/proc/mounts"):
            parts = line.split()
            if len(parts) > 2 and os.path.abspath(path).startswith(parts[1].rstrip("/") + "/") and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def resident_share(path: str) -> float | None:
    """Share of the file's pages in the page cache (mincore), None where that cannot be read."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        size = os.path.getsize(path)
        page = mmap.PAGESIZE
        pages = (size + page - 1) // page
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                return None
            vec = (ctypes.c_ubyte * pages)()
            rc = libc.mincore(addr, size, vec)
            libc.munmap(addr, size)
        finally:
            os.close(fd)
        return None if rc else sum(v & 1 for v in vec) / max(pages, 1)
    except Exception:  # noqa: BLE001 - a sandbox without mincore: not measured
        return None


# ------------------------------------------------------------------ stages

def stage_prepare(r: dict, paths: list[str], key: str, size: int, workers: int) -> None:
    import torch
    from core.data import prepared as P
    from bench.run import bench_prepare
    # nvJPEG and the CUDA context start before the clock (a training process holds both already)
    P._gpu_images([P._read(p)[0] for p in paths[:8]], [P._read(p)[1] for p in paths[:8]], size, DEV)
    sync()
    P.GPU_WITH_POOL = False                       # nvJPEG alone (files it does not take still go to the CPU)
    t = time.perf_counter()
    P.prepare(paths, size, key=key + "#gpu-only", workers=workers, device=DEV)
    only_s = time.perf_counter() - t
    P.GPU_WITH_POOL = True
    r["prepare_gpu_only"] = {"images": len(paths), "seconds": only_s, "img_s": len(paths) / only_s, **P.last_stats}
    log(f"prepare with nvJPEG alone: {len(paths)} images in {only_s:.1f} s = {len(paths) / only_s:,.0f} img/s "
        f"({P.last_stats.get('cpu', 0)} files fell back to the CPU)")
    t = time.perf_counter()                       # what prepare(device="cuda") does: the GPU and a CPU pool
    gpu = P.prepare(paths, size, key=key, workers=workers, device=DEV)
    gpu_s = time.perf_counter() - t
    gstats = dict(P.last_stats)
    r["prepare_gpu"] = {"images": len(paths), "seconds": gpu_s, "img_s": len(paths) / gpu_s, **gstats}
    log(f"prepare on the GPU with a CPU pool beside it: {len(paths)} images in {gpu_s:.1f} s = "
        f"{len(paths) / gpu_s:,.0f} img/s ({gstats.get('gpu', 0)} by nvJPEG, {gstats.get('cpu', 0)} on the CPU)")
    t = time.perf_counter()
    pool = P.prepare(paths, size, key=key + "#cpu-pool", workers=workers)
    pool_s = time.perf_counter() - t
    r["prepare_pool"] = {"images": len(paths), "seconds": pool_s, "img_s": len(paths) / pool_s, "workers": workers}
    log(f"prepare on a CPU pool of {workers}: {len(paths) / pool_s:,.0f} img/s ({pool_s:.1f} s, pool start included)")
    n1 = min(len(paths), env_int("GPU_CHECK_ONE_CORE_IMAGES", 1500))
    t = time.perf_counter()
    P.prepare(paths[:n1], size, key=key + "#one-core", workers=1)
    one = n1 / (time.perf_counter() - t)
    r["prepare_one_core"] = {"images": n1, "img_s": one}
    r["prepare_pool"]["x_one_core"] = r["prepare_pool"]["img_s"] / one
    log(f"prepare on one core (this project's path): {one:,.0f} img/s; "
        f"the pool = {r['prepare_pool']['x_one_core']:.1f}x one core")
    step = max(1, len(paths) // 300)
    r["prepare_per_core_vs_plain"] = bench_prepare(paths[::step][:300], size)
    q = r["prepare_per_core_vs_plain"]
    log(f"prepare per core, plain PIL vs this project: {q['plain_img_s_per_core']:.0f} vs "
        f"{q['project_img_s_per_core']:.0f} img/s")
    idx = np.arange(0, len(paths), max(1, len(paths) // 2000))
    both = gpu.ok[idx] & pool.ok[idx]
    a = gpu.images(idx[both]).astype(np.int16)
    b = pool.images(idx[both]).astype(np.int16)
    d = np.abs(a - b)
    r["gpu_vs_cpu_rows"] = {"rows": int(both.sum()), "mean_abs": float(d.mean()), "p99_abs": float(np.percentile(d, 99)),
                            "max_abs": int(d.max()) if d.size else 0, "same_unreadable": bool((gpu.ok == pool.ok).all())}
    log(f"GPU rows against CPU rows ({int(both.sum())} images): mean |difference| {d.mean():.2f} grey levels, "
        f"99th percentile {np.percentile(d, 99):.0f}, max {d.max() if d.size else 0}; same unreadable files: "
        f"{r['gpu_vs_cpu_rows']['same_unreadable']}")
    store = Path(gpu.store.filename) if hasattr(gpu.store, "filename") and gpu.store.filename else None
    if store is not None:
        index = store.parent / "index.parquet"
        rows = max(len(gpu.store), 1)
        r["store"] = {"bytes_per_image": os.path.getsize(store) / rows,
                      "index_bytes_per_image": os.path.getsize(index) / rows if index.exists() else None,
                      "rows": rows}
        log(f"prepared store: {r['store']['bytes_per_image']:,.0f} bytes per image "
            f"(+ {r['store']['index_bytes_per_image'] or 0:.0f} of index)")
    del gpu, pool
    gc.collect()


def stage_resnet(r: dict, photos: Path, tmp: Path, size: int, batch: int, workers: int, epochs: int,
                 amortise: int, prep_s: float | None, keep: dict) -> None:
    from bench.run import _mk, train_side
    plain = train_side(photos, "resnet18", size, batch, "plain", workers, epochs, _mk(tmp / "plain_r18"))
    log(f"resnet18 plain recipe: {plain['img_s_training']:,.0f} img/s")
    proj = train_side(photos, "resnet18", size, batch, "prepared", workers, epochs, _mk(tmp / "proj_r18"), keep=keep)
    n = proj["images"]
    prep = (prep_s or 0.0) + proj["prepare_s"]      # decode on the GPU (stage prepare) + the run's cache check
    e2e = n * amortise / (prep + amortise * proj["train_s"] / epochs)
    r["resnet18"] = {"images": n, "epochs_measured": epochs, "amortised_over_epochs": amortise, "batch": batch,
                     "plain_img_s": plain["img_s_training"], "project_img_s": e2e,
                     "project_img_s_training_only": proj["img_s_training"], "project_prepare_s": prep,
                     "ratio": e2e / plain["img_s_training"], "from_memory_img_s": proj["img_s_from_memory"]}
    log(f"resnet18 this project: {e2e:,.0f} img/s end to end (training only {proj['img_s_training']:,.0f}; "
        f"preparation {prep:.1f} s) = {e2e / plain['img_s_training']:.2f}x plain")


def fed_from_memory(keep: dict, steps: int, compiled: bool) -> dict:
    import torch
    from core.train import engine, speed
    from core.train.sinks import NullSink
    from bench.run import _Head
    net, loader, opt, cfg, dev = (keep[k] for k in ("net", "loader", "opt", "cfg", "dev"))
    if compiled:
        net = torch.compile(net, **speed.COMPILE_KWARGS)
    it = loader.epoch(0)
    x, y = next(it)
    it.close()
    b = (x.to(dev), y.to(dev))
    sync()
    t = time.perf_counter()
    engine.train_one_epoch(net, _Head(itertools.repeat(b), 3), opt, cfg, dev, 0, 0, NullSink())
    sync()
    warm = time.perf_counter() - t
    t = time.perf_counter()
    engine.train_one_epoch(net, _Head(itertools.repeat(b), steps), opt, cfg, dev, 0, 0, NullSink())
    sync()
    secs = time.perf_counter() - t
    return {"img_s": steps * len(y) / secs, "step_s": secs / steps, "first_3_steps_s": warm, "batch": len(y)}


def stage_compile(r: dict, keep: dict, steps: int) -> None:
    from core.train import speed
    cache = speed.inductor_cache_dir()
    warm = os.path.isdir(cache) and any(os.scandir(cache))
    eager = fed_from_memory(keep, steps, False)
    comp = fed_from_memory(keep, steps, True)
    compile_s = comp["first_3_steps_s"] - 3 * comp["step_s"]
    saved = eager["step_s"] - comp["step_s"]
    payback = compile_s / saved if saved > 0 else None
    r["compile"] = {"eager_img_s": eager["img_s"], "compiled_img_s": comp["img_s"], "compile_s": compile_s,
                    "eager_step_ms": eager["step_s"] * 1e3, "compiled_step_ms": comp["step_s"] * 1e3,
                    "payback_steps": payback, "inductor_cache_was_warm": warm, "inductor_cache": cache}
    log(f"Inductor's cache at {cache} was {'warm' if warm else 'cold'}")
    log(f"fed from memory: eager {eager['img_s']:,.0f} img/s, compiled {comp['img_s']:,.0f} img/s; compiling took "
        f"{compile_s:.0f} s and pays back after {payback:,.0f} steps" if payback else
        f"fed from memory: eager {eager['img_s']:,.0f} img/s, compiled {comp['img_s']:,.0f} img/s; compiling took "
        f"{compile_s:.0f} s and saves nothing per step")


def stage_cold(r: dict, keep: dict, photos: Path, tmp: Path, size: int, batch: int, workers: int) -> None:
    """One epoch from a store dropped from the page cache, then one warm, with a fresh model."""
    import torch
    from core.runs.store import RunFolder
    from core.train import engine
    from core.train.models import build_model
    from core.train.sinks import NullSink
    from bench.run import _Head, _cfg, _mk
    store = getattr(keep.get("data"), "store", None)
    path = getattr(store, "filename", None)
    keep.clear()                      # unmap the store: the kernel keeps pages a process maps
    del store
    gc.collect()
    if not path:
        log("cold page cache: no store file (skipped)")
        return
    os.environ["LANDMARKS_HOME"] = str(tmp / "home")     # the ResNet-18 stage's store (vgg16 moved it)
    before = resident_share(path)
    drop_page_cache(path)
    after = resident_share(path)
    cfg = _cfg(photos, "resnet18", size, batch, "prepared", workers, 2)
    dev = engine.select_device("auto")
    d = engine.load_data(cfg, RunFolder(_mk(tmp / "cold_r18")))
    net = build_model("resnet18", len(d.labels), "none").to(dev)
    if engine.channels_last(cfg, dev):
        net = net.to(memory_format=torch.channels_last)
    opt, _ = engine.make_optimizer(cfg, net)
    loader = engine._loader(cfg, d, "train", True, dev)
    fake = (torch.zeros((batch, size, size, 3), dtype=torch.uint8), torch.zeros(batch, dtype=torch.long))
    engine.train_one_epoch(net, _Head(itertools.repeat(fake), 3), opt, cfg, dev, 0, 0, NullSink())  # cuDNN, no reads
    n = int((d.manifest["split"] == "train").sum())
    rates = []
    for e in (1, 2):
        sync()
        t = time.perf_counter()
        engine.train_one_epoch(net, loader, opt, cfg, dev, e, 0, NullSink())
        sync()
        rates.append(n / (time.perf_counter() - t))
    r["cold"] = {"images": n, "cold_img_s": rates[0], "warm_img_s": rates[1], "resident_before": before,
                 "resident_after_drop": after, "store_bytes": os.path.getsize(path), "fs": fs_type(path)}
    share = f"{after:.0%}" if after is not None else "not readable here"
    log(f"cold page cache: {rates[0]:,.0f} img/s for the first epoch, {rates[1]:,.0f} warm "
        f"(store {os.path.getsize(path) / 1e9:.1f} GB on {r['cold']['fs']}; resident after the drop: {share})")


def stage_vgg(r: dict, files: list[str], tmp: Path, size: int, batch: int, workers: int, amortise: int, n: int) -> None:
    from bench.run import bench_training
    vgg = tmp / "photos_vgg"
    vgg.mkdir(exist_ok=True)
    for f in files[:n]:                             # as bench/run.py: the first n files, hard links
        (vgg / Path(f).parent.name).mkdir(exist_ok=True)
        os.link(f, vgg / Path(f).parent.name / Path(f).name)
    t = bench_training(vgg, "vgg16", size, batch, workers, 1, amortise, tmp)
    r["vgg16"] = t
    log(f"vgg16: plain {t['plain_img_s']:,.0f} img/s, this project {t['project_img_s']:,.0f} img/s end to end "
        f"(training only {t['project_img_s_training_only']:,.0f}; preparation {t['project_prepare_s']:.1f} s, on the "
        f"GPU) = {t['ratio']:.2f}x")


# ------------------------------------------------------------------ table

def _end_to_end_row(label: str, t: dict) -> str:
    return (f"| {label} | {t['plain_img_s']:,.0f} img/s | {t['project_img_s']:,.0f} img/s (training only "
            f"{t['project_img_s_training_only']:,.0f}; preparation {t['project_prepare_s']:.1f} s) | {t['ratio']:.2f}× |")


def table(r: dict) -> str:
    L = [f"card: {r['card']}; torch {r['torch']}, torchvision {r['torchvision']}; {r['cores']} cores; {r['date']}",
         "", "| | plain recipe | this project | ratio |", "|---|---|---|---|"]
    t = r.get("resnet18")
    if t:
        L.append(_end_to_end_row(f"ResNet-18 {r['size']} px b{t['batch']}, {t['images']:,} training images of "
                                 f"{r['images']:,} JPEGs 640×480, end to end over {t['amortised_over_epochs']} epochs", t))
    c = r.get("compile")
    if t or c:
        eager = (c or {}).get("eager_img_s") or (t or {}).get("from_memory_img_s")
        cells = [f"{eager:,.0f} img/s" if eager else "—"]
        if c:
            cells.append(f"compiled {c['compiled_img_s']:,.0f} img/s (compile {c['compile_s']:.0f} s" +
                         (f", pays back after {c['payback_steps']:,.0f} steps)" if c.get("payback_steps") else ", no gain)"))
        if t and eager:
            share = f"end to end is {t['project_img_s'] / eager:.0%} of it"
            if c:
                share += f", {t['project_img_s'] / c['compiled_img_s']:.0%} of compiled"
            cells.append(share)
        L.append(f"| the same model fed from memory (no input pipeline) | | {'; '.join(cells)} | |")
    v = r.get("vgg16")
    if v:
        L.append(_end_to_end_row(f"VGG-16 {r['size']} px b{v['batch']}, {v['images']:,} images, end to end", v))
    q = r.get("prepare_per_core_vs_plain")
    if q:
        L.append(f"| preparation, one core | {q['plain_img_s_per_core']:,.0f} img/s | "
                 f"{q['project_img_s_per_core']:,.0f} img/s "
                 f"| {q['ratio']:.2f}× |")
    g, p, o = r.get("prepare_gpu"), r.get("prepare_pool"), r.get("prepare_gpu_only")
    if o:
        L.append(f"| preparation, nvJPEG alone, {o['images']:,} JPEGs | | {o['img_s']:,.0f} img/s "
                 f"({o.get('cpu', 0)} files fell back to the CPU) | |")
    if g:
        L.append(f"| preparation, `prepare(device=\"cuda\")`: nvJPEG and a CPU pool beside it | | {g['img_s']:,.0f} img/s "
                 f"({g.get('gpu', 0):,} by nvJPEG, {g.get('cpu', 0):,} on the CPU) | |")
    if p:
        L.append(f"| preparation on a CPU pool of {p['workers']} | | {p['img_s']:,.0f} img/s = "
                 f"{p.get('x_one_core', 0):.1f}× "
                 f"one core | |")
    d = r.get("gpu_vs_cpu_rows")
    if d:
        L.append(f"| GPU-prepared rows against CPU-prepared rows | | mean abs difference {d['mean_abs']:.2f} grey levels, "
                 f"p99 {d['p99_abs']:.0f}, same unreadable files: {'yes' if d['same_unreadable'] else 'NO'} | |")
    s = r.get("store")
    if s:
        b = s["bytes_per_image"] + (s.get("index_bytes_per_image") or 0)
        L.append(f"| prepared store at {r['size']} px | | {s['bytes_per_image']:,.0f} bytes per image + "
                 f"{s.get('index_bytes_per_image') or 0:,.0f} of index: GLDv2's 4.1 M images = {4.1e6 * b / 1e9:,.0f} GB, "
                 f"100,000 images = {1e5 * b / 1e9:,.1f} GB | |")
    k = r.get("cold")
    if k:
        res = k.get("resident_after_drop")
        L.append(f"| training, store not in the page cache (first epoch) | | {k['cold_img_s']:,.0f} img/s cold, "
                 f"{k['warm_img_s']:,.0f} warm (store on {k.get('fs', '?')}; resident after the drop: "
                 f"{'%.0f%%' % (100 * res) if res is not None else 'unknown'}) | |")
    for name, why in r.get("skipped", {}).items():
        L.append(f"| {name}: not measured ({why}) | | | |")
    return "\n".join(L)


# ------------------------------------------------------------------ main

def main() -> int:
    import torch
    if not torch.cuda.is_available() and not DRY:
        print("no GPU: nothing measured")
        return 0
    import torchvision
    from core import paths as core_paths
    from core.data import prepared as P
    from core.data.readers import load_index
    from core.train import engine
    from bench.run import make_jpegs
    n_images, n_vgg = env_int("GPU_CHECK_IMAGES", 19_000), env_int("GPU_CHECK_VGG_IMAGES", 8_000)
    size, batch, vbatch = env_int("GPU_CHECK_SIZE", 224), env_int("GPU_CHECK_BATCH", 256), env_int("GPU_CHECK_VGG_BATCH", 96)
    epochs, amortise = env_int("GPU_CHECK_EPOCHS", 2), env_int("GPU_CHECK_AMORTISE", 10)
    workers = env_int("GPU_CHECK_WORKERS", P.usable_cores())
    only = set((os.environ.get("GPU_CHECK_ONLY") or "prepare,resnet18,compile,cold,vgg16").split(","))
    torch.set_num_threads(workers)
    if DRY:
        P.BATCHED_ON_CPU = True
    r = {"card": "DRY RUN ON THE CPU (figures mean nothing)" if DRY else torch.cuda.get_device_name(0),
         "torch": torch.__version__, "torchvision": torchvision.__version__,
         "python": platform.python_version(), "cores": workers, "date": time.strftime("%Y-%m-%d"),
         "images": n_images, "size": size, "skipped": {}}
    log(f"{r['card']}, torch {r['torch']}, torchvision {r['torchvision']}, {workers} cores")
    # what the engine does once the lead's one-line change is in: decode on the training device
    engine.prepare = functools.partial(P.prepare, device=DEV)
    keep: dict = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("GPU_CHECK_TMP") or None) as t:
        tmp = Path(t)
        os.environ["LANDMARKS_HOME"] = str(tmp / "home")
        core_paths.home()
        t0 = time.perf_counter()
        photos = make_jpegs(tmp / "photos", n_images, workers=workers)
        r["seconds_generate"] = time.perf_counter() - t0
        log(f"generated {n_images} JPEGs 640x480 in {r['seconds_generate']:.0f} s")
        index = load_index(str(photos))
        paths = sorted(index.samples["path"].tolist())
        files = sorted(str(f) for f in photos.rglob("*.jpg"))
        stages = [
            ("prepare", 60, lambda: stage_prepare(r, paths, str(index.root), size, workers)),
            ("resnet18", 70, lambda: stage_resnet(r, photos, tmp, size, batch, workers, epochs, amortise,
                                                  (r.get("prepare_gpu") or {}).get("seconds"), keep)),
            ("compile", 60, lambda: stage_compile(r, keep, env_int("GPU_CHECK_STEPS", 30))),
            ("vgg16", 35, lambda: stage_vgg(r, files, tmp, size, vbatch, workers, amortise, n_vgg)),
            ("cold", 20, lambda: stage_cold(r, keep, photos, tmp, size, batch, workers)),
        ]
        try:
            for name, need, fn in stages:
                if name not in only:
                    continue
                if name in ("compile", "cold") and "net" not in keep:
                    r["skipped"][name] = "needs the resnet18 stage"
                    continue
                if left() < need:
                    r["skipped"][name] = f"{left():.0f} s of the budget left, it needs about {need}"
                    log(f"{name}: skipped ({r['skipped'][name]})")
                    continue
                log(f"{name} ...")
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - one stage's failure is a row, the others still run
                    r["skipped"][name] = f"failed: {type(e).__name__}: {str(e)[:200]}"
                    log(f"{name}: FAILED {type(e).__name__}: {e}")
        except KeyboardInterrupt:
            r["skipped"]["rest"] = "stopped by the time limit"
            log("stopped by the time limit: the table has what was measured")
        keep.clear()
    r["seconds_total"] = time.perf_counter() - T0
    print()
    print(table(r))
    print(f"\n({r['seconds_total']:.0f} s in all)")
    out = os.environ.get("GPU_CHECK_JSON")
    if out:
        Path(out).write_text(json.dumps(r, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
