"""Embeddings: the features a run's classifier head consumes (issues 22 and 23).

One place turns a model and images into L2-normalised feature vectors, so the error-analysis
tools (map, nearest neighbours, near-duplicates, label issues) and the kNN classifier all read
the same numbers. The vector of an image is the input of the model's head (`LandmarkNet.head`):
the pooled backbone features for a softmax head, the embedding for a margin head.

    with head_input(model) as grab:       # a forward hook, removed on exit (also after an error)
        model(x); grab["x"]               # (n, D) features of the last forward pass
    embed(model, x)                       # (n, D) float32, unit length
    embed_images(model, images, size)     # every readable image of a list of paths, batched
    for idx, x in run_images(cfg, paths): # a run's own photos, from its prepared store (issue 20)
        embed(model, x)
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


def photo_batches(paths, size: int, progress=None, batch: int = BATCH):
    """Batches (indices into `paths`, (b, 3, size, size) in [0, 1]) of the readable photos, each
    decoded with PIL on its own (image_tensor): photos that are not a run's (an upload, a
    distractor folder), and a run's where its prepared store cannot serve (see run_images). A photo
    whose index never comes vanished or cannot be decoded. `progress(done, total)` after each batch."""
    paths = list(paths)
    xs, idx = [], []
    for i, p in enumerate(paths):
        try:
            xs.append(image_tensor(p, size))
            idx.append(i)
        except (UserError, OSError, ValueError):
            pass                              # vanished or damaged: the caller counts it
        last = i == len(paths) - 1
        if len(xs) == batch or (last and xs):
            yield np.asarray(idx, np.int64), torch.cat(xs)
            xs, idx = [], []
            if progress:
                progress(i + 1, len(paths))
        elif last and progress:
            progress(len(paths), len(paths))


def store_for(cfg) -> tuple[str | None, str, str]:
    """(key, kind, why) of the prepared store the run's training read its photos from (load_data's
    `prepare(paths, size, key=str(index.root), store=kind)`), or (None, "", why not) where none can
    serve: a run of the plain pipeline (its model was fed torchvision's per-photo decode, not the
    store's), or a data set folder that cannot be indexed any more."""
    from core.data.prepared import choose_store
    from core.data.readers import load_index
    from core.data.splits import choose
    if cfg.pipeline != "prepared":
        return None, "", f"the run was trained on the {cfg.pipeline} pipeline, which decodes each photo"
    try:
        index = load_index(cfg.data, clean=cfg.clean)
    except (UserError, OSError, ValueError) as e:
        return None, "", f"its data set cannot be indexed any more ({e})"
    try:                                     # "auto" chose by the number of images training chose
        n = len(choose(index.samples, cfg.classes, cfg.max_images, cfg.data_seed))
    except UserError:                        # fewer classes on disk now than the run trained on
        n = len(index.samples)
    kind, why = choose_store(cfg.store, n, cfg.image_size)
    return str(index.root), kind, why


def run_images(cfg, paths, progress=None, preparing=None, batch: int = BATCH, source: dict | None = None):
    """A run's photos as its training and evaluation fed them to the model: batches (indices into
    `paths`, float (b, 3, S, S) in [0, 1]) at the run's image size S, in the order of `paths`. A
    photo whose index never comes vanished or cannot be decoded (the caller counts it; not an error).

    The pixels come from the prepared store training filled (store_for: the same key and kind), in
    batches gathered as evaluation gathers them (core.train.pipeline.PreparedBatches, to_float): a
    run whose photos are all in the store decodes nothing (issue 20: one-by-one PIL decoding of
    1.6 M photos is hours). A photo the store lacks (an added row, a changed file) is decoded into
    it by `prepare`, as training would; `preparing(done, total)` counts those. Only where no store
    can serve (store_for's reasons, or a cache that cannot be written) is each photo decoded with
    PIL (photo_batches). `progress(done, total)` after each batch, over `paths`. `source`, when
    given, is filled with {"pixels": "store" | "photos", "why": ...}."""
    paths = [str(p) for p in paths]
    if not paths:
        return
    key, kind, why = store_for(cfg)
    prep = None
    if key is not None:
        from core.data.prepared import prepare
        try:
            prep = prepare(paths, cfg.image_size, key=key, workers=0, store=kind, progress=preparing)
        except UserError as e:                # a cache that cannot be written: a sentence, not fatal here
            why = str(e)
    if source is not None:
        source.update(pixels="store" if prep is not None else "photos", why=why)
    if prep is None:
        yield from photo_batches(paths, cfg.image_size, progress, batch)
        return
    yield from _store_batches(prep, len(paths), progress, batch)


def _store_batches(prep, n: int, progress, batch: int):
    from core.train.engine import _LazyRows   # evaluation's view of the store rows of a split
    from core.train.pipeline import PreparedBatches, to_float
    good = np.flatnonzero(prep.ok)
    loader = PreparedBatches(_LazyRows(prep.store, prep.rows[good]), good, batch, shuffle=False)
    for x, idx in loader.epoch(0):
        idx = idx.numpy()
        yield idx, to_float(x, "cpu", channels_last=False)
        if progress:
            progress(n if idx[-1] == good[-1] else int(idx[-1]) + 1, n)
    if progress and not len(good) and n:
        progress(n, n)


def embed_images(model, paths: Iterable, size: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(features (n_readable, D), readable mask over `paths`) of photos decoded one by one
    (photo_batches; a run's own photos: embed them from run_images' batches). A photo that vanished
    or cannot be decoded any more is left out (False in the mask), not an error. `progress(done, total)`."""
    paths = list(paths)
    feats, ok = [], np.zeros(len(paths), bool)
    for idx, x in photo_batches(paths, size, progress):
        feats.append(embed(model, x))
        ok[idx] = True
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), ok
