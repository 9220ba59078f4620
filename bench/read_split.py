"""Reading a run's photos for embed / inspect / calibration (issue 20): one by one with PIL against
the prepared store training filled (core.serve.features.run_images), in the same process.

    python bench/read_split.py [--images 3000] [--classes 10] [--photo-size 256] [--size 128]
                               [--model small_cnn] [--store auto|raw|jpeg] [--data DIR]

Writes a class-per-folder set of `--images` JPEG photos of `--photo-size` px (a random pattern
per photo; or reads `--data`), prepares it once at `--size` px as training does (timed apart), then
times, for every photo: decoding alone and decoding + embedding with `--model` (random weights,
CPU), by each path. LANDMARKS_HOME is a temporary folder (the prepared store lives there). Also
says how far the PIL path's pixels are from the store's (training's): the PIL path decodes at full
size, the store with libjpeg's DCT-domain downscaling (Image.draft) where a photo is >= 2x `--size`.
The last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def photos(out: Path, n: int, classes: int, size: int, seed: int = 0) -> None:
    """n JPEGs (quality 90) in `classes` folders: each a blocky random pattern tinted by its class."""
    rng = np.random.default_rng(seed)
    tints = rng.integers(60, 256, (classes, 3))
    for i in range(n):
        c = i % classes
        d = out / f"class_{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        k = int(rng.integers(8, 33))
        a = rng.random((k, k, 1)) * tints[c] + rng.random((k, k, 3)) * 60
        im = Image.fromarray(a.clip(0, 255).astype(np.uint8)).resize((size, size * 3 // 4), Image.BILINEAR)
        im.save(d / f"{i:05d}.jpg", quality=90)


def timed(batches, model=None):
    """(seconds, features or None, readable count) of going through `batches` (embedding each one)."""
    from core.serve.features import embed
    t0, feats, n = time.perf_counter(), [], 0
    for idx, x in batches:
        n += len(idx)
        if model is not None:
            feats.append(embed(model, x))
    return time.perf_counter() - t0, (np.concatenate(feats) if feats else None), n


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--photo-size", type=int, default=256)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--store", default="auto", choices=("auto", "raw", "jpeg"))
    ap.add_argument("--data", type=Path)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="read_split_"))
    os.environ["LANDMARKS_HOME"] = str(tmp / "home")
    import torch

    from core.data.readers import load_index
    from core.serve.features import photo_batches, run_images
    from core.train.config import TrainConfig
    from core.train.models import build_model
    data = a.data or tmp / "photos"
    if a.data is None:
        t0 = time.perf_counter()
        photos(data, a.images, a.classes, a.photo_size)
        print(f"wrote {a.images} photos of {a.photo_size} px in {time.perf_counter() - t0:.1f} s", flush=True)
    cfg = TrainConfig(data=str(data), model=a.model, weights="none", classes=0, image_size=a.size, store=a.store)
    paths = load_index(data).samples["path"].tolist()
    t_prep, _, _ = timed(run_images(cfg, paths))                 # the store filled once, as training does
    print(f"prepared {len(paths)} photos at {a.size} px in {t_prep:.1f} s (once, as training does)", flush=True)
    torch.manual_seed(0)
    model = build_model(a.model, max(2, a.classes), "none").eval()
    threads = torch.get_num_threads()
    out = {"images": len(paths), "photo_px": a.photo_size, "image_px": a.size, "model": a.model,
           "threads": threads, "prepare_s": round(t_prep, 2)}
    source = {}
    for what, m in (("read", None), ("embed", model)):
        t_pil, f_pil, n_pil = timed(photo_batches(paths, a.size), m)
        t_store, f_store, n_store = timed(run_images(cfg, paths, source=source), m)
        assert n_pil == n_store == len(paths), (n_pil, n_store)
        out[f"{what}_pil_s"], out[f"{what}_store_s"] = round(t_pil, 2), round(t_store, 2)
        out[f"{what}_ratio"] = round(t_pil / t_store, 1)
        print(f"{what:5s} one by one (PIL) {t_pil:6.1f} s   store {t_store:6.1f} s   ratio {t_pil / t_store:5.1f}x"
              f"   ({len(paths) / t_pil:.0f} vs {len(paths) / t_store:.0f} photos/s)", flush=True)
    out["store"] = f"{source['pixels']}: {source['why']}"
    cos = (f_pil * f_store).sum(1)
    out["pil_vs_store_cosine_min"] = round(float(cos.min()), 4)
    out["pil_vs_store_cosine_median"] = round(float(np.median(cos)), 4)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
