"""Input pipelines. `prepared`: batches gathered from the decoded-once uint8 store, augmented
and normalised on the device in one batched op. `plain`: the reference recipe every tutorial
writes (PIL decode + torchvision transforms per image per epoch, DataLoader workers).
"""
from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from core.train.distributed import shard, shard_size


# ------------------------------------------------------------------ batched augmentation

def random_resized_crop(x: torch.Tensor, gen: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Per-sample RandomResizedCrop (Szegedy et al. 2015) as one affine grid_sample call."""
    n = x.shape[0]
    area = torch.empty(n).uniform_(*scale, generator=gen)
    logr = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _flip(x, gen, dim):
    m = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(m, x.flip(dim), x)


def _rot90(x, gen):
    k = torch.randint(0, 4, (x.shape[0],), generator=gen).to(x.device)
    out = x.clone()
    for r in range(1, 4):
        sel = (k == r).nonzero().flatten()
        if len(sel):
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    return out


AUGMENT = {
    "crop": random_resized_crop,
    "hflip": lambda x, g: _flip(x, g, 3),
    "vflip": lambda x, g: _flip(x, g, 2),
    "rot90": _rot90,
}


def to_float(batch_u8, device, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC on the host -> float NCHW in [0,1] on the device. A list of JPEG byte tensors
    (the compressed store's batch, PreparedBatches(device_decode=True)) is decoded there first."""
    if isinstance(batch_u8, list):
        x = decode_jpegs(batch_u8, device).float().div_(255)
    else:
        x = batch_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def decode_jpegs(data: list, device) -> torch.Tensor:
    """Same-size JPEGs (uint8 byte tensors on the host) -> uint8 NCHW on `device`: one batched
    torchvision.io.decode_jpeg call, nvJPEG on CUDA."""
    import warnings
    from torchvision.io import ImageReadMode, decode_jpeg
    device = torch.device(device)
    if device.type == "cuda":  # nvJPEG's stream does not wait for ours (pytorch/vision#9606; see prepared.gpu)
        torch.cuda.current_stream(device).synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # torchvision 0.29 deprecates its image io for TorchCodec
        imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return torch.stack(imgs)


def decode_on_device(store, device) -> bool:
    """Whether training batches from `store` are decoded on `device`: the compressed store's
    (it has `encoded`) on a CUDA device whose torchvision has nvJPEG; else the gathering threads
    decode on the CPU. (prepared.gpu.BATCHED_ON_CPU sends them here on the CPU too, for tests.)"""
    from core.data.prepared.gpu import _cuda_ok
    return hasattr(store, "encoded") and device is not None and _cuda_ok(device)


def augment_batch(x: torch.Tensor, augment, gen: torch.Generator) -> torch.Tensor:
    for name in augment:
        x = AUGMENT[name](x, gen)
    return x


# ------------------------------------------------------------------ class balance

def class_counts(targets, n_classes: int | None = None) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.int64)
    return np.bincount(targets, minlength=n_classes or 0)


def class_weights(targets, n_classes: int) -> np.ndarray:
    """Per-class loss weights proportional to 1 / (the class's frequency in `targets`), scaled so
    that their mean over the samples is 1 (n / (classes present * count), sklearn's "balanced");
    0 for a class with no sample (it never appears in a target, so its weight is never used)."""
    counts = class_counts(targets, n_classes).astype(np.float64)
    present = counts > 0
    if not present.any():
        return np.ones(n_classes)
    w = np.zeros(len(counts))
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


def balanced_order(targets, seed: int, epoch: int) -> np.ndarray:
    """One epoch of a class-balanced sampler: len(targets) indices drawn with replacement, each
    with probability proportional to 1 / (its class's count), so every class present is drawn
    about equally often. A function of (seed, epoch) only: a resumed run draws the same epochs."""
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    p = 1.0 / class_counts(targets)[targets]
    return np.random.default_rng([seed, epoch]).choice(n, size=n, replace=True, p=p / p.sum())


def epoch_order(targets, seed: int, epoch: int, shuffle: bool, balanced: bool) -> np.ndarray:
    """The indices one epoch visits, in order, before sharding over processes: the class-balanced
    draw, a seeded permutation (a function of (seed, epoch)) or, unshuffled, 0..n-1."""
    if balanced:
        return balanced_order(targets, seed, epoch)
    if not shuffle:
        return np.arange(len(targets))
    return np.random.default_rng([seed, epoch]).permutation(len(targets))


class ShardSampler(torch.utils.data.Sampler):
    """epoch_order then this process's shard, for a DataLoader (the plain pipeline on several
    processes; the engine calls set_epoch). The same order on every process: the seed, not the rank."""

    def __init__(self, targets, seed: int, shuffle: bool, balanced: bool, rank: int, world: int):
        self.targets, self.seed, self.epoch = np.asarray(targets, dtype=np.int64), seed, 0
        self.shuffle, self.balanced, self.rank, self.world = shuffle, balanced, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return shard_size(len(self.targets), self.rank, self.world, pad=self.shuffle or self.balanced)

    def __iter__(self):
        order = epoch_order(self.targets, self.seed, self.epoch, self.shuffle, self.balanced)
        return iter(shard(order, self.rank, self.world, pad=self.shuffle or self.balanced).tolist())


