"""Class model images (issue 21): K classes drawn the old way (one class after another, a batch of
one each: the loop before issue 21) against all K in one batch, in the same run and process.

    python bench/class_models.py [--model efficientnet_lite0] [--classes 4] [--steps 150] [--size 64] [--threads N]

Prints each way's wall time, the ratio, and per class the largest pixel difference between the
two ways' images and their target logits. They agree up to float noise step by step; over many
steps a max-pool or ReLU tie can flip on that noise and one image's path then drifts to another
image (docs/BENCHMARKS.md, issue 21). efficientnet_lite0 loads its ImageNet weights offline (they
ship with pip); small_cnn starts from random weights.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.explain.class_model import class_model, class_models  # noqa: E402
from core.train.models import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0", choices=["efficientnet_lite0", "small_cnn"])
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    weights = "imagenet" if a.model == "efficientnet_lite0" else "none"
    model = build_model(a.model, max(a.classes, 2), weights=weights).eval()
    targets = list(range(a.classes))
    class_models(model, targets, size=a.size, steps=2)           # warm-up: first-call allocations

    t = time.perf_counter()
    old = torch.stack([class_model(model, c, size=a.size, steps=a.steps) for c in targets])
    old_s = time.perf_counter() - t
    t = time.perf_counter()
    new = class_models(model, targets, size=a.size, steps=a.steps)
    new_s = time.perf_counter() - t

    print(f"{a.model}, {a.classes} classes x {a.steps} steps at {a.size} px, {torch.get_num_threads()} torch "
          f"threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  per class (old loop): {old_s:7.1f} s  ({old_s / (a.classes * a.steps) * 1e3:.0f} ms per class-step)")
    print(f"  one batch           : {new_s:7.1f} s  ({new_s / a.steps * 1e3:.0f} ms per batch step)")
    print(f"  ratio old/batched   : {old_s / new_s:7.2f}x")
    diff = (old - new).abs().flatten(1).amax(1)
    with torch.no_grad():
        s_old, s_new = (model(x).gather(1, torch.tensor(targets)[:, None])[:, 0] for x in (old, new))
    print("  class: largest pixel difference between the two ways, target logit old -> batched")
    for c in targets:
        print(f"    {c}: {diff[c].item():.1e}, {s_old[c].item():.2f} -> {s_new[c].item():.2f}")


if __name__ == "__main__":
    main()
