"""The prepared store on disk and its index: one folder per (data set, image size) holding
images.u8 (one row of size x size x 3 uint8 per image) and index.parquet (path -> file size,
mtime, row, ok, reason, crc32), under a lock.

The index is the truth, the data file is not: a crash or a full disk can leave images.u8 with a
torn tail, or shorter than the index says, or with rows the disk lost. So rows are written at the
offset the index says, an uncommitted tail is cut off when the store is opened, and each row's
crc32 (in the index) is checked for the rows a call returns; a row that fails is decoded again.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.files import atomic_output, atomic_write, file_lock
from core.paths import cache_dir, ensure_dir

COMPACT_MIN_ROWS = 1024  # stores smaller than this are never compacted
NO_CRC = -1  # rows from before checksums were kept: not trusted, decoded again when asked for
TEMP_FILES = ("index.parquet.tmp", "images.u8.tmp", "images.jpg.tmp", "verified.tmp")  # this package's, written under the lock
CACHE_FIX = "make it writable or set LANDMARKS_HOME to a writable folder"


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


def store_dir(key: str, size: int, kind: str = "raw") -> Path:
    """The folder of the store of data set `key` at `size` px; `kind` "jpeg": the compressed store's."""
    h = hashlib.sha1(str(key).encode()).hexdigest()[:12]
    name = f"{h}_{size}" if kind == "raw" else f"{h}_{size}_{kind}"
    return ensure_dir(cache_dir() / "prepared" / name, "prepared-image cache", CACHE_FIX)


def _locked(d: Path, wait: bool = True):
    """Hold the store's lock (two runs preparing the same data set take turns); yields whether
    it is held: with wait=False, False at once when another process holds it."""
    return file_lock(d / "lock", wait=wait)


def _recover(d: Path) -> None:
    """Under the lock: undo what a crash (kill -9, power, full disk) left in store `d`. A
    compaction cut off leaves data and index disagreeing: the store is rebuilt. Temporary files
    are only ever written under the lock, so any found now is a dead writer's (issue 19 #12;
    a compaction's copy is as large as the store)."""
    if (d / "compacting").exists():
        for f in ("images.u8", "images.jpg", "index.parquet", "compacting"):
            (d / f).unlink(missing_ok=True)
    for name in TEMP_FILES:
        (d / name).unlink(missing_ok=True)


def _recover_others(d: Path) -> None:
    """_recover the cache's other stores that no process is using now (their lock is free)."""
    for other in sorted(d.parent.glob("*_*")):
        if other == d or not other.is_dir() or not any((other / n).exists() for n in TEMP_FILES):
            continue
        try:
            with _locked(other, wait=False) as held:
                if held:
                    _recover(other)
        except OSError:        # a store this process may not write: left as it is
            continue


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
    # a half-written index on a full disk is removed (it would only take space)
    with atomic_output(d / "index.parquet", tmp=d / "index.parquet.tmp") as tmp:
        index.reset_index().to_parquet(tmp)


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


def _renew_stamp(d: Path, name: str = "images.u8") -> None:
    data = d / name
    if data.exists():
        atomic_write(d / "verified", _file_stamp(data), tmp=d / "verified.tmp")


def _crc_rows(d: Path, rows: np.ndarray, row_bytes: int) -> np.ndarray:
    """crc32 of each row, read in file order (crc32 runs at GB/s: the disk is the cost)."""
    out = np.empty(len(rows), np.int64)
    if not len(rows):
        return out
    data = np.memmap(d / "images.u8", dtype=np.uint8, mode="r").reshape(-1, row_bytes)
    for i in np.argsort(rows, kind="stable"):
        out[i] = zlib.crc32(data[rows[i]])
    return out


def _compact(d: Path, index: pd.DataFrame, row_bytes: int) -> pd.DataFrame:
    """Rewrite the store without dead rows (files changed since, re-decoded into new rows) once
    they are at least half of it. Processes still training keep their mapping of the old file
    (os.replace leaves it intact for them); new readers get the new file and index together."""
    data = d / "images.u8"
    n_rows = os.path.getsize(data) // row_bytes if data.exists() else 0
    live = np.sort(index["row"].to_numpy(dtype=np.int64))
    if n_rows < COMPACT_MIN_ROWS or len(live) > n_rows / 2:
        return index
    src = np.memmap(data, dtype=np.uint8, mode="r", shape=(n_rows, row_bytes))
    # data and index are replaced one after the other: a crash in between leaves the marker
    # "compacting", and the store is rebuilt. A half-written copy (a full disk) is removed.
    marker = d / "compacting"
    with atomic_output(data, tmp=d / "images.u8.tmp") as tmp:
        with open(tmp, "wb") as f:
            for i in range(0, len(live), 1024):
                f.write(np.ascontiguousarray(src[live[i:i + 1024]]).tobytes())
        del src
        new_row = pd.Series(np.arange(len(live)), index=live)
        index = index.assign(row=new_row.loc[index["row"].to_numpy()].to_numpy())
        marker.touch()                 # last thing before the copy is renamed over images.u8
    _save_index(d, index)
    marker.unlink()
    return index


def _commit(d: Path, index: pd.DataFrame, pending: list) -> pd.DataFrame:
    new = pd.DataFrame(pending, columns=["path", "fsize", "mtime", "row", "ok", "reason", "crc"]).set_index("path")
    index = pd.concat([index.drop(new.index, errors="ignore"), new])
    _save_index(d, index)
    return index
