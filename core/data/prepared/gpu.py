"""Decoding on the GPU (nvJPEG through torchvision), as the CPU path would.

The CPU path is: libjpeg decodes at 1/s scale (Image.draft: s is the largest of 8, 4, 2, 1 that
leaves both sides >= size), EXIF orientation, then Pillow's BILINEAR resize of the centred
square box (with its `reduce` pre-step when the box is >= 2x size). Here nvJPEG decodes at full
scale, an s x s average stands in for libjpeg's scaled IDCT (the one approximate step: mean
|difference| ~0.5 grey level at 640x480 -> 224), and Pillow's resize is reproduced exactly:
the same filter weights in its 22-bit fixed point, summed in float64 (exact for these
integers), horizontal pass first, rounded to 8 bits in between. Files nvJPEG should not take
(PNG, CMYK, 12-bit, lossless, arithmetic-coded, EXIF orientation in XMP, no end marker, ...) go
to the CPU decoder and keep its unreadable-file reasons.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import struct
import warnings
import zlib
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from core.data.prepared import pool as cpu_pool
from core.data.prepared.pool import _decode_rows, _executor, _pwrite, last_stats

GPU_BATCH = 256  # images per nvJPEG batch
GPU_BATCH_PIXELS = 100_000_000  # and at most this many decoded pixels per batch (GPU memory)
BATCHED_ON_CPU = False  # tests: run the batched (GPU) code path with torchvision's CPU decoder
GPU_WITH_POOL = True  # with CUDA, a CPU pool decodes whole batches too whenever it is idle
MAX_AHEAD = 64  # batches decoded but not yet committed (waiting for an earlier pool batch)
_SOF_OK = {0xC0, 0xC2}                  # baseline and progressive Huffman: what nvJPEG decodes
_SOF_ALL = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_XMP = b"http://ns.adobe.com/xap/1.0/"


def _cuda_ok(device) -> bool:
    """Whether `device` asks for, and this machine has, nvJPEG decoding through torchvision."""
    if device is None:
        return False
    import torch
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cpu" and BATCHED_ON_CPU:
        return True
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        import torchvision  # noqa: F401  (registers torch.ops.image)
        return hasattr(torch.ops.image, "decode_jpegs_cuda")
    except Exception:  # noqa: BLE001 - a torchvision without image ops: decode on the CPU
        return False


def _jpeg_info(b) -> tuple[int, int, int] | None:
    """(width, height, EXIF orientation) of a JPEG that nvJPEG can decode as the CPU path would;
    None sends the file to the CPU decoder (which gives the reason if it is unreadable)."""
    n = len(b)
    if n < 8 or b[0] != 0xFF or b[1] != 0xD8:
        return None
    end = n
    while end > 2 and b[end - 1] == 0 and n - end < 4096:   # zero padding after the end marker
        end -= 1
    if b[end - 2:end] != b"\xff\xd9":    # truncated (Pillow refuses), or data after the image
        return None
    i, orientation, exif, sof, adobe, xmp = 2, 1, False, None, None, False
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None
        m = b[i + 1]
        if m == 0xFF:
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD7:
            i += 2
            continue
        length = (b[i + 2] << 8) | b[i + 3]
        seg = memoryview(b)[i + 4:i + 2 + length]
        if m == 0xDA:                      # start of scan: the header is over
            break
        if m in _SOF_ALL:
            if m not in _SOF_OK or sof is not None:
                return None
            sof = bytes(seg[:6 + 3 * seg[5]]) if len(seg) >= 6 else None
            if sof is None:
                return None
        elif m == 0xE1 and bytes(seg[:6]) == b"Exif\0\0" and not exif:   # Pillow reads the first
            exif, orientation = True, _exif_orientation(bytes(seg[6:]))
            if orientation is None:
                return None
        elif m == 0xE1 and bytes(seg[:len(_XMP)]) == _XMP:
            xmp = xmp or b"tiff:Orientation" in bytes(seg)   # Pillow reads it there when EXIF has none
        elif m == 0xEE and bytes(seg[:5]) == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
        i += 2 + length
    if sof is None or len(sof) < 6 or (xmp and orientation == 1):
        return None
    size = _frame_size(sof, adobe)
    return None if size is None else (*size, orientation)


def _frame_size(sof: bytes, adobe) -> tuple[int, int] | None:
    """(width, height) from a start-of-frame segment nvJPEG decodes as Pillow does, else None."""
    from core.data.readers import MAX_PIXELS
    precision, h, w, comps = sof[0], (sof[1] << 8) | sof[2], (sof[3] << 8) | sof[4], sof[5]
    if precision != 8 or comps not in (1, 3) or not w or not h or w * h > MAX_PIXELS:
        return None
    if comps == 3 and (adobe == 0 or sof[6:6 + 9:3] == b"RGB"):   # stored as RGB, not YCbCr
        return None
    return w, h


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag of IFD0 (1 when absent); None when the block cannot be read."""
    try:
        e = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(e + "I", tiff[4:8])
        (count,) = struct.unpack(e + "H", tiff[ifd:ifd + 2])
        for k in range(count):
            tag, typ, _, value = struct.unpack(e + "HHI4s", tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k])
            if tag == 0x0112:
                if typ != 3:                       # not a SHORT: leave it to Pillow
                    return None
                o = struct.unpack(e + "H", value[:2])[0]
                return o if 1 <= o <= 8 else 1
        return 1
    except (KeyError, struct.error):
        return None


