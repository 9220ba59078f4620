"""Benchmark: how close does --freeze come to a converged linear classifier on the same features?

    python bench/linear_probe.py DATA [--image-size 160] [--seeds 0,1,2] [--factors 5,10,20] [--epochs 2]

The pretrained model's pooled features (image and mirror image) are computed once; for every
seed, on the engine's own split (20% holdout, then 20% validation): (1) the ceiling, an
L2-regularised logistic regression trained to convergence (full-batch L-BFGS, the penalty chosen
on validation, mirror images added to training); (2) what the finetune recipe's frozen head does
in --epochs epochs, replayed on the cached features: zero-initialised head, AdamW (weight decay
0.05 on the weights), lr 0.001 x factor, warm-up 10% then cosine per step, label smoothing 0.1,
batch 32, a random mirror per image. Prints holdout accuracy of both; docs/BENCHMARKS.md has figures.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def features(data: str, model_name: str, size: int):
    from core.data.prepared import prepare
    from core.data.readers import load_index
    from core.train.models import build_model
    idx = load_index(data)
    s = idx.samples.sort_values("path", kind="stable")
    prep = prepare(s["path"].tolist(), size, key=str(idx.root), workers=0)
    good = s[prep.ok].reset_index(drop=True)
    rows = dict(zip(s["path"], prep.rows))
    model = build_model(model_name, 2, "imagenet", True).eval()
    grab = {}
    model.submodule(model.head).register_forward_hook(lambda m, i, o: grab.__setitem__("x", i[0].detach()))
    xs, xf = [], []
    with torch.no_grad():
        for i in range(0, len(good), 128):
            b = np.stack([prep.store[rows[p]] for p in good["path"][i:i + 128]])
            b = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255
            model(b), xs.append(grab["x"])
            model(b.flip(3)), xf.append(grab["x"])
    return good, torch.cat(xs), torch.cat(xf)


def probe(X, Xf, tr, ytr, va, yva, ho, yho, n):
    best = None
    Xt, yt = torch.cat([X[tr], Xf[tr]]), torch.cat([ytr, ytr])
    for wd in (1e-4, 1e-3, 1e-2):
        W = torch.zeros(X.shape[1], n, requires_grad=True)
        b = torch.zeros(n, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], max_iter=300, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(Xt @ W + b, yt) + wd * (W ** 2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        with torch.no_grad():
            v = ((X[va] @ W + b).argmax(1) == yva).float().mean().item()
            h = ((X[ho] @ W + b).argmax(1) == yho).float().mean().item()
        if best is None or v > best[0]:          # the penalty is chosen on validation only
            best = (v, h, wd)
    return best


def frozen_head(X, Xf, tr, ytr, ho, yho, n, factor, epochs, seed):
    from core.train.recipes import WarmupCosine
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(X.shape[1], n)
    torch.nn.init.zeros_(lin.weight), torch.nn.init.zeros_(lin.bias)
    steps = math.ceil(len(tr) / 32)
    opt = torch.optim.AdamW([{"params": [lin.weight], "weight_decay": 0.05},
                             {"params": [lin.bias], "weight_decay": 0.0}], lr=0.001 * factor)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(steps * epochs, 0.1))
    for _ in range(epochs):
        perm = torch.randperm(len(tr), generator=g)
        for k in range(steps):
            j, y = tr[perm[k * 32:(k + 1) * 32]], ytr[perm[k * 32:(k + 1) * 32]]
            x = torch.where((torch.rand(len(j), generator=g) < 0.5)[:, None], Xf[j], X[j])
            loss = F.cross_entropy(lin(x), y, label_smoothing=0.1)
            opt.zero_grad(), loss.backward(), opt.step(), sched.step()
    with torch.no_grad():
        return (lin(X[ho]).argmax(1) == yho).float().mean().item()


def main(argv=None) -> int:
    from core.data.splits import make_manifest
    ap = argparse.ArgumentParser(prog="python bench/linear_probe.py")
    ap.add_argument("data")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--factors", default="5,10,20")
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args(argv)
    t = time.time()
    good, X, Xf = features(a.data, a.model, a.image_size)
    print(f"{len(good)} images, features {tuple(X.shape)} in {time.time() - t:.0f} s", flush=True)
    factors = [float(f) for f in a.factors.split(",")]
    res = {"probe": [], **{f: [] for f in factors}}
    for seed in map(int, a.seeds.split(",")):
        m, labels = make_manifest(good, 0, 0.2, 0.2, seed)
        pos = {p: i for i, p in enumerate(good["path"])}

        def sel(split):
            mm = m[m["split"] == split]
            return torch.tensor([pos[p] for p in mm["path"]]), torch.tensor(mm["target"].to_numpy())
        (tr, ytr), (va, yva), (ho, yho) = sel("train"), sel("val"), sel("holdout")
        v, h, wd = probe(X, Xf, tr, ytr, va, yva, ho, yho, len(labels))
        res["probe"].append(h)
        line = f"seed {seed}: converged probe holdout {h:.3f} (penalty {wd:g})"
        for f in factors:
            res[f].append(frozen_head(X, Xf, tr, ytr, ho, yho, len(labels), f, a.epochs, seed))
            line += f" | head lr x{f:g}, {a.epochs} ep: {res[f][-1]:.3f}"
        print(line, flush=True)
    print("mean: " + ", ".join(f"{'probe' if k == 'probe' else f'x{k:g}'} {np.mean(v):.3f}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