class BalancedSampler(torch.utils.data.Sampler):
    """balanced_order for a DataLoader (the plain pipeline); the engine calls set_epoch."""

    def __init__(self, targets, seed: int = 0):
        self.targets, self.seed, self.epoch = np.asarray(targets, dtype=np.int64), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.targets)

    def __iter__(self):
        return iter(balanced_order(self.targets, self.seed, self.epoch).tolist())


# ------------------------------------------------------------------ prepared pipeline

class PreparedBatches:
    """Iterates (uint8 NHWC batch, targets) from a memmap, gathered by a prefetch thread.
    `rank`/`world`: this process's shard of every epoch's order (core.train.distributed.shard),
    padded for training (every process takes the same number of steps), not for evaluation.
    `device_decode`: batches of the compressed store leave as lists of JPEG byte tensors, for
    to_float to decode on the device (`images.encoded(idx)`); otherwise `images[idx]` decodes
    them here, in the gathering threads."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, batch_size: int, shuffle: bool,
                 seed: int = 0, pin: bool = False, prefetch: int = 4, threads: int = 0, balanced: bool = False,
                 rank: int = 0, world: int = 1, device_decode: bool = False):
        self.images, self.targets, self.balanced = images, np.asarray(targets, dtype=np.int64), balanced
        self.device_decode = device_decode
        self.batch_size, self.shuffle, self.seed, self.pin, self.prefetch = batch_size, shuffle, seed, pin, prefetch
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.rank, self.world = rank, world

    def __len__(self):
        n = shard_size(len(self.targets), self.rank, self.world, pad=self.shuffle or self.balanced)
        return math.ceil(n / self.batch_size)

    def _order(self, epoch: int) -> np.ndarray:
        order = epoch_order(self.targets, self.seed, epoch, self.shuffle, self.balanced)
        return shard(order, self.rank, self.world, pad=self.shuffle or self.balanced)

    def _gather(self, idx):
        idx = np.sort(idx)  # sorted reads are sequential in the memmap
        y = torch.from_numpy(self.targets[idx])
        if self.device_decode:
            return self.images.encoded(idx), (y.pin_memory() if self.pin else y)
        x = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
        return (x.pin_memory(), y.pin_memory()) if self.pin else (x, y)

    def epoch(self, epoch: int):
        """Batches in order, gathered `prefetch` ahead by a few threads (numpy's gather and
        pin_memory release the GIL, so at GPU speed several threads keep up where one cannot)."""
        order = self._order(epoch)
        chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            pending = deque(pool.submit(self._gather, c) for c in chunks[:self.prefetch])
            for c in chunks[self.prefetch:] + [None] * len(pending):
                batch = pending.popleft().result()
                if c is not None:
                    pending.append(pool.submit(self._gather, c))
                yield batch


# ------------------------------------------------------------------ plain pipeline

class PlainDataset(Dataset):
    def __init__(self, paths, targets, size: int, augment=()):
        from torchvision import transforms as T
        self.paths, self.targets = list(paths), list(targets)
        ops = [T.Resize(size), T.CenterCrop(size)]
        if "crop" in augment:
            ops.append(T.RandomResizedCrop(size))
        if "hflip" in augment:
            ops.append(T.RandomHorizontalFlip())
        if "vflip" in augment:
            ops.append(T.RandomVerticalFlip())
        if "rot90" in augment:
            ops.append(T.RandomChoice([T.RandomRotation((a, a)) for a in (0, 90, 180, 270)]))
        ops.append(T.ToTensor())
        self.tf = T.Compose(ops)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image
        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB")), self.targets[i]


def plain_loader(paths, targets, size, augment, batch_size, shuffle, workers, pin, seed=0,
                 balanced: bool = False, rank: int = 0, world: int = 1) -> DataLoader:
    """`balanced`: a BalancedSampler draws each epoch's images (set_epoch before iterating).
    `world` > 1: a ShardSampler gives this process (`rank`) its share of every epoch."""
    workers = (os.cpu_count() or 1) if workers < 0 else workers
    g = torch.Generator().manual_seed(seed + rank)        # the workers' augmentations differ per process
    sampler = BalancedSampler(targets, seed) if balanced else None
    if world > 1:
        sampler = ShardSampler(targets, seed, shuffle, balanced, rank, world)
    return DataLoader(PlainDataset(paths, targets, size, augment), batch_size=batch_size,
                      shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, pin_memory=pin, persistent_workers=workers > 0, generator=g)