def _draft_scale(w: int, h: int, size: int) -> int:
    """The DCT scale JpegImageFile.draft picks for draft("RGB", (size, size))."""
    scale = min(w // size, h // size)
    return next((s for s in (8, 4, 2) if scale >= s), 1)


@functools.lru_cache(maxsize=256)
def _coeffs(in_size: int, b0: float, b1: float, out_size: int) -> np.ndarray:
    """Pillow's BILINEAR resampling weights (precompute_coeffs + normalize_coeffs_8bpc) for the
    span [b0, b1) of an axis of in_size pixels: (out_size, in_size), integers in 22-bit fixed point."""
    scale = (b1 - b0) / out_size
    fs = max(scale, 1.0)
    support, ss = fs, 1.0 / fs              # bilinear support 1.0, widened when shrinking
    centre = b0 + (np.arange(out_size) + 0.5) * scale
    lo = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc(centre + support + 0.5), in_size).astype(np.int64)
    x = np.arange(in_size)
    w = np.clip(1.0 - np.abs((x[None, :] - centre[:, None] + 0.5) * ss), 0.0, None)
    w[(x[None, :] < lo[:, None]) | (x[None, :] >= hi[:, None])] = 0.0
    tot = w.sum(1, keepdims=True)
    w = np.divide(w, tot, out=np.zeros_like(w), where=tot != 0)
    return np.floor(w * (1 << 22) + 0.5)


def _reduce_t(x, f: int):
    """Image.reduce((f, f)) of (N, C, H, W) float64 8-bit values: box sums with Pillow's rounding
    (a float32 reciprocal in 24-bit fixed point), edge blocks over the pixels they have."""
    import torch
    import torch.nn.functional as F
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    sums = F.avg_pool2d(x, f, ceil_mode=True, divisor_override=1)
    n = F.avg_pool2d(ones, f, ceil_mode=True, divisor_override=1)
    mult = torch.floor(torch.tensor(2.0 ** 32, dtype=torch.float32, device=x.device) / (256 * n).float()).double()
    return torch.floor((sums + torch.floor(n / 2)) * mult / 2.0 ** 24)


def _orient_t(x, orientation: int):
    """ImageOps.exif_transpose on (N, C, H, W)."""
    import torch
    if orientation == 2:
        return x.flip(-1)
    if orientation == 3:
        return x.flip(-1, -2)
    if orientation == 4:
        return x.flip(-2)
    if orientation == 5:
        return x.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(x, -1, (-2, -1))
    if orientation == 7:
        return x.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return torch.rot90(x, 1, (-2, -1))
    return x


