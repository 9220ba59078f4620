"""Decode each image once, per data set and image size, into a memory-mapped uint8 array.

JPEG decoding is the wall when training from photos (see docs/BENCHMARKS.md): a plain
ImageFolder pipeline decodes every full-size JPEG again at every epoch. Here each image is
decoded once with libjpeg's DCT-domain downscaling (`Image.draft`), EXIF-oriented, resized
(shorter side) and centre-cropped to size x size, and appended to `images.u8`. The store is
incremental (only new or changed files are decoded), resumable (the index is committed in
chunks), parallel over cores, and invalid rows for files whose size or mtime changed are
re-decoded. Unreadable files are recorded with the reason: that is the scan report.

The index is the truth, the data file is not: a crash or a full disk can leave images.u8 with a
torn tail, or shorter than the index says, or with rows the disk lost. So rows are written at the
offset the index says, an uncommitted tail is cut off when the store is opened, and each row's
crc32 (in the index) is checked for the rows a call returns; a row that fails is decoded again.

Scaling (issue 11). On the CPU a process pool of one worker per usable core decodes runs of
paths and writes each row itself, at the offset the index will give it, returning only
(ok, reason, crc) per image: the parent no longer unpickles, checksums and writes every 150 KB
row and looks its file up in pandas (that serial work, 0.5-0.8 ms an image on a 2-core VM, is what
held 16 cores to 5x one core in issue 11). Workers are forked from a forkserver that imported this
module once, instead of each spawned worker importing pandas and re-running the caller's main
module. The index is committed after at least a quarter of its size more rows, not every 512: a
commit rewrites the whole index (0.8 s at a million rows). On CUDA (`device=`), JPEGs are decoded in
batches by nvJPEG and resized on the GPU by the same rule as the CPU path (see `_gpu_rows`);
files nvJPEG should not take (PNG, CMYK, 12-bit, lossless, arithmetic-coded, EXIF orientation in
XMP, no end marker, ...) go to the CPU decoder and keep its unreadable-file reasons.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import itertools
import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import os
import struct
import warnings
import zlib
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.paths import cache_dir, ensure_dir, writing

CHUNK = 512  # images decoded between index commits (at least; see _decode_into)
COMPACT_MIN_ROWS = 1024  # stores smaller than this are never compacted
SCAN_SIZE = 32  # px: scans (and the plain pipeline's check of every file) decode at this size
AUTO_SCAN_IMAGES = 5000  # scans (decode-once checks) up to this many images run without being asked
NO_CRC = -1  # rows from before checksums were kept: not trusted, decoded again when asked for
CACHE_FIX = "make it writable or set LANDMARKS_HOME to a writable folder"
POOL_MIN = 256  # fewer images than this are decoded in this process (a pool's start costs ~0.3 s)
TASK = 32  # images per pool task: 32 paths out, 32 (ok, reason, crc) back
GPU_BATCH = 256  # images per nvJPEG batch
GPU_BATCH_PIXELS = 100_000_000  # and at most this many decoded pixels per batch (GPU memory)
BATCHED_ON_CPU = False  # tests: run the batched (GPU) code path with torchvision's CPU decoder
GPU_WITH_POOL = True  # with CUDA, a CPU pool decodes whole batches too whenever it is idle
MAX_AHEAD = 64  # batches decoded but not yet committed (waiting for an earlier pool batch)
last_stats: dict = {}  # how the last prepare() decoded: {"how": "gpu"|"pool"|"serial", "gpu": n, "cpu": n}


@dataclass
class Prepared:
    store: np.ndarray           # (rows, size, size, 3) uint8 memmap of the whole store
    rows: np.ndarray            # (n,) row in `store` of each requested path
    ok: np.ndarray              # (n,) bool: decoded fine
    reasons: list               # (path, reason) for files that could not be read
    decoded: int                # images decoded in this call (0 when all were cached)

    def images(self, idx=None) -> np.ndarray:
        """Decoded images of the requested paths (a copy in memory)."""
        r = self.rows if idx is None else self.rows[idx]
        return np.asarray(self.store[r])


def _decode(args):
    """Worker: path -> (bytes | None, reason). Kept import-light for spawned workers."""
    path, size = args
    from core.data.readers import open_image, resize_square
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file (0 bytes)"
        im = resize_square(open_image(path, draft=size), size)
        return im.tobytes(), ""               # packed RGB rows: what np.asarray(im).tobytes() gave
    except FileNotFoundError:
        return None, "file not found"
    except Exception as e:  # noqa: BLE001 - any decoder failure makes the file unusable
        return None, f"{type(e).__name__}: {e}".strip()[:200]


def store_dir(key: str, size: int) -> Path:
    h = hashlib.sha1(str(key).encode()).hexdigest()[:12]
    return ensure_dir(cache_dir() / "prepared" / f"{h}_{size}", "prepared-image cache", CACHE_FIX)


@contextmanager
def _locked(d: Path):
    with open(d / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two runs preparing the same data set take turns
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _file_sig(paths: list[str]) -> pd.DataFrame:
    rows = []
    for p in paths:
        try:
            st = os.stat(p)
            rows.append((st.st_size, st.st_mtime_ns))
        except (OSError, ValueError):  # ValueError: a NUL byte in the path; the decode reports it
            rows.append((-1, -1))
    return pd.DataFrame(rows, columns=["fsize", "mtime"], index=pd.Index(paths, name="path"))


def _load_index(d: Path) -> pd.DataFrame:
    f = d / "index.parquet"
    if f.exists():
        index = pd.read_parquet(f).set_index("path")
        return index if "crc" in index else index.assign(crc=NO_CRC)  # an index from before checksums
    return pd.DataFrame(columns=["fsize", "mtime", "row", "ok", "reason", "crc"],
                        index=pd.Index([], name="path")).astype(
        {"fsize": "int64", "mtime": "int64", "row": "int64", "ok": bool, "reason": str, "crc": "int64"})


def _save_index(d: Path, index: pd.DataFrame) -> None:
    tmp = d / "index.parquet.tmp"
    try:
        index.reset_index().to_parquet(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written index on a full disk only takes space
        raise
    os.replace(tmp, d / "index.parquet")


def _open_store(d: Path, row_bytes: int) -> pd.DataFrame:
    """The index, with images.u8 cut to the rows it commits: a tail a crash or a full disk left
    behind is dropped, and index rows the file no longer holds (it was truncated) are forgotten."""
    index = _load_index(d)
    data = d / "images.u8"
    have = os.path.getsize(data) // row_bytes if data.exists() else 0
    lost = index["row"].to_numpy() >= have
    if lost.any():
        index = index[~lost]
        _save_index(d, index)  # first: a crash before the truncate below leaves a tail, cut next time
    committed = _committed(index)
    if data.exists() and os.path.getsize(data) != committed * row_bytes:
        os.truncate(data, committed * row_bytes)
    return index


def _committed(index: pd.DataFrame) -> int:
    """Rows the index commits: new rows always go after the last one, so that is max row + 1."""
    return int(index["row"].max()) + 1 if len(index) else 0


def _stale(index: pd.DataFrame, sig: pd.DataFrame) -> list[str]:
    """Paths that are new, or whose file changed since it was decoded."""
    known = index.reindex(sig.index)
    stale = (known["fsize"].ne(sig["fsize"]) | known["mtime"].ne(sig["mtime"])).to_numpy()
    return list(sig.index[stale])


def _file_stamp(data: Path) -> str:
    st = os.stat(data)
    return f"{st.st_size}:{st.st_mtime_ns}"


def _verified(d: Path, index: pd.DataFrame, row_bytes: int) -> pd.DataFrame:
    """The index less the rows whose checksum fails (they are decoded again when asked for).
    The full pass runs only when images.u8 changed since the last one: `verified` holds the
    file's size and mtime as it was then, and this module's own writes (under the lock, from
    bytes whose checksum it just took) renew it. Reading a whole GLDv2-scale store at every
    run's start would cost more than the training it feeds."""
    data, stamp = d / "images.u8", d / "verified"
    if not data.exists() or (stamp.exists() and stamp.read_text() == _file_stamp(data)):
        return index
    ok = _crc_rows(d, index["row"].to_numpy(np.int64), row_bytes) == index["crc"].to_numpy(np.int64)
    if not ok.all():
        index = index[ok]
        _save_index(d, index)
    _renew_stamp(d)
    return index


