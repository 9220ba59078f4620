"""Class model visualisation (Simonyan, Vedaldi & Zisserman 2014, §2).

Gradient ascent on the input image I to maximise S_c(I) - lambda * ||I - 0.5||^2, where
S_c is the *unnormalised* class score (the logit: maximising the softmax could instead be
done by pushing the other classes down). Simonyan et al. work on mean-subtracted images, so
their ||I||^2 pulls towards the mean image; our inputs live in [0, 1], so the analogue pulls
towards mid grey.

Plain ascent yields high-frequency adversarial noise; the regularisers of Yosinski et al.
2015 ("Understanding Neural Networks Through Deep Visualization") make it look like
something: random jitter (roll by a few pixels every step), a periodic small Gaussian
blur, and clamping to the valid range [0, 1].
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from core.explain.methods import model_device, model_guard

Progress = Callable[[int, int, float], None]


def _blur(img: Tensor, sigma: float) -> Tensor:
    k = min(2 * math.ceil(3 * sigma) + 1, (min(img.shape[-2:]) - 1) | 1)
    return gaussian_blur(img, kernel_size=[k, k], sigma=[sigma, sigma])


def _ascent_step(model: nn.Module, img: Tensor, target: int, lr: float, l2: float,
                 shift: tuple[int, int]) -> tuple[Tensor, float]:
    """One jittered gradient-ascent step; gradient w.r.t. the image only (params untouched)."""
    shifted = torch.roll(img, shifts=shift, dims=(2, 3)).requires_grad_(True)
    score = model(shifted)[0, target]
    objective = score - l2 * (shifted - 0.5).pow(2).sum()
    (grad,) = torch.autograd.grad(objective, shifted)
    grad = torch.roll(grad, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    # Normalised step: lr is then "mean pixel change per step" whatever the logit scale.
    grad = grad / (grad.abs().mean() + 1e-12)
    return (img + lr * grad).detach(), float(score.detach())


def class_model(model: nn.Module, target: int, size: int = 128, steps: int = 150,
                lr: float = 0.05, l2: float = 1e-4, jitter: int = 4, blur_every: int = 4,
                blur_sigma: float = 0.5, seed: int = 0,
                progress: Optional[Progress] = None,
                should_stop: Optional[Callable[[], bool]] = None) -> Tensor:
    """Image (3, size, size) in [0, 1] that the model scores highly as class ``target``.

    ``progress(step, total, score)`` is called after each step with the logit before the
    step; ``should_stop()`` is polled before each step and ends the ascent early (the
    image reached so far is returned).
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    # Small noise around grey: a neutral start that breaks symmetry (Simonyan et al. use 0).
    img = (0.5 + 0.01 * torch.randn(1, 3, size, size, generator=gen)).clamp(0, 1).to(device)
    with model_guard(model):
        for step in range(steps):
            if should_stop is not None and should_stop():
                break
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            img, score = _ascent_step(model, img, int(target), lr, l2, (dy, dx))
            if blur_every and blur_sigma > 0 and (step + 1) % blur_every == 0:
                img = _blur(img, blur_sigma)
            img = img.clamp(0.0, 1.0)
            if progress is not None:
                progress(step + 1, steps, score)
    return img[0].detach().cpu()