def _resize_square_t(x, size: int):
    """readers.resize_square on (N, C, H, W) 8-bit values (any float dtype, any device):
    -> (N, size, size, C) uint8."""
    import torch
    x = x.double()
    h, w = x.shape[-2:]
    s0 = min(w, h)
    box = [(w - s0) / 2, (h - s0) / 2, (w + s0) / 2, (h + s0) / 2]
    f = int(s0 / size / 2.0) or 1        # reducing_gap=2.0 (resize_square passes it when s0 >= 2 size)
    if f > 1:
        sup = 0.5 * s0 / size                                       # Image._get_safe_box
        rb = (max(0, int(box[0] - sup)), max(0, int(box[1] - sup)),
              min(w, math.ceil(box[2] + sup)), min(h, math.ceil(box[3] + sup)))
        x = _reduce_t(x[..., rb[1]:rb[3], rb[0]:rb[2]], f)
        box = [(box[0] - rb[0]) / f, (box[1] - rb[1]) / f, (box[2] - rb[0]) / f, (box[3] - rb[1]) / f]
        h, w = x.shape[-2:]
    kx = torch.from_numpy(_coeffs(w, box[0], box[2], size)).to(x.device)
    ky = torch.from_numpy(_coeffs(h, box[1], box[3], size)).to(x.device)
    half, one = float(1 << 21), float(1 << 22)
    x = torch.floor((x @ kx.T + half) / one).clamp_(0, 255)      # horizontal, then 8 bits
    x = torch.floor((ky @ x + half) / one).clamp_(0, 255)        # vertical
    return x.to(torch.uint8).permute(0, 2, 3, 1)


def _gpu_images(bufs: list, infos: list, size: int, device):
    """Decode and resize a batch: -> (uint8 (n, size, size, 3) on the host, list of bools: decoded)."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg
    dev = torch.device(device)
    data = [torch.frombuffer(b, dtype=torch.uint8) for b in bufs]
    if dev.type == "cuda":     # nvJPEG writes from a stream of its own that does not wait for ours: memory
        torch.cuda.current_stream(dev).synchronize()   # freed here may still be read there (pytorch/vision#9606)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # torchvision 0.29 deprecates its image io for TorchCodec
        try:
            imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=dev)
        except RuntimeError:                        # one bad file fails the batch: find it
            imgs = []
            for t in data:
                try:
                    imgs.append(decode_jpeg([t], mode=ImageReadMode.RGB, device=dev)[0])
                except RuntimeError:
                    imgs.append(None)
    ok = [im is not None and tuple(im.shape) == (3, info[1], info[0]) for im, info in zip(imgs, infos)]
    out = torch.empty((len(bufs), size, size, 3), dtype=torch.uint8, device=dev)
    groups: dict = {}
    for k, (good, info) in enumerate(zip(ok, infos)):
        if good:
            groups.setdefault(info, []).append(k)
    for (w, h, orientation), ks in groups.items():
        x = torch.stack([imgs[k] for k in ks]).float()
        s = _draft_scale(w, h, size)
        if s > 1:                                   # stands in for libjpeg's 1/s scaled IDCT
            x = torch.round(F.avg_pool2d(x, s, ceil_mode=True))
        out[ks] = _resize_square_t(_orient_t(x, orientation), size)
    return out.cpu().numpy(), ok


def _read(path: str):
    """(bytes, (w, h, orientation) or None) of a file; None, None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            buf = bytearray(os.fstat(f.fileno()).st_size)
            n = f.readinto(buf)
        buf = buf if n == len(buf) else buf[:n]
        return buf, _jpeg_info(buf)
    except (OSError, ValueError):
        return None, None


def _gpu_rows(fd: int, data: Path, todo: list[str], first: int, size: int, workers: int, device):
    """(ok, reason, crc) per path in order, each yielded once its row is in the file.

    Batches of GPU_BATCH paths, planned two ahead: threads read a batch's files for the GPU, or,
    while the CPU pool (all cores but two, which feed the GPU) has fewer than enough batches to
    keep busy, the whole batch goes to the pool, whose workers write their rows themselves. The
    GPU decodes and resizes its batches, threads write and checksum them, and the files nvJPEG
    does not take go to the CPU decoder. Results leave in order (the index commits a prefix)."""
    run = _GpuRun(fd, data, todo, first, size, workers, device)
    try:
        yield from run.rows()
    finally:
        run.close()


