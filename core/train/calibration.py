"""Calibration and rejection (issue 23): expected calibration error, reliability bins, temperature
scaling and the confidence threshold below which a prediction is rejected.

ECE (Naeini et al. 2015; Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3):
predictions are put in BINS equal-width confidence bins, bin b = (b/BINS, (b+1)/BINS] (0 in the
first), and  ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|.

Temperature scaling (Guo et al. 2017 §4.2): one scalar T > 0 divides every logit; fitted on the
validation logits by minimising the negative log-likelihood (Newton's method on 1/T, derivatives
from torch's autograd: see fit_temperature). It never changes a single view's ranking of classes, only how sure the model says
it is. With test-time flip averaging the probability is the mean of both views' softmax(z / T), and
T is fitted on that very mean.

Rejection: GAP ranks predictions by confidence, so dropping the least confident ones can never raise
it (a dropped prediction sits below every kept one). The threshold is therefore chosen for a target
precision instead: the lowest confidence whose answers at or above it are correct at least
`target` of the time on validation (distractor photos, where given, count as always wrong). A lower
threshold answers more photos; that is the one kept. Nothing here reads or writes files: the run
folder (core.runs.folder) stores the result as calibration.json.
"""
from __future__ import annotations

import math

import numpy as np
import torch

BINS = 15                    # equal-width confidence bins of the ECE and the reliability diagram
TARGET_PRECISION = 0.9       # share of answers above the threshold that should be right (on validation)
MIN_TEMPERATURE = 0.01       # a validation set the model gets all right pushes T to 0: stop there
MAX_TEMPERATURE = 100.0      # ... and one it gets all wrong to infinity (uniform probabilities)
NEWTON_STEPS = 50            # at most, in the temperature fit (it converges in about 5)
MAX_FIT_IMAGES = 5000        # validation images the temperature is fitted on, at most (a seeded subsample)
MAX_FIT_LOGITS = 2 ** 28     # logits held while fitting, at most (1 GiB of float32): fewer images at many classes
CHUNK_LOGITS = 2 ** 22       # logits per step of the fit's sums (32 MiB of float64 temporaries)


def reliability(conf, correct, bins: int = BINS) -> list[dict]:
    """Per equal-width bin: its edges, how many predictions, their accuracy and mean confidence
    (None where the bin is empty)."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)   # (lo, hi]; 0 joins the first
    count = np.bincount(idx, minlength=bins)
    hits = np.bincount(idx, weights=correct, minlength=bins)
    total = np.bincount(idx, weights=conf, minlength=bins)
    return [{"lo": b / bins, "hi": (b + 1) / bins, "count": int(count[b]),
             "acc": float(hits[b] / count[b]) if count[b] else None,
             "conf": float(total[b] / count[b]) if count[b] else None} for b in range(bins)]


def ece(conf, correct, bins: int = BINS) -> float:
    """Expected calibration error: sum over bins of |B|/n * |acc(B) - conf(B)| (nan without predictions)."""
    rows = reliability(conf, correct, bins)
    n = sum(r["count"] for r in rows)
    if n == 0:
        return float("nan")
    return float(sum(r["count"] / n * abs(r["acc"] - r["conf"]) for r in rows if r["count"]))


def calibrated_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities from logits shaped (views, n, C) (or (n, C)): the mean over views of
    softmax(z / T), as the run's evaluation averages an image with its mirror image."""
    z = logits if logits.dim() == 3 else logits.unsqueeze(0)
    return torch.softmax(z.float() / temperature, dim=2).mean(0)


def _nll_sum(z: torch.Tensor, y: torch.Tensor, beta) -> torch.Tensor:
    """Summed negative log-likelihood of y under the mean over views of softmax(beta * z)."""
    logp = torch.logsumexp(torch.log_softmax(z * beta, dim=2), dim=0) - math.log(z.shape[0])
    return -logp[torch.arange(len(y)), y].sum()


