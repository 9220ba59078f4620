"""Is the synthetic demo data set learnable, but not trivially? Prints the numbers that say so.

(a) resnet18 from random init, 64 px, Adam 1e-3, batch 64, 3 epochs: accuracy on a stratified
    20% validation split (target >= 0.85), and on a stratified 1% holdout after training on
    the other 99% (only ~30 images, so it is noisy; reported for the workbench's default split).
    Each is printed as trained and with BatchNorm statistics re-estimated on training images.
(b) multinomial logistic regression and ridge least squares on raw 16x16 RGB pixels, 80/20:
    must stay < 0.5, or colour/layout alone would give the class away.

Usage: .venv/bin/python bench/demo_learnability.py [--images 3000] [--classes 12] [--size 160]
Takes a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.data import demo  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load(root: Path, px: int) -> tuple[np.ndarray, np.ndarray]:
    """All images resized to px x px (uint8 N,px,px,3) and their labels, in train.csv order."""
    with open(root / "train.csv") as f:
        rows = list(csv.DictReader(f))
    xs = []
    for row in rows:
        i = row["id"]
        with Image.open(root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg") as im:
            xs.append(np.asarray(im.convert("RGB").resize((px, px), Image.BILINEAR)))
    return np.stack(xs), np.array([int(r["landmark_id"]) for r in rows])


def stratified(labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train idx, held-out idx): frac of every class held out, at least one image each."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        held.extend(idx[: max(1, round(frac * len(idx)))])
    held = np.sort(np.array(held))
    return np.setdiff1d(np.arange(len(labels)), held), held


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


def train_resnet(x, y, tr, va, classes, epochs, seed) -> tuple[float, float, np.ndarray]:
    """Plain recipe: no augmentation, no schedule.

    Returns held-out accuracy as trained (BatchNorm running stats as left by training),
    accuracy after re-estimating the BatchNorm statistics on training images, and the
    per-class accuracy of the latter. After only ~110 Adam steps the running stats lag
    the fast-moving weights, so the first number is noisy; the second is what the weights
    have learned.
    """
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = to_tensor(x[tr]), torch.from_numpy(y[tr])
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        model.train()
        t0, loss_sum = time.time(), 0.0
        for b in torch.randperm(len(tr), generator=g).split(64):
            loss = F.cross_entropy(model(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(b)
        print(f"  epoch {ep + 1}: loss {loss_sum / len(tr):.3f} ({time.time() - t0:.0f}s)", flush=True)
    xv = to_tensor(x[va])
    plain = accuracy(model, xv, y[va])
    recalibrate_bn(model, xt, g)
    pred = predict(model, xv)
    per_class = np.array([(pred[y[va] == c] == c).mean() for c in range(classes)])
    return plain, float((pred == y[va]).mean()), per_class


@torch.no_grad()
def recalibrate_bn(model, xt: torch.Tensor, g: torch.Generator, images: int = 1280) -> None:
    """Precise BN: replace running stats by their average over a pass of training images."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    for b in torch.randperm(len(xt), generator=g)[:images].split(64):
        model(xt[b])


@torch.no_grad()
def predict(model, xv: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(b).argmax(1) for b in xv.split(256)]).numpy()


@torch.no_grad()
def accuracy(model, xv: torch.Tensor, yv: np.ndarray) -> float:
    return float((predict(model, xv) == yv).mean())


def linear_probes(x16, y, tr, va, classes) -> dict[str, float]:
    """Best held-out accuracy over a small L2 grid (an upper bound: the grid is picked on val)."""
    X = torch.from_numpy(x16.reshape(len(x16), -1)).float() / 255
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-3
    X = (X - mu) / sd
    X = torch.cat([X, torch.ones(len(X), 1)], 1)
    Y = F.one_hot(torch.from_numpy(y), classes).float()
    out = {}
    for lam in (1e-2, 1.0, 10.0, 100.0, 1000.0):  # ridge least squares to one-hot targets
        A = X[tr].T @ X[tr] + lam * torch.eye(X.shape[1])
        W = torch.linalg.solve(A, X[tr].T @ Y[tr])
        out[f"ridge l2={lam:g}"] = float(((X[va] @ W).argmax(1).numpy() == y[va]).mean())
    for wd in (0.0, 1e-3, 1e-2, 1e-1):  # multinomial logistic regression, full-batch LBFGS
        W = torch.zeros(X.shape[1], classes, requires_grad=True)
        opt = torch.optim.LBFGS([W], max_iter=200, line_search_fn="strong_wolfe")
        yt = torch.from_numpy(y[tr])

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(X[tr] @ W, yt) + wd * (W[:-1] ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        out[f"logreg wd={wd:g}"] = float(((X[va] @ W).argmax(1).numpy() == y[va]).mean())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", help="generate here (default: a temporary directory)")
    ap.add_argument("--skip-holdout", action="store_true", help="skip the 99/1 training run")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.out or tmp)
        info = demo.generate(root, a.classes, a.images, a.size, a.seed)
        print(f"generated {a.images} images at {a.size}px in {info['seconds']:.1f}s; counts {list(info['counts'].values())}")
        x64, y = load(root, 64)
        x16, _ = load(root, 16)
    tr, va = stratified(y, 0.2, a.seed)
    probes = linear_probes(x16, y, tr, va, a.classes)
    for k, v in probes.items():
        print(f"  linear probe 16x16 {k}: {v:.3f}")
    print(f"LINEAR_PROBE_16x16_ACC {max(probes.values()):.3f} (best of grid; majority class {np.bincount(y[va]).max() / len(va):.3f})")
    t0 = time.time()
    plain, recal, per_class = train_resnet(x64, y, tr, va, a.classes, a.epochs, a.seed)
    print("  per class (recalibrated BN): " + " ".join(
        f"{n}={v:.2f}" for n, v in zip(list(demo.KINDS)[: a.classes], per_class)))
    print(f"RESNET18_VAL20_ACC {plain:.3f} (BN recalibrated: {recal:.3f}; {len(va)} images, {time.time() - t0:.0f}s)")
    if not a.skip_holdout:
        tr1, ho = stratified(y, 0.01, a.seed)
        plain, recal, _ = train_resnet(x64, y, tr1, ho, a.classes, a.epochs, a.seed)
        print(f"RESNET18_HOLDOUT1_ACC {plain:.3f} (BN recalibrated: {recal:.3f}; {len(ho)} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