class _GpuRun:
    """The state of one _gpu_rows call. `plan`: batches started, (batch, "read", [read futures])
    or (batch, "pool", _PoolBatch); `done`: batches decoded whose rows are being written,
    (batch, "gpu", [write futures], {k: CPU result}) or (batch, "pool", _PoolBatch)."""

    def __init__(self, fd: int, data: Path, todo: list[str], first: int, size: int, workers: int, device):
        from concurrent.futures import ThreadPoolExecutor
        self.fd, self.data, self.todo, self.first, self.size = fd, data, todo, first, size
        self.workers, self.device = workers, device
        self.row_bytes = size * size * 3
        self.threads = ThreadPoolExecutor(max(4, min(32, workers)))
        share = GPU_WITH_POOL and workers >= 4 and len(todo) >= 4 * GPU_BATCH
        self.pool = _executor(workers - 2) if share else None
        self.pool_ahead = -(-(workers - 2) * cpu_pool.TASK // GPU_BATCH) + 1 if share else 0  # batches that keep it busy
        self.starts = list(range(0, len(todo), GPU_BATCH))
        self.plan: deque = deque()
        self.done: deque = deque()
        self.nxt = 0

    def rows(self):
        self.schedule()
        while self.plan:
            b, kind, h = self.plan.popleft()
            if kind == "pool":
                self.done.append((b, "pool", h))
                last_stats["cpu"] = last_stats.get("cpu", 0) + len(self.paths(b))
            else:
                got = [r.result() for r in h]
                self.schedule()            # the next batches' reads start before the GPU work
                self.done.append(self.decode(b, got))
            self.schedule()
            while self.done and (self.ready(self.done[0]) or len(self.done) > MAX_AHEAD):
                yield from self.finish(self.done.popleft())
        while self.done:
            yield from self.finish(self.done.popleft())

    def close(self):
        for e in self.plan:
            if e[1] == "read":
                for r in e[2]:
                    r.cancel()
        self.threads.shutdown(wait=True)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)   # tasks are a few images each

    def paths(self, b):
        return self.todo[self.starts[b]:self.starts[b] + GPU_BATCH]

    def items(self, b):
        return [(self.first + self.starts[b] + k, os.path.abspath(p)) for k, p in enumerate(self.paths(b))]

    def pool_busy(self):
        return sum(1 for e in itertools.chain(self.plan, self.done) if e[1] == "pool" and not e[2].ready())

    def schedule(self):
        while self.nxt < len(self.starts) and len(self.plan) < 2:
            if self.pool is not None and self.pool_busy() < self.pool_ahead:
                its, task = self.items(self.nxt), cpu_pool.TASK
                tasks = [(str(self.data), self.size, its[i:i + task]) for i in range(0, len(its), task)]
                self.plan.append((self.nxt, "pool", _PoolBatch(self.pool, tasks)))
            else:
                self.plan.append((self.nxt, "read", [self.threads.submit(_read, p) for p in self.paths(self.nxt)]))
            self.nxt += 1

    def decode(self, b, got):
        """Batch b's files (bytes, info) on the GPU, those it does not take on the CPU: -> its
        entry of `done`, its rows being written by threads (in 4 parts)."""
        start = self.starts[b]
        out, gpu_ok = self.on_gpu(got)
        rest = [k for k in range(len(got)) if not gpu_ok[k]]
        last_stats["gpu"] = last_stats.get("gpu", 0) + len(got) - len(rest)
        last_stats["cpu"] = last_stats.get("cpu", 0) + len(rest)
        cpu = dict(zip(rest, self.on_cpu(start, rest))) if rest else {}
        step = -(-len(got) // 4)
        return (b, "gpu", [self.threads.submit(self.write, out, gpu_ok, start, lo, min(lo + step, len(got)))
                           for lo in range(0, len(got), step)], cpu)

    def on_gpu(self, got):
        """-> (decoded rows or None, list of bools: decoded). Rows the GPU did not decode are
        never written from here."""
        out = None
        gpu_ok = np.zeros(len(got), bool)
        idx = np.array([k for k, (_, info) in enumerate(got) if info is not None], np.int64)
        for lo, hi in _pixel_batches([got[k][1] for k in idx]):
            part = idx[lo:hi]
            imgs, ok = _gpu_images([got[k][0] for k in part], [got[k][1] for k in part], self.size, self.device)
            ok = np.asarray(ok, bool)
            if len(part) == len(got):          # the common case: the whole batch, in order
                out = imgs
            else:
                out = np.empty((len(got), self.size, self.size, 3), np.uint8) if out is None else out
                out[part[ok]] = imgs[ok]
            gpu_ok[part[ok]] = True
        return out, gpu_ok.tolist()

    def on_cpu(self, start, rest):
        """The CPU decoder writes rows `rest` of the batch at `start` itself: -> their results."""
        its = [(self.first + start + k, os.path.abspath(self.todo[start + k])) for k in rest]
        if len(rest) > 8 and self.workers > 1:
            self.pool = self.pool or _executor(self.workers)
            tasks = [(str(self.data), self.size, its[i:i + 4]) for i in range(0, len(its), 4)]
            return [r for chunk in _PoolBatch(self.pool, tasks).get() for r in chunk]
        return _decode_rows((str(self.data), self.size, its))

    def write(self, out, gpu_ok, start, lo, hi):
        """GPU rows lo..hi of a batch, in runs of consecutive rows (the CPU decoder wrote its
        own); -> crc of each (None for the CPU's). Several run at once: pwrite and crc32 let go
        of the GIL."""
        k = lo
        while k < hi:
            if not gpu_ok[k]:
                k += 1
                continue
            j = k
            while j < hi and gpu_ok[j]:
                j += 1
            _pwrite(self.fd, out[k:j], (self.first + start + k) * self.row_bytes)
            k = j
        return [zlib.crc32(out[k]) if gpu_ok[k] else None for k in range(lo, hi)]

    @staticmethod
    def ready(e):
        return e[2].ready() if e[1] == "pool" else all(f.done() for f in e[2])

    @staticmethod
    def finish(e):
        if e[1] == "pool":
            yield from (r for chunk in e[2].get() for r in chunk)
            return
        crcs = [c for fut in e[2] for c in fut.result()]
        for k, crc in enumerate(crcs):
            yield (True, "", crc) if crc is not None else e[3][k]


class _PoolBatch:
    """One batch's tasks in the CPU pool. The pool is an executor, not mp.Pool: a worker that dies
    breaks it with an error (mp.Pool replaced dead workers for ever while the batch waited: a hang seen
    in the test suite); the tasks it did not finish are then decoded in this process (each task writes
    its own rows, so decoding one again is harmless)."""

    def __init__(self, pool, tasks: list):
        self.tasks = tasks
        try:
            self.futures = [pool.submit(_decode_rows, t) for t in tasks]
        except BrokenProcessPool:
            self.futures = []

    def ready(self) -> bool:
        return all(f.done() for f in self.futures)

    def get(self) -> list:
        out = []
        for k, task in enumerate(self.tasks):
            try:
                out.append(self.futures[k].result() if k < len(self.futures) else _decode_rows(task))
            except BrokenProcessPool:
                out.append(_decode_rows(task))
        return out


def _pixel_batches(infos: list) -> list[tuple[int, int]]:
    """[lo, hi) ranges of `infos` with at most GPU_BATCH_PIXELS decoded pixels each."""
    out, lo, px = [], 0, 0
    for k, (w, h, _) in enumerate(infos):
        if k > lo and px + w * h > GPU_BATCH_PIXELS:
            out.append((lo, k))
            lo, px = k, 0
        px += w * h
    if lo < len(infos):
        out.append((lo, len(infos)))
    return out
