"""prepare(): make the store hold every path asked for, decoding what it lacks (new files, or
files whose size or mtime changed) on the GPU, in the CPU pool or in this process, and committing
the index in chunks so that a crash loses little work."""
from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pandas as pd

from core.data.prepared.gpu import _cuda_ok, _gpu_rows
from core.data.prepared.jpeg import prepare_jpeg
from core.data.prepared.pool import _pool_rows, _serial_rows, last_stats, usable_cores
from core.data.prepared.store import (CACHE_FIX, Prepared, _commit, _committed, _compact, _file_sig, _locked,
                                      _open_store, _recover, _recover_others, _renew_stamp, _stale, _verified, store_dir)
from core.errors import writing

CHUNK = 512  # images decoded between index commits (at least; see _decode_into)
POOL_MIN = 256  # fewer images than this are decoded in this process (a pool's start costs ~0.3 s)
# "auto" keeps the raw store up to this size (2 x 10^5 images at 224 px, 2.8 M at 64 px): below it
# the store stays in a training machine's page cache and needs no decoding; above it the JPEG
# store is 7-18x smaller (docs/BENCHMARKS.md): an epoch reads that many fewer bytes from disk
RAW_MAX_BYTES = 32 * 2 ** 30
STORES = ("raw", "jpeg")


def choose_store(setting: str, images: int, size: int) -> tuple[str, str]:
    """(store, why): "raw" or "jpeg" as set, or by RAW_MAX_BYTES for "auto"."""
    raw = images * size * size * 3
    gb = f"{raw / 1e9:.3g} GB"
    if setting in STORES:
        return setting, f"{setting} store (as set; the raw store would take {gb})"
    if raw <= RAW_MAX_BYTES:
        return "raw", f"raw store (auto: {gb}, up to {RAW_MAX_BYTES / 2 ** 30:.0f} GiB)"
    return "jpeg", f"jpeg store (auto: the raw store would take {gb}, over {RAW_MAX_BYTES / 2 ** 30:.0f} GiB)"


def prepare(paths: list[str], size: int, key: str, workers: int = 0, progress=None, device=None,
            store: str = "raw") -> Prepared:
    """Make sure every path is decoded at `size` in the store for `key`; return aligned rows.
    `workers`: CPU processes (0 = one per usable core). `device`: a CUDA device (torch.device or
    "cuda"/"cuda:N") decodes JPEGs there with nvJPEG; None, the CPU or a machine without CUDA
    decodes on the CPU (today's behaviour). Pass it only from a process that holds CUDA anyway
    (training): creating a CUDA context costs seconds and GPU memory for the process's life.
    `store` "jpeg": the compressed store (core.data.prepared.jpeg; prepared on the CPU)."""
    if getattr(mp.current_process(), "_inheriting", False):
        # a decoding worker is importing the caller's script (no `if __name__ == "__main__":`):
        # waiting for the store's lock, which the caller holds, would hang both; the worker dies
        # instead, and the caller decodes in its own process
        raise RuntimeError("prepare() called while a worker process starts; guard the script's top level "
                           "with `if __name__ == \"__main__\":`.")
    if store == "jpeg":
        return prepare_jpeg(paths, size, key, workers, progress, CHUNK, POOL_MIN)
    d = store_dir(key, size)
    workers = workers or usable_cores()
    if isinstance(device, str) and device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else None
    row_bytes = size * size * 3
    # a full disk or a cache that cannot be written is a sentence; the store is left consistent
    with writing(d, "prepared-image cache", CACHE_FIX), _locked(d):
        _recover(d)                    # what a crash left here, and in stores no one uses now
        _recover_others(d)
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
