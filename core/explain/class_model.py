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

Progress = Callable[[int, int, list[float]], None]

# Images per batch x pixels per image (memory): 16 images at 224 px, 196 at 64 px. More classes
# than that are drawn in chunks, one batch after another.
MAX_BATCH_PIXELS = 16 * 224 * 224


def batches(targets: list[int], size: int, max_pixels: int | None = None) -> list[list[int]]:
    """The targets in chunks that fit one batch at `size` px (at least one image per chunk)."""
    n = max(1, (max_pixels or MAX_BATCH_PIXELS) // (size * size))
    return [list(targets[i:i + n]) for i in range(0, len(targets), n)]


def _blur(img: Tensor, sigma: float) -> Tensor:
    k = min(2 * math.ceil(3 * sigma) + 1, (min(img.shape[-2:]) - 1) | 1)
    return gaussian_blur(img, kernel_size=[k, k], sigma=[sigma, sigma])


def _ascent_step(model: nn.Module, img: Tensor, targets: Tensor, lr: float, l2: float,
                 shift: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """One jittered gradient-ascent step of every image in the batch, image b towards class
    targets[b]; gradient w.r.t. the images only (params untouched). In eval mode the images
    do not interact, so the gradient of the summed objective is each image's own gradient."""
    shifted = torch.roll(img, shifts=shift, dims=(2, 3)).requires_grad_(True)
    scores = model(shifted).gather(1, targets[:, None])[:, 0]
    objective = scores.sum() - l2 * (shifted - 0.5).pow(2).sum()
    (grad,) = torch.autograd.grad(objective, shifted)
    grad = torch.roll(grad, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    # Normalised step, per image: lr is then "mean pixel change per step" whatever the logit scale.
    grad = grad / (grad.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-12)
    return (img + lr * grad).detach(), scores.detach()


def class_models(model: nn.Module, targets: list[int], size: int = 128, steps: int = 150,
                 lr: float = 0.05, l2: float = 1e-4, jitter: int = 4, blur_every: int = 4,
                 blur_sigma: float = 0.5, seed: int = 0,
                 progress: Optional[Progress] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> Tensor:
    """Images (len(targets), 3, size, size) in [0, 1], image b scored highly as class targets[b],
    all drawn in one batch: one forward and backward per step for every class (issue 21).

    Each image is what ``class_model(model, targets[b], ...)`` alone gives, up to float noise:
    every class starts from the same seeded noise and gets the same seeded jitter, so one draw
    per step serves the whole batch. ``progress(step, total, scores)`` is called after each step
    with each image's logit before the step; ``should_stop()`` is polled before each step and
    ends the ascent early (the images reached so far are returned). Chunk long lists with
    ``batches()``: this draws them all at once.
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    # Small noise around grey: a neutral start that breaks symmetry (Simonyan et al. use 0).
    start = (0.5 + 0.01 * torch.randn(1, 3, size, size, generator=gen)).clamp(0, 1)
    img = start.repeat(len(targets), 1, 1, 1).to(device)
    tgt = torch.as_tensor([int(t) for t in targets], dtype=torch.long, device=device)
    with model_guard(model):
        for step in range(steps):
            if should_stop is not None and should_stop():
                break
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            img, scores = _ascent_step(model, img, tgt, lr, l2, (dy, dx))
            if blur_every and blur_sigma > 0 and (step + 1) % blur_every == 0:
                img = _blur(img, blur_sigma)
            img = img.clamp(0.0, 1.0)
            if progress is not None:
                progress(step + 1, steps, scores.cpu().tolist())
    return img.detach().cpu()


def class_model(model: nn.Module, target: int, size: int = 128, steps: int = 150,
                progress: Optional[Callable[[int, int, float], None]] = None, **kw) -> Tensor:
    """Image (3, size, size) in [0, 1] that the model scores highly as class ``target``: a batch
    of one of ``class_models`` (same arguments); ``progress(step, total, score)``."""
    one = None if progress is None else (lambda s, n, scores: progress(s, n, scores[0]))
    return class_models(model, [target], size=size, steps=steps, progress=one, **kw)[0]
