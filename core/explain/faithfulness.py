"""Deletion / insertion faithfulness of a saliency map (Petsiuk et al., RISE, BMVC 2018, §4).

Pixels are ranked by the map. Deletion replaces the most salient pixels with a baseline
and watches the target probability fall (a faithful map makes it fall fast: low AUC);
insertion starts from the baseline and puts the most salient pixels back (fast rise:
high AUC). ``score = insertion_auc - deletion_auc``: higher means more faithful.

Baseline: a heavily blurred copy of the image, for both curves. Petsiuk et al. use a blurred
canvas for insertion because an all-black start (and black holes while deleting) is far
from any training image: the model then reacts to the artificial sharp edges and the
unusual mean colour rather than to the information the pixels carry. Blur removes the
detail a classifier relies on while keeping the image's colour statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from core.explain.methods import model_device, model_guard


@dataclass(frozen=True)
class Faithfulness:
    deletion_auc: float
    insertion_auc: float
    score: float  # insertion_auc - deletion_auc; in [-1, 1], higher = more faithful
    deletion_curve: np.ndarray  # target probability after deleting fraction k/steps
    insertion_curve: np.ndarray  # target probability after inserting fraction k/steps

    @property
    def fractions(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self.deletion_curve))


def blurred(x: Tensor, sigma: float | None = None) -> Tensor:
    """Gaussian blur of (N,C,H,W) images; default sigma = min(H, W) / 16."""
    h, w = x.shape[-2:]
    sigma = float(sigma) if sigma else max(1.0, min(h, w) / 16)
    k = 2 * math.ceil(3 * sigma) + 1
    k = min(k, (min(h, w) - 1) | 1)  # reflect padding needs kernel // 2 < size
    return gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])


def _as_map(saliency_map, size: tuple[int, int]) -> Tensor:
    """Map / attribution -> (H*W,) float scores; channels reduced by max |.|."""
    if isinstance(saliency_map, Tensor):
        m = saliency_map.detach().cpu().float()
    else:
        m = torch.as_tensor(np.asarray(saliency_map, dtype=np.float32))
    while m.dim() > 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() == 3:
        m = m.abs().amax(0)
    if m.dim() != 2:
        raise ValueError(f"Expected a saliency map shaped (H, W) or (C, H, W); got {tuple(m.shape)}.")
    if tuple(m.shape) != tuple(size):
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return torch.nan_to_num(m, nan=0.0).flatten()


def _masks(scores: Tensor, steps: int, seed: int) -> tuple[Tensor, np.ndarray]:
    """(steps+1, H*W) bool masks of the top k/steps fraction of pixels, and the fractions.

    Ties (flat regions of a map) are broken by a seeded random permutation, not by pixel
    order, so a constant map is not secretly a top-to-bottom scan.
    """
    n = scores.numel()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    order = perm[torch.argsort(scores[perm], descending=True, stable=True)]
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    counts = torch.round(torch.linspace(0, 1, steps + 1) * n).long()
    return rank[None, :] < counts[:, None], (counts.double() / n).numpy()


def _auc(fractions: np.ndarray, curve: np.ndarray) -> float:
    return float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(fractions)))


@torch.no_grad()
def _probs(model: nn.Module, batch: Tensor, target: int) -> np.ndarray:
    return F.softmax(model(batch).float(), dim=1)[:, target].cpu().numpy().astype(np.float64)


def faithfulness(model: nn.Module, x: Tensor, target: int, saliency_map, steps: int = 16,
                 baseline: str = "blur", blur_sigma: float | None = None,
                 seed: int = 0) -> Faithfulness:
    """Deletion and insertion curves of one image (x: (3,H,W) or (1,3,H,W), values in [0, 1]).

    One batched forward pass of steps+1 images per curve. ``baseline``: "blur" (default,
    see module docstring) or "zeros" (RISE's deletion baseline).
    """
    if x.dim() == 4:
        x = x[0]
    if x.dim() != 3:
        raise ValueError(f"Expected one image shaped (3, H, W); got {tuple(x.shape)}.")
    if baseline not in ("blur", "zeros"):
        raise ValueError(f"Unknown baseline {baseline!r}; choose one of: blur, zeros")
    x = x.detach().to(model_device(model), torch.float32)
    h, w = x.shape[-2:]
    base = blurred(x[None], blur_sigma)[0] if baseline == "blur" else torch.zeros_like(x)
    masks, fractions = _masks(_as_map(saliency_map, (h, w)), steps, seed)
    masks = masks.view(steps + 1, 1, h, w).to(x.device, x.dtype)
    with model_guard(model):
        deletion = _probs(model, x * (1 - masks) + base * masks, int(target))
        insertion = _probs(model, base * (1 - masks) + x * masks, int(target))
    d_auc, i_auc = _auc(fractions, deletion), _auc(fractions, insertion)
    return Faithfulness(d_auc, i_auc, i_auc - d_auc, deletion, insertion)
