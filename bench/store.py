"""Benchmark: the prepared store, raw uint8 against the compressed JPEG store (issue 20).

    python bench/store.py                    # 300 images, 64 and 224 px
    python bench/store.py --images 1000 --json out.json

A few hundred photo-like source JPEGs (640x480, quality 90: 1/f-noise colour fields, whose
spectrum falls off as natural photos' do, with grain and a few flat shapes) are generated in a temp dir,
then for each size both stores are prepared (every usable core) and read back:
- size on disk per image (images.u8 / images.jpg over the images), and the ratio;
- mean |difference| of the JPEG store's pixels from the raw store's (grey levels, 0-255);
- read rate, images/s, in batches of 256 in a random order from a warm page cache:
  raw (the memmap gather PreparedBatches does), JPEG decoded on one CPU core
  (torchvision.io.decode_jpeg, libjpeg-turbo), JPEG through PreparedBatches' gathering threads
  (one per core), and, where CUDA is, JPEG decoded by nvJPEG (decode_jpeg(device="cuda"));
- GLDv2's sizes from the per-image figures (1.6 M images in train_clean, 4.1 M in train).
Real photos hold more detail than these: expect a somewhat larger JPEG store than measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GLD = {"GLDv2-clean (1.6 M)": 1_580_470, "GLDv2 train (4.1 M)": 4_132_914}


def photo(rng, w=640, h=480):
    """A photo-like picture: a colour field with a 1/f^1.8 power spectrum (made at a quarter of
    the size, then enlarged: FFTs of 640x480 cost seconds here), sensor-like grain, flat shapes."""
    from PIL import Image, ImageDraw
    sh, sw = h // 4, w // 4
    f = np.fft.fftfreq(sh)[:, None] ** 2 + np.fft.fftfreq(sw)[None, :] ** 2
    f[0, 0] = 1.0
    spec = (rng.normal(size=(3, sh, sw)) + 1j * rng.normal(size=(3, sh, sw))) / f ** 0.9
    x = np.real(np.fft.ifft2(spec)).transpose(1, 2, 0)
    x = (x - x.mean((0, 1))) / x.std((0, 1))
    x = 0.6 * x + 0.4 * x.mean(-1, keepdims=True)
    small = Image.fromarray(np.clip(128 + 45 * x, 0, 255).astype(np.uint8))
    big = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    big = big + rng.normal(0, 4, size=big.shape).astype(np.float32)
    im = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        d.rectangle([x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150))],
                    fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return im


def make_sources(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        photo(rng).save(p, quality=90)
        paths.append(str(p))
    return paths


def rate(fn, batches, cpu: bool = False):
    """Images/s of wall time; with `cpu`, also images per second of this process's CPU time
    (what a core would give on a machine no one else loads)."""
    t, c = time.perf_counter(), time.process_time()
    n = sum(len(fn(b)) for b in batches)
    wall = n / (time.perf_counter() - t)
    return (wall, n / (time.process_time() - c)) if cpu else wall


def bench_size(paths: list[str], size: int, batch: int) -> dict:
    import torch
    from core.data import prepared as P
    from core.train.pipeline import PreparedBatches, decode_jpegs
    out = {"size": size, "images": len(paths)}
    preps = {}
    for kind in ("raw", "jpeg"):
        t = time.perf_counter()
        preps[kind] = P.prepare(paths, size, key="bench", store=kind)
        out[f"prepare_{kind}_img_s"] = len(paths) / (time.perf_counter() - t)
    raw, jpg = preps["raw"], preps["jpeg"]
    out["raw_bytes_per_image"] = os.path.getsize(P.store_dir("bench", size) / "images.u8") / len(paths)
    out["jpeg_bytes_per_image"] = os.path.getsize(P.store_dir("bench", size, "jpeg") / "images.jpg") / len(paths)
    out["ratio"] = out["raw_bytes_per_image"] / out["jpeg_bytes_per_image"]
    out["mean_abs_error"] = float(np.abs(raw.images().astype(np.int16) - jpg.images().astype(np.int16)).mean())
    order = np.random.default_rng(1).permutation(len(paths))
    batches = [np.sort(order[i:i + batch]) for i in range(0, len(order), batch)]
    rows_r, rows_j = raw.rows, jpg.rows
    out["read_raw_img_s"] = rate(lambda b: np.ascontiguousarray(raw.store[rows_r[b]]), batches * 3)
    torch.set_num_threads(1)
    out["read_jpeg_1core_img_s"], out["read_jpeg_cpu_img_s"] = rate(lambda b: jpg.store[rows_j[b]], batches, cpu=True)
    cores = P.usable_cores()
    pb = PreparedBatches(jpg.store, np.zeros(len(jpg.rows)), batch, shuffle=True, threads=cores)
    out["read_jpeg_threads"] = cores
    out["read_jpeg_threads_img_s"] = rate(lambda b: b[0], [b for b in pb.epoch(0)])   # warm-up epoch
    t = time.perf_counter()
    n = sum(len(x) for x, _ in pb.epoch(1))
    out["read_jpeg_threads_img_s"] = n / (time.perf_counter() - t)
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        enc = [jpg.store.encoded(rows_j[b]) for b in batches]
        decode_jpegs(enc[0], dev)                                      # nvJPEG's start
        torch.cuda.synchronize()
        t = time.perf_counter()
        for e in enc * 3:
            decode_jpegs(e, dev)
        torch.cuda.synchronize()
        out["read_jpeg_cuda_img_s"] = 3 * len(paths) / (time.perf_counter() - t)
    for name, n in GLD.items():
        out[f"{name} raw GB"] = out["raw_bytes_per_image"] * n / 1e9
        out[f"{name} jpeg GB"] = out["jpeg_bytes_per_image"] * n / 1e9
    return out


def table(results: list[dict]) -> str:
    cuda = any("read_jpeg_cuda_img_s" in r for r in results)
    head = ["px", "raw KB/img", "jpeg KB/img", "ratio", "mean abs err", "prepare raw img/s", "prepare jpeg img/s",
            "read raw img/s", "read jpeg 1 core img/s (per CPU s)", "read jpeg threads img/s"] + (["read jpeg nvJPEG img/s"] * cuda)
    head += [f"{g} raw / jpeg GB" for g in GLD]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["size"], f"{r['raw_bytes_per_image'] / 1024:.1f}", f"{r['jpeg_bytes_per_image'] / 1024:.1f}",
               f"{r['ratio']:.1f}x", f"{r['mean_abs_error']:.2f}", f"{r['prepare_raw_img_s']:,.0f}",
               f"{r['prepare_jpeg_img_s']:,.0f}", f"{r['read_raw_img_s']:,.0f}", f"{r['read_jpeg_1core_img_s']:,.0f} ({r['read_jpeg_cpu_img_s']:,.0f})",
               f"{r['read_jpeg_threads_img_s']:,.0f} ({r['read_jpeg_threads']})"]
        if cuda:
            row.append(f"{r.get('read_jpeg_cuda_img_s', 0):,.0f}")
        row += [f"{r[f'{g} raw GB']:,.0f} / {r[f'{g} jpeg GB']:,.0f}" for g in GLD]
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--sizes", default="64,224")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LANDMARKS_HOME"] = str(Path(tmp) / "home")
        src = Path(tmp) / "src"
        src.mkdir()
        t = time.perf_counter()
        paths = make_sources(src, a.images)
        print(f"{a.images} sources in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        from core.data import prepared as P
        P.prepare(paths[:P.POOL_MIN], 16, key="warm-up")       # the pool's forkserver starts once, here
        results = [bench_size(paths, int(s), a.batch) for s in a.sizes.split(",")]
    import torch
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(json.dumps(meta))
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
