"""Decode each image once, per data set and image size, into a memory-mapped uint8 array.

JPEG decoding is the wall when training from photos (see docs/BENCHMARKS.md): a plain
ImageFolder pipeline decodes every full-size JPEG again at every epoch. Here each image is
decoded once with libjpeg's DCT-domain downscaling (`Image.draft`), EXIF-oriented, resized
(shorter side) and centre-cropped to size x size, and appended to `images.u8`. The store is
incremental (only new or changed files are decoded), resumable (the index is committed in
chunks), parallel over cores, and invalid rows for files whose size or mtime changed are
re-decoded. Unreadable files are recorded with the reason: that is the scan report.
"""
from __future__ import annotations

import fcntl
import hashlib
import multiprocessing as mp
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.paths import cache_dir

CHUNK = 512  # images decoded between index commits
COMPACT_MIN_ROWS = 1024  # stores smaller than this are never compacted
AUTO_SCAN_IMAGES = 5000  # scans (decode-once checks) up to this many images run without being asked


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
        return np.asarray(im, dtype=np.uint8).tobytes(), ""
    except FileNotFoundError:
        return None, "file not found"
    except Exception as e:  # noqa: BLE001 - any decoder failure makes the file unusable
        return None, f"{type(e).__name__}: {e}".strip()[:200]


def store_dir(key: str, size: int) -> Path:
    h = hashlib.sha1(str(key).encode()).hexdigest()[:12]
    d = cache_dir() / "prepared" / f"{h}_{size}"
    d.mkdir(parents=True, exist_ok=True)
    return d


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
        except OSError:
            rows.append((-1, -1))
    return pd.DataFrame(rows, columns=["fsize", "mtime"], index=pd.Index(paths, name="path"))


def _load_index(d: Path) -> pd.DataFrame:
    f = d / "index.parquet"
    if f.exists():
        return pd.read_parquet(f).set_index("path")
    return pd.DataFrame(columns=["fsize", "mtime", "row", "ok", "reason"],
                        index=pd.Index([], name="path")).astype(
        {"fsize": "int64", "mtime": "int64", "row": "int64", "ok": bool, "reason": str})


def _save_index(d: Path, index: pd.DataFrame) -> None:
    tmp = d / "index.parquet.tmp"
    index.reset_index().to_parquet(tmp)
    os.replace(tmp, d / "index.parquet")


def _pool_map(todo: list[str], size: int, workers: int):
    args = [(p, size) for p in todo]
    if workers <= 1 or len(todo) < 256:
        yield from map(_decode, args)
        return
    # spawn: the parent may hold CUDA/OpenMP state that must not be forked
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_decode, args, chunksize=16)


def prepare(paths: list[str], size: int, key: str, workers: int = 0, progress=None) -> Prepared:
    """Make sure every path is decoded at `size` in the store for `key`; return aligned rows."""
    d = store_dir(key, size)
    workers = workers or os.cpu_count() or 1
    row_bytes = size * size * 3
    with _locked(d):
        if (d / "compacting").exists():    # a compaction was cut off: data and index may disagree
            for f in ("images.u8", "index.parquet", "compacting"):
                (d / f).unlink(missing_ok=True)
        index = _load_index(d)
        sig = _file_sig(paths)
        known = index.reindex(sig.index)
        stale = known["fsize"].ne(sig["fsize"]) | known["mtime"].ne(sig["mtime"])
        todo = list(dict.fromkeys(sig.index[stale.to_numpy()]))
        decoded = _decode_into(d, index, sig, todo, size, row_bytes, workers, progress)
        index = _load_index(d)
        if decoded:
            index = _compact(d, index, row_bytes)
        rows = index.loc[paths]
        n_rows = os.path.getsize(d / "images.u8") // row_bytes if (d / "images.u8").exists() else 0
        # opened under the lock: a compaction by another process cannot swap the file in between
        store = (np.memmap(d / "images.u8", dtype=np.uint8, mode="r", shape=(n_rows, size, size, 3))
                 if n_rows else np.zeros((0, size, size, 3), np.uint8))
    ok = rows["ok"].to_numpy(dtype=bool)
    reasons = [(p, r) for p, r, good in zip(rows.index, rows["reason"], ok) if not good]
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
    with open(tmp, "wb") as f:
        for i in range(0, len(live), 1024):
            f.write(np.ascontiguousarray(src[live[i:i + 1024]]).tobytes())
    del src
    new_row = pd.Series(np.arange(len(live)), index=live)
    index = index.assign(row=new_row.loc[index["row"].to_numpy()].to_numpy())
    marker = d / "compacting"          # data and index are replaced one after the other: a crash in
    marker.touch()                     # between leaves this marker, and the store is rebuilt
    os.replace(tmp, data)
    _save_index(d, index)
    marker.unlink()
    return index


def _decode_into(d, index, sig, todo, size, row_bytes, workers, progress) -> int:
    """Append decoded rows for `todo` to images.u8, committing the index every CHUNK images."""
    if not todo:
        return 0
    data = d / "images.u8"
    with open(data, "ab") as f:
        next_row = f.tell() // row_bytes
        blank = bytes(row_bytes)
        pending = []
        for i, (buf, reason) in enumerate(_pool_map(todo, size, workers)):
            f.write(buf if buf is not None else blank)
            p = todo[i]
            pending.append((p, int(sig.at[p, "fsize"]), int(sig.at[p, "mtime"]), next_row, buf is not None, reason))
            next_row += 1
            if len(pending) >= CHUNK or i == len(todo) - 1:
                f.flush()
                new = pd.DataFrame(pending, columns=["path", "fsize", "mtime", "row", "ok", "reason"]).set_index("path")
                index = pd.concat([index.drop(new.index, errors="ignore"), new])
                _save_index(d, index)
                pending = []
            if progress:
                progress(i + 1, len(todo))
    return len(todo)
