"""Margin heads (issue 23): GeM pooling, a 512-d embedding and a sub-center ArcFace layer, as the
Google Landmark Recognition 2020 solutions trained them, and the loss that puts the margin in.

    arcface head = GeM pool -> flatten -> Linear(C, 512) -> BatchNorm1d -> SubCenterArcFace
                   (the backbone's global average pool)  (the embedding)    (LandmarkNet.head)

* GeM (Radenović, Tolias, Chum, "Fine-tuning CNN image retrieval with no human annotation",
  TPAMI 2018): (mean x^p)^(1/p) per channel, p learnable (init 3); p = 1 is the average pool,
  p -> infinity the max pool.
* Sub-center ArcFace (Deng et al., ECCV 2020): k centres per class; a class's cosine is the
  largest of its k centres' cosines with the embedding, so a noisy or many-sided class does not
  pull one centre between its modes.
* Class-size-dependent margins (Ha, Liu, Liu, Liao, "Google Landmark Recognition 2020
  Competition Third Place Solution", arXiv:2010.05350, section 3.2): m_c = a * n_c^(-1/4) + b
  with a = 0.5, b = 0.05 (the values pytorch-metric-learning's DynamicArcFaceLoss ships for that
  paper): a class with few photos gets a wider margin.

The layer's forward returns the plain scaled cosines s * cos(theta) (no margin), so evaluation,
the predictor, calibration, export and the attribution methods see an ordinary logit vector.
The margin is applied by `MarginLoss`, which takes those logits and the targets: forward() stays
one pure function of the image (no `model.targets` set before each call, which DDP, torch.compile,
the ONNX exporter and the explain hooks would each have to know about, and which could leak a
stale target into an evaluation).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("softmax", "arcface")
EMBEDDING = 512            # embedding width
SUBCENTERS = 3             # k, per class
SCALE = 30.0               # s: logits are s * cos(theta)
GEM_P = 3.0                # GeM's initial p
MARGIN_A, MARGIN_B, MARGIN_POWER = 0.5, 0.05, -0.25   # m_c = a * n_c^(-1/4) + b (arXiv:2010.05350)


class GeM(nn.Module):
    """Generalised-mean pooling over the whole feature map, output (N, C, 1, 1) like
    nn.AdaptiveAvgPool2d(1). Computed in float32 (x^p overflows bf16 quickly)."""

    def __init__(self, p: float = GEM_P, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x):
        p = self.p.float()
        x = x.float().clamp(min=self.eps).pow(p)
        return F.adaptive_avg_pool2d(x, 1).pow(1.0 / p)


class SubCenterArcFace(nn.Module):
    """Scaled cosine logits: s * max_k cos(embedding, centre_{c,k}), shape (N, classes)."""

    def __init__(self, in_features: int, classes: int, k: int = SUBCENTERS, s: float = SCALE):
        super().__init__()
        self.classes, self.k, self.s = classes, k, s
        self.weight = nn.Parameter(torch.empty(classes * k, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosines(self, x):
        if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):   # bf16: cosines off by ~0.004
            with torch.autocast(x.device.type, enabled=False):
                return self.cosines(x)
        cos = F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        return cos.view(-1, self.classes, self.k).amax(dim=2)

    def forward(self, x):
        return self.s * self.cosines(x)


class MarginHead(nn.Sequential):
    """Linear embedding + BatchNorm1d + sub-center ArcFace; `arc` is the model's head (what
    core.serve.features.embed hooks: its input is the embedding)."""

    def __init__(self, in_features: int, classes: int, dim: int = EMBEDDING):
        super().__init__(OrderedDict(embed=nn.Linear(in_features, dim), bn=nn.BatchNorm1d(dim),
                                     arc=SubCenterArcFace(dim, classes)))


def margins(counts) -> np.ndarray:
    """Per-class margins m_c = a * n_c^(-1/4) + b from the training split's class counts (a class
    without a training photo gets the largest margin, as if it had one)."""
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return MARGIN_A * n ** MARGIN_POWER + MARGIN_B


class MarginLoss(nn.Module):
    """Cross-entropy on the margin logits: the target class's cosine cos(theta) becomes
    cos(theta + m_y) (ArcFace's additive angular margin), the others stay. `logits` are the
    model's s * cos; `step` (optimizer steps so far) scales the margins linearly from 0 to full
    over the first `warmup` steps, so the untrained embedding is not asked for a margin at once."""

    def __init__(self, margins, s: float = SCALE, warmup: int = 0, weight=None, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("m", torch.as_tensor(margins, dtype=torch.float32))
        self.s, self.warmup, self.weight, self.label_smoothing = s, int(warmup), weight, label_smoothing

    def ramp(self, step: int) -> float:
        return 1.0 if self.warmup <= 0 else min(1.0, step / self.warmup)

    def margin_logits(self, logits, y, step: int | None = None):
        cos = (logits.float() / self.s).clamp(-1.0, 1.0)
        m = self.m.to(cos.device)[y] * (self.ramp(step) if step is not None else 1.0)
        c = cos.gather(1, y[:, None])[:, 0]
        sin = (1.0 - c * c).clamp(min=1e-7).sqrt()
        phi = c * torch.cos(m) - sin * torch.sin(m)                    # cos(theta + m)
        # past theta = pi - m, cos(theta + m) would rise again: use the monotone cos(theta) - m sin(m)
        # there instead (insightface's ArcFace and the GLR 2020 code do the same)
        phi = torch.where(c > torch.cos(math.pi - m), phi, c - m * torch.sin(m))
        return self.s * cos.scatter(1, y[:, None], phi[:, None])

    def forward(self, logits, y, step: int | None = None):
        return F.cross_entropy(self.margin_logits(logits, y, step), y, weight=self.weight,
                               label_smoothing=self.label_smoothing)


def arcface_layers(net: nn.Module, pool: str, block: str, features: int, classes: int) -> tuple[str, ...]:
    """Put GeM in place of the backbone's pool at `pool` and a MarginHead at `block`; returns the
    attribute paths of the new layers (what the head learning rate and --freeze apply to)."""
    old = net.get_submodule(pool)
    gem = GeM()
    if getattr(old, "flatten", None) is not None and not isinstance(old.flatten, nn.Identity):
        gem = nn.Sequential(gem, nn.Flatten(1))        # timm's SelectAdaptivePool2d flattens too
    _set(net, pool, gem)
    _set(net, block, MarginHead(features, classes))
    return (pool, block)


def _set(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, name, module)
