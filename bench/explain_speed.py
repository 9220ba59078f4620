"""Seconds per attribution method, ResNet-18 at 224 px on this machine's CPU (issue 21).

Random weights (speed does not depend on them; nothing is downloaded). For every registered method:
the first call (cold: captum set-up, allocator warm-up) and the median of ``--repeats`` further
calls, each one attribution of a new random image for one class, as the Classify page computes it
(a new image each time, so the shared input gradient is not reused). Then "vanilla after saliency":
vanilla backpropagation of the image saliency has just explained (the shared gradient, no pass).

    python bench/explain_speed.py [--size 224] [--repeats 3] [--threads 2] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core.explain import METHODS, explain  # noqa: E402
from core.train.models import build_model  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--method", action="append", help="only these methods (default: all)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_model(a.model, 10, weights="none").eval()
    layer = model.submodule(model.cam_layer)
    def image():
        return torch.rand(1, 3, a.size, a.size)

    out = {"model": a.model, "size": a.size, "threads": a.threads, "repeats": a.repeats,
           "torch": torch.__version__, "methods": {}}
    for name, cls in METHODS.items():
        if a.method and name not in a.method:
            continue
        times = []
        for _ in range(a.repeats + 1):
            x = image()
            t0 = time.perf_counter()
            explain(model, x, 3, name, target_layer=layer)
            times.append(time.perf_counter() - t0)
        cold, times = times[0], times[1:]
        out["methods"][name] = {"label": cls.label, "passes": cls.cost, "cold_s": round(cold, 3),
                                "median_s": round(statistics.median(times), 3)}
        print(f"{name:22s} {cls.cost:3d} passes  cold {cold:6.2f} s  median {statistics.median(times):6.2f} s",
              flush=True)
    x = image()
    explain(model, x, 3, "saliency", target_layer=layer)
    t0 = time.perf_counter()
    explain(model, x, 3, "vanilla", target_layer=layer)
    out["vanilla_after_saliency_s"] = round(time.perf_counter() - t0, 4)
    print(f"vanilla after saliency (same image): {out['vanilla_after_saliency_s']:.4f} s", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
