"""Embeddings: the features a run's classifier head consumes (issues 22 and 23).

One place turns a model and images into L2-normalised feature vectors, so the error-analysis
tools (map, nearest neighbours, near-duplicates, label issues) and the kNN classifier all read
the same numbers. The vector of an image is the input of the model's head (`LandmarkNet.head`):
the pooled backbone features for a softmax head, the embedding for a margin head.

    with head_input(model) as grab:       # a forward hook, removed on exit (also after an error)
        model(x); grab["x"]               # (n, D) features of the last forward pass
    embed(model, x)                       # (n, D) float32, unit length
    embed_images(model, images, size)     # every readable image of a list of paths, batched
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from core.data.readers import open_image, resize_square
from core.errors import UserError

BATCH = 64                  # images per forward pass


@contextmanager
def head_input(model):
    """A dict whose "x" is the input of the model's head in the last forward pass."""
    grab: dict = {}
    hook = model.submodule(model.head).register_forward_hook(
        lambda m, inputs, out: grab.__setitem__("x", inputs[0].detach()))
    try:
        yield grab
    finally:
        hook.remove()


@torch.no_grad()
def embed(model, x: torch.Tensor) -> np.ndarray:
    """Unit-length features (n, D) of a batch of images in [0, 1] (n, 3, S, S)."""
    model.eval()
    with head_input(model) as grab:
        model(x)
    f = grab["x"].float().flatten(1)
    return F.normalize(f, dim=1).cpu().numpy().astype(np.float32)


def image_tensor(path, size: int) -> torch.Tensor:
    """A photo as the model sees it in training and evaluation: (1, 3, size, size) in [0, 1]."""
    im = open_image(path)
    arr = np.asarray(resize_square(im.convert("RGB"), size), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def embed_images(model, paths: Iterable, size: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(features (n_readable, D), readable mask over `paths`). A photo that vanished or cannot be
    decoded any more is left out (False in the mask), not an error. `progress(done, total)`."""
    paths = list(paths)
    feats, ok, batch = [], np.zeros(len(paths), bool), []
    for i, p in enumerate(paths):
        try:
            batch.append(image_tensor(p, size))
            ok[i] = True
        except (UserError, OSError, ValueError):
            pass
        if len(batch) == BATCH or (i == len(paths) - 1 and batch):
            feats.append(embed(model, torch.cat(batch)))
            batch = []
            if progress:
                progress(i + 1, len(paths))
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), ok