def _renew_stamp(d: Path) -> None:
    data = d / "images.u8"
    if data.exists():
        tmp = d / "verified.tmp"
        tmp.write_text(_file_stamp(data))
        os.replace(tmp, d / "verified")


def _crc_rows(d: Path, rows: np.ndarray, row_bytes: int) -> np.ndarray:
    """crc32 of each row, read in file order (crc32 runs at GB/s: the disk is the cost)."""
    out = np.empty(len(rows), np.int64)
    if not len(rows):
        return out
    data = np.memmap(d / "images.u8", dtype=np.uint8, mode="r").reshape(-1, row_bytes)
    for i in np.argsort(rows, kind="stable"):
        out[i] = zlib.crc32(data[rows[i]])
    return out


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:                 # macOS
        n = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _pwrite(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _decode_rows(args):
    """Worker: decode each (row, path) and write it into images.u8 at its row; returns
    [(ok, reason, crc)]. The parent commits the rows to the index after this returns."""
    data, size, items = args
    row_bytes = size * size * 3
    blank = bytes(row_bytes)
    out = []
    fd = os.open(data, os.O_WRONLY)
    try:
        for row, path in items:
            buf, reason = _decode((path, size))
            ok = buf is not None
            buf = buf if ok else blank
            _pwrite(fd, buf, row * row_bytes)
            out.append((ok, reason, zlib.crc32(buf)))
    finally:
        os.close(fd)
    return out


def _context():
    """forkserver: each worker is forked from a clean server process that imported this module
    once (spawn made every worker import pandas and re-run the caller's __main__); never fork the
    caller itself, which may hold CUDA/OpenMP state."""
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        ctx.set_forkserver_preload(["core.data.prepared", "core.data.readers"])
    return ctx


def _pool(workers: int):
    """A multiprocessing pool (the GPU path shares whole batches with it)."""
    return _context().Pool(workers)


def _executor(workers: int):
    """The CPU path's pool. An executor, not mp.Pool: a worker that dies (a caller script without
    `if __name__ == "__main__":` kills each one at start) breaks it with an error, where mp.Pool
    would replace it for ever and hang."""
    return ProcessPoolExecutor(workers, mp_context=_context())


def _pool_rows(data: Path, todo: list[str], first: int, size: int, workers: int):
    """(ok, reason, crc) per path in order, each yielded once its row is in the file. If the pool
    breaks, this process decodes what is left."""
    items = [(first + i, os.path.abspath(p)) for i, p in enumerate(todo)]
    tasks = [(str(data), size, items[i:i + TASK]) for i in range(0, len(items), TASK)]
    done = 0
    try:
        with _executor(min(workers, len(tasks))) as pool:
            for res in pool.map(_decode_rows, tasks):
                done += 1
                yield from res
    except BrokenProcessPool:
        for task in tasks[done:]:
            yield from _decode_rows(task)


def _serial_rows(f, todo: list[str], size: int, row_bytes: int):
    """In this process, written through `f` (positioned at the first new row)."""
    blank = bytes(row_bytes)
    for p in todo:
        buf, reason = _decode((p, size))
        row = buf if buf is not None else blank
        _write_row(f, row)
        yield buf is not None, reason, zlib.crc32(row)


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


def prepare(paths: list[str], size: int, key: str, workers: int = 0, progress=None, device=None) -> Prepared:
    """Make sure every path is decoded at `size` in the store for `key`; return aligned rows.
    `workers`: CPU processes (0 = one per usable core). `device`: a CUDA device (torch.device or
    "cuda"/"cuda:N") decodes JPEGs there with nvJPEG; None, the CPU or a machine without CUDA
    decodes on the CPU (today's behaviour). Pass it only from a process that holds CUDA anyway
    (training): creating a CUDA context costs seconds and GPU memory for the process's life."""
    if getattr(mp.current_process(), "_inheriting", False):
        # a decoding worker is importing the caller's script (no `if __name__ == "__main__":`):
        # waiting for the store's lock, which the caller holds, would hang both; the worker dies
        # instead, and the caller decodes in its own process
        raise RuntimeError("prepare() called while a worker process starts; guard the script's top level "
                           "with `if __name__ == \"__main__\":`.")
    d = store_dir(key, size)
    workers = workers or usable_cores()
    if isinstance(device, str) and device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else None
    row_bytes = size * size * 3
    # a full disk or a cache that cannot be written is a sentence; the store is left consistent
    with writing(d, "prepared-image cache", CACHE_FIX), _locked(d):
        if (d / "compacting").exists():    # a compaction was cut off: data and index may disagree
            for f in ("images.u8", "index.parquet", "compacting"):
                (d / f).unlink(missing_ok=True)
        index = _verified(d, _open_store(d, row_bytes), row_bytes)
        sig = _file_sig(list(dict.fromkeys(paths)))   # a path asked for twice is decoded once
        todo = _stale(index, sig)
        index = _decode_into(d, index, sig, todo, size, row_bytes, workers, progress, device)
        decoded = len(todo)
        if decoded:
            index = _compact(d, index, row_bytes)
            _renew_stamp(d)            # rows written here were checksummed as they were written
        rows = index.loc[paths]
        n_rows = os.path.getsize(d / "images.u8") // row_bytes if (d / "images.u8").exists() else 0
        # opened under the lock: a compaction by another process cannot swap the file in between
        store = (np.memmap(d / "images.u8", dtype=np.uint8, mode="r", shape=(n_rows, size, size, 3))
                 if n_rows else np.zeros((0, size, size, 3), np.uint8))
    ok = rows["ok"].to_numpy(dtype=bool)
    reasons = list(dict.fromkeys((p, r) for p, r, good in zip(rows.index, rows["reason"], ok) if not good))
    return Prepared(store, rows["row"].to_numpy(dtype=np.int64), ok, reasons, decoded)



def _compact(d: Path, index: pd.DataFrame, row_bytes: int) -> pd.DataFrame:
    """Rewrite the store without dead rows (files changed since, re-decoded into new rows) once
    they are at least half of it. Processes still training keep their mapping of the old file
    (os.replace leaves it intact for them); new readers get the new file and index together."""
    data = d / "images.u8"
    n_rows = os.path.getsize(data) // row_bytes if data.exists() else 0
    live = np.sort(index["row"].to_numpy(dtype=np.int64))
    if n_rows < COMPACT_MIN_ROWS or len(live) > n_rows / 2:
        return index
    tmp = d / "images.u8.tmp"
    src = np.memmap(data, dtype=np.uint8, mode="r", shape=(n_rows, row_bytes))
    try:
        with open(tmp, "wb") as f:
            for i in range(0, len(live), 1024):
                f.write(np.ascontiguousarray(src[live[i:i + 1024]]).tobytes())
    except BaseException:
        tmp.unlink(missing_ok=True)    # a half-written copy on a full disk only takes space
        raise
    del src
    new_row = pd.Series(np.arange(len(live)), index=live)
    index = index.assign(row=new_row.loc[index["row"].to_numpy()].to_numpy())
    marker = d / "compacting"          # data and index are replaced one after the other: a crash in
    marker.touch()                     # between leaves this marker, and the store is rebuilt
    os.replace(tmp, data)
    _save_index(d, index)
    marker.unlink()
    return index


def _decode_into(d, index, sig, todo, size, row_bytes, workers, progress, device=None) -> pd.DataFrame:
    """Write decoded rows for `todo` after the committed ones, committing the index every CHUNK
    images; returns the index. Rows may be written ahead of the commit (by pool workers, or a GPU
    batch): an uncommitted tail is cut off when the store is next opened."""
    if not todo:
        return index
    first = _committed(index)
    fsize, mtime = (sig[c].reindex(todo).to_numpy(np.int64) for c in ("fsize", "mtime"))
    pending = []
    data = d / "images.u8"
    with os.fdopen(os.open(data, os.O_RDWR | os.O_CREAT, 0o644), "r+b") as f:
        f.seek(first * row_bytes)      # where the index says, never the end a crash may have torn
        last_stats.clear()
        if _cuda_ok(device):
            last_stats.update(how="gpu", gpu=0, cpu=0, workers=workers)
            rows = _gpu_rows(f.fileno(), data, todo, first, size, workers, device)
        elif workers > 1 and len(todo) >= POOL_MIN:
            last_stats.update(how="pool", gpu=0, cpu=len(todo), workers=workers)
            rows = _pool_rows(data, todo, first, size, workers)
        else:
            last_stats.update(how="serial", gpu=0, cpu=len(todo), workers=1)
            rows = _serial_rows(f, todo, size, row_bytes)
        try:
            for i, (ok, reason, crc) in enumerate(rows):
                pending.append((todo[i], int(fsize[i]), int(mtime[i]), first + i, ok, reason, crc))
                # each commit rewrites the whole index: at least a quarter of it between commits keeps
                # that linear in the store's size (a crash loses at most a fifth of the work)
                if len(pending) >= max(CHUNK, len(index) // 4) or i == len(todo) - 1:
                    f.flush()          # the rows reach the file before the index that commits them
                    index = _commit(d, index, pending)
                    pending = []
                if progress:
                    progress(i + 1, len(todo))
        finally:
            rows.close()               # a cancel (progress raised) stops the pool or GPU reader now
    return index


def _write_row(f, row: bytes) -> None:
    f.write(row)


def _commit(d: Path, index: pd.DataFrame, pending: list) -> pd.DataFrame:
    new = pd.DataFrame(pending, columns=["path", "fsize", "mtime", "row", "ok", "reason", "crc"]).set_index("path")
    index = pd.concat([index.drop(new.index, errors="ignore"), new])
    _save_index(d, index)
    return index


# ------------------------------------------------------------------ decoding on the GPU (nvJPEG)
#
# The CPU path is: libjpeg decodes at 1/s scale (Image.draft: s is the largest of 8, 4, 2, 1 that
# leaves both sides >= size), EXIF orientation, then Pillow's BILINEAR resize of the centred
# square box (with its `reduce` pre-step when the box is >= 2x size). Here nvJPEG decodes at full
# scale, an s x s average stands in for libjpeg's scaled IDCT (the one approximate step: mean
# |difference| ~0.5 grey level at 640x480 -> 224), and Pillow's resize is reproduced exactly:
# the same filter weights in its 22-bit fixed point, summed in float64 (exact for these
# integers), horizontal pass first, rounded to 8 bits in between.

_SOF_OK = {0xC0, 0xC2}                  # baseline and progressive Huffman: what nvJPEG decodes
_SOF_ALL = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_XMP = b"http://ns.adobe.com/xap/1.0/"


def _jpeg_info(b) -> tuple[int, int, int] | None:
    """(width, height, EXIF orientation) of a JPEG that nvJPEG can decode as the CPU path would;
    None sends the file to the CPU decoder (which gives the reason if it is unreadable)."""
    from core.data.readers import MAX_PIXELS
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
    if sof is None or len(sof) < 6:
        return None
    precision, h, w, comps = sof[0], (sof[1] << 8) | sof[2], (sof[3] << 8) | sof[4], sof[5]
    if precision != 8 or comps not in (1, 3) or not w or not h or w * h > MAX_PIXELS:
        return None
    if comps == 3 and (adobe == 0 or sof[6:6 + 9:3] == b"RGB"):   # stored as RGB, not YCbCr
        return None
    if xmp and orientation == 1:
        return None
    return w, h, orientation


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
    from concurrent.futures import ThreadPoolExecutor
    row_bytes = size * size * 3
    threads = ThreadPoolExecutor(max(4, min(32, workers)))
    share = GPU_WITH_POOL and workers >= 4 and len(todo) >= 4 * GPU_BATCH
    pool = _pool(workers - 2) if share else None
    pool_ahead = -(-(workers - 2) * TASK // GPU_BATCH) + 1 if share else 0   # batches that keep it busy
    starts = list(range(0, len(todo), GPU_BATCH))
    plan: deque = deque()              # (batch, "read", [futures]) or (batch, "pool", AsyncResult)
    done: deque = deque()              # (batch, "gpu", [write futures], {k: cpu result}) or (batch, "pool", ...)
    nxt = 0

    def items(b):
        return [(first + starts[b] + k, os.path.abspath(p)) for k, p in enumerate(todo[starts[b]:starts[b] + GPU_BATCH])]

    def pool_busy():
        return sum(1 for e in itertools.chain(plan, done) if e[1] == "pool" and not e[2].ready())

    def schedule():
        nonlocal nxt
        while nxt < len(starts) and len(plan) < 2:
            if pool is not None and pool_busy() < pool_ahead:
                its = items(nxt)
                tasks = [(str(data), size, its[i:i + TASK]) for i in range(0, len(its), TASK)]
                plan.append((nxt, "pool", pool.map_async(_decode_rows, tasks)))
            else:
                plan.append((nxt, "read", [threads.submit(_read, p) for p in todo[starts[nxt]:starts[nxt] + GPU_BATCH]]))
            nxt += 1

    def write(out, gpu_ok, start, lo, hi):
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
            _pwrite(fd, out[k:j], (first + start + k) * row_bytes)
            k = j
        return [zlib.crc32(out[k]) if gpu_ok[k] else None for k in range(lo, hi)]

    def ready(e):
        return e[2].ready() if e[1] == "pool" else all(f.done() for f in e[2])

    def finish(e):
        if e[1] == "pool":
            yield from (r for chunk in e[2].get() for r in chunk)
            return
        crcs = [c for fut in e[2] for c in fut.result()]
        for k, crc in enumerate(crcs):
            yield (True, "", crc) if crc is not None else e[3][k]

    try:
        schedule()
        while plan:
            b, kind, h = plan.popleft()
            if kind == "pool":
                done.append((b, "pool", h))
                last_stats["cpu"] = last_stats.get("cpu", 0) + len(todo[starts[b]:starts[b] + GPU_BATCH])
            else:
                got = [r.result() for r in h]
                schedule()                 # the next batches' reads start before the GPU work
                start = starts[b]
                out = None                 # rows the GPU did not decode are never written from here
                gpu_ok = np.zeros(len(got), bool)
                idx = np.array([k for k, (_, info) in enumerate(got) if info is not None], np.int64)
                for lo, hi in _pixel_batches([got[k][1] for k in idx]):
                    part = idx[lo:hi]
                    imgs, ok = _gpu_images([got[k][0] for k in part], [got[k][1] for k in part], size, device)
                    ok = np.asarray(ok, bool)
                    if len(part) == len(got):          # the common case: the whole batch, in order
                        out = imgs
                    else:
                        out = np.empty((len(got), size, size, 3), np.uint8) if out is None else out
                        out[part[ok]] = imgs[ok]
                    gpu_ok[part[ok]] = True
                gpu_ok = gpu_ok.tolist()
                rest = [k for k in range(len(got)) if not gpu_ok[k]]
                last_stats["gpu"] = last_stats.get("gpu", 0) + len(got) - len(rest)
                last_stats["cpu"] = last_stats.get("cpu", 0) + len(rest)
                cpu = {}
                if rest:
                    its = [(first + start + k, os.path.abspath(todo[start + k])) for k in rest]
                    if len(rest) > 8 and workers > 1:
                        pool = pool or _pool(workers)
                        tasks = [(str(data), size, its[i:i + 4]) for i in range(0, len(its), 4)]
                        res = [r for chunk in pool.map(_decode_rows, tasks) for r in chunk]
                    else:
                        res = _decode_rows((str(data), size, its))
                    cpu = dict(zip(rest, res))
                step = -(-len(got) // 4)
                done.append((b, "gpu", [threads.submit(write, out, gpu_ok, start, lo, min(lo + step, len(got)))
                                        for lo in range(0, len(got), step)], cpu))
            schedule()
            while done and (ready(done[0]) or len(done) > MAX_AHEAD):
                yield from finish(done.popleft())
        while done:
            yield from finish(done.popleft())
    finally:
        for e in plan:
            if e[1] == "read":
                for r in e[2]:
                    r.cancel()
        threads.shutdown(wait=True)
        if pool is not None:
            pool.terminate()


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