def _chunks(z: torch.Tensor, y: torch.Tensor):
    """(views, rows, C) slices in float64 of at most CHUNK_LOGITS logits: the fit's temporaries stay
    small whatever the number of classes (the held logits stay float32)."""
    rows = max(1, CHUNK_LOGITS // max(z.shape[0] * z.shape[2], 1))
    for i in range(0, len(y), rows):
        yield z[:, i:i + rows].double(), y[i:i + rows]


def _loss(z: torch.Tensor, y: torch.Tensor, beta: float) -> float:
    with torch.no_grad():
        return sum(float(_nll_sum(zc, yc, beta)) for zc, yc in _chunks(z, y)) / len(y)


def _grad_hess(z: torch.Tensor, y: torch.Tensor, beta: float) -> tuple[float, float]:
    """d/dbeta and d2/dbeta2 of the mean NLL, summed chunk by chunk (autograd on each chunk)."""
    g = h = 0.0
    for zc, yc in _chunks(z, y):
        b = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
        (gc,) = torch.autograd.grad(_nll_sum(zc, yc, b), b, create_graph=True)
        (hc,) = torch.autograd.grad(gc, b)
        g, h = g + float(gc.detach()), h + float(hc)
    return g / len(y), h / len(y)


def fit_temperature(logits: torch.Tensor, labels, steps: int = NEWTON_STEPS) -> float:
    """The T > 0 minimising the NLL of `labels` under calibrated_probs(logits, T).

    Newton's method on beta = 1/T, with derivatives from autograd: for one view the NLL is convex in
    beta (a log-sum-exp of linear functions minus a linear one), so Newton converges in a few steps;
    a step that does not lower the NLL is halved. (torch.optim.LBFGS does the same job but building
    any torch optimizer imports torch._dynamo, seconds for one scalar.) The NLL and its derivatives
    are sums over images, taken in chunks (_chunks): memory is the logits held, not a multiple."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # tiny operations: on a busy machine OpenMP's waiting threads cost 25x (measured)
    try:
        return _fit_temperature(logits, labels, steps)
    finally:
        torch.set_num_threads(threads)


def _fit_temperature(logits: torch.Tensor, labels, steps: int) -> float:
    z = (logits if logits.dim() == 3 else logits.unsqueeze(0)).detach()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(y) == 0:
        return 1.0
    beta, lo, hi = 1.0, 1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE
    loss = _loss(z, y, beta)
    for _ in range(steps):
        g, h = _grad_hess(z, y, beta)
        step = g / h if h > 1e-12 else math.copysign(0.5 * beta, g) if g else 0.0
        while True:               # halve until the NLL drops (or the step is nothing)
            new = min(max(beta - step, lo), hi)
            if (l_new := _loss(z, y, new)) <= loss:
                break
            step /= 2
            if abs(step) < 1e-12 * beta:
                return 1.0 / beta
        if abs(new - beta) < 1e-9 * beta:
            return 1.0 / new
        beta, loss = new, l_new
        if abs(step) < 1e-9 * beta:
            break
    return 1.0 / beta


def choose_threshold(conf, correct, target: float = TARGET_PRECISION) -> dict:
    """The lowest confidence t whose answers (conf >= t) are right at least `target` of the time:
    {"threshold", "precision", "coverage", "target_reached"}. When no t reaches the target, the t
    of the most precise answers (the lowest one among equals) is kept and target_reached is False."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if len(conf) == 0:
        return {"threshold": 0.0, "precision": None, "coverage": None, "target_reached": False}
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], correct[order]
    last = np.r_[c[1:] != c[:-1], True]           # the last of each run of equal confidences: a possible cut
    k = np.flatnonzero(last) + 1                  # answers kept by a cut there
    precision = np.cumsum(ok)[k - 1] / k
    reached = precision >= target - 1e-12
    i = int(np.flatnonzero(reached)[-1]) if reached.any() else int(np.flatnonzero(precision == precision.max())[-1])
    return {"threshold": float(c[k[i] - 1]), "precision": float(precision[i]), "coverage": float(k[i] / len(c)),
            "target_reached": bool(reached.any())}


def fit_sample(n: int, classes: int, views: int = 1, seed: int = 0) -> np.ndarray:
    """The indices (sorted) of the validation images the temperature is fitted on: all of them when
    they are few, else a seeded subsample of at most MAX_FIT_IMAGES, fewer where images x views x
    classes logits would pass MAX_FIT_LOGITS (at 81,313 classes with TTA: 1,650 images). One scalar
    is well determined by a few thousand images; holding every image's logits is not affordable
    (60,000 x 81,313 floats is 19 GB)."""
    k = min(n, MAX_FIT_IMAGES, max(1, MAX_FIT_LOGITS // max(classes * views, 1)))
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def summary(probs: np.ndarray, labels) -> dict:
    """ECE, reliability bins and the top-1 confidence, prediction and correctness of a split's probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    conf = probs.max(1) if len(probs) else np.zeros(0)
    return summary_of(conf, pred, labels)


def summary_of(conf, pred, labels) -> dict:
    """summary() from each image's top-1 confidence and prediction (kept chunk by chunk)."""
    conf = np.asarray(conf, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.int64)
    correct = pred == np.asarray(labels)
    return {"conf": conf, "pred": pred, "correct": correct, "ece": ece(conf, correct),
            "bins": reliability(conf, correct)}
