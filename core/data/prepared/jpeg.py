"""The compressed store (issue 20): the raw store's decode-once, re-encoded as JPEG.

Each image is decoded exactly as for the raw store (pool._decode: DCT-domain draft, EXIF
orientation, shorter side resized, centre-cropped to size x size), then encoded once as a JPEG
at quality 90 (4:2:0, what the source photos already are) and appended to images.jpg. At 224 px
that was 8.2 KB an image instead of the raw store's 147 KB on generated photos (bench/store.py;
real photos hold more detail): GLDv2-clean's 1.6 M images, 238 GB raw, take 13 GB at that
rate. Training decodes each batch on the GPU with nvJPEG (torchvision.io.decode_jpeg(device=
"cuda") takes the list of byte tensors), or on the CPU in the batch-gathering threads.

Why not WebDataset or LitData (both read tars/chunks a user at that scale may know): training
here needs random access by row (a seeded permutation, or a class-balanced draw with
replacement, every epoch, over the split manifest's subset), an incremental store (new or
changed files only, a crash loses one chunk) and the same index, lock and checks as the raw
store. Tar shards are read in sequence (shuffling is approximate, per shard and buffer) and
LitData's chunks are written once by `optimize`; both would be a second index beside the
manifest. Here the index is the raw store's (index.parquet, committed in chunks under the
lock, crc32 per record) plus each record's offset and length.
"""
from __future__ import annotations

import io
import os
import zlib

import numpy as np
import pandas as pd

from core.data.prepared import pool as cpu_pool
from core.data.prepared.pool import _decode, _executor
from core.data.prepared.store import (CACHE_FIX, COMPACT_MIN_ROWS, Prepared, _file_sig, _file_stamp, _load_index,
                                      _locked, _recover, _recover_others, _renew_stamp, _save_index, _stale, store_dir)
from core.errors import writing
from core.files import atomic_output

QUALITY = 90  # JPEG quality of the re-encoded images (mean |error| ~1.6 grey levels at 224 px)
SUBSAMPLING = "4:2:0"  # chroma, as the source photos have it (4:4:4 is ~45% larger)
DATA = "images.jpg"
COLUMNS = ["path", "fsize", "mtime", "row", "ok", "reason", "crc", "offset", "length"]


class JpegStore:
    """The records of images.jpg as an array of (rows, size, size, 3) uint8: `store[rows]`
    decodes those rows on the CPU (the raw store's memmap answers the same indexing), and
    `encoded(rows)` gives their bytes for a batched decode elsewhere (nvJPEG). A row that could
    not be read decodes as black, as the raw store's blank rows."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, size: int):
        self.blob, self.offsets, self.lengths, self.size = blob, offsets, lengths, size
        self.shape = (len(offsets), size, size, 3)
        self.dtype = np.dtype(np.uint8)

    def __len__(self):
        return len(self.offsets)

    def encoded(self, rows) -> list:
        """uint8 byte tensors (on the CPU, as decode_jpeg takes them) of `rows`; empty for a bad row."""
        import torch
        return [torch.from_numpy(np.array(self.blob[o:o + n])) for o, n in
                zip(self.offsets[rows].tolist(), self.lengths[rows].tolist())]

    def __getitem__(self, rows):
        one = np.ndim(rows) == 0
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        out = np.zeros((len(rows), self.size, self.size, 3), np.uint8)
        good = np.flatnonzero(self.lengths[rows] > 0)
        if len(good):
            out[good] = decode_cpu(self.encoded(rows[good]))
        return out[0] if one else out


def decode_cpu(data: list) -> np.ndarray:
    """Byte tensors of same-size JPEGs -> (n, h, w, 3) uint8, with torchvision's libjpeg-turbo
    (faster than Pillow here: no Image object per image; 2,000-2,300 a second a core at 224 px)."""
    import warnings

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # torchvision 0.29 deprecates its image io for TorchCodec
        imgs = decode_jpeg(data, mode=ImageReadMode.RGB)
    return torch.stack(imgs).permute(0, 2, 3, 1).numpy()


def _encode(path: str, size: int) -> tuple[bytes, str]:
    """Worker: path -> (JPEG bytes, "") or (b"", reason): the raw store's decode, then encoded."""
    from PIL import Image
    buf, reason = _decode((path, size))
    if buf is None:
        return b"", reason
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), buf).save(out, "JPEG", quality=QUALITY, subsampling=SUBSAMPLING)
    return out.getvalue(), ""


def _encode_many(args) -> list:
    size, paths = args
    return [_encode(p, size) for p in paths]


def _encoded(todo: list[str], size: int, workers: int, pool_min: int):
    """(bytes, reason) per path in order: in a pool of processes (its results are ~10 KB, not
    the raw store's 150 KB rows, so the parent writes them), or in this process."""
    paths = [os.path.abspath(p) for p in todo]
    if workers <= 1 or len(paths) < pool_min:
        for p in paths:
            yield _encode(p, size)
        return
    tasks = [(size, paths[i:i + cpu_pool.TASK]) for i in range(0, len(paths), cpu_pool.TASK)]
    ex = _executor(min(workers, len(tasks)))
    try:
        for res in ex.map(_encode_many, tasks):
            yield from res
    finally:                               # a cancel (progress raised) stops the pool now
        ex.shutdown(wait=True, cancel_futures=True)


def _ends(index: pd.DataFrame) -> np.ndarray:
    return (index["offset"] + index["length"]).to_numpy(np.int64)


def _open(d) -> pd.DataFrame:
    """The index, with images.jpg cut to the records it commits (see store._open_store)."""
    index = _load_index(d)
    if "offset" not in index:              # a new store: the raw store's empty index, and where records lie
        index = index.assign(offset=pd.Series(dtype="int64"), length=pd.Series(dtype="int64"))
    data = d / DATA
    have = os.path.getsize(data) if data.exists() else 0
    lost = _ends(index) > have
    if lost.any():
        index = index[~lost]
        _save_index(d, index)
    end = int(_ends(index).max()) if len(index) else 0
    if data.exists() and have != end:
        os.truncate(data, end)
    return index


def _verified(d, index: pd.DataFrame) -> pd.DataFrame:
    """The index less the records whose crc32 fails; a full pass only when images.jpg changed
    since the last one (store._verified)."""
    data, stamp = d / DATA, d / "verified"
    if not data.exists() or (stamp.exists() and stamp.read_text() == _file_stamp(data)):
        return index
    blob = np.memmap(data, dtype=np.uint8, mode="r") if os.path.getsize(data) else np.zeros(0, np.uint8)
    crc = [zlib.crc32(blob[o:o + n]) for o, n in zip(index["offset"].tolist(), index["length"].tolist())]
    ok = np.asarray(crc, np.int64) == index["crc"].to_numpy(np.int64)
    if not ok.all():
        index = index[ok]
        _save_index(d, index)
    _renew_stamp(d, DATA)
    return index


def _commit(d, index: pd.DataFrame, pending: list) -> pd.DataFrame:
    new = pd.DataFrame(pending, columns=COLUMNS).set_index("path")
    index = pd.concat([index.drop(new.index, errors="ignore"), new]) if len(index) else new
    _save_index(d, index)
    return index


def _encode_into(d, index, sig, todo, size, workers, progress, chunk, pool_min) -> pd.DataFrame:
    """Append the records of `todo` after the committed ones, committing the index every
    `chunk` images (at least a quarter of the index, as the raw store)."""
    if not todo:
        return index
    row = int(index["row"].max()) + 1 if len(index) else 0
    offset = int(_ends(index).max()) if len(index) else 0
    fsize, mtime = (sig[c].reindex(todo).to_numpy(np.int64) for c in ("fsize", "mtime"))
    pending = []
    cpu_pool.last_stats.clear()
    cpu_pool.last_stats.update(how="pool" if workers > 1 and len(todo) >= pool_min else "serial", gpu=0,
                               cpu=len(todo), workers=workers)
    rows = _encoded(todo, size, workers, pool_min)
    with os.fdopen(os.open(d / DATA, os.O_RDWR | os.O_CREAT, 0o644), "r+b") as f:
        f.seek(offset)
        try:
            for i, (buf, reason) in enumerate(rows):
                f.write(buf)
                pending.append((todo[i], int(fsize[i]), int(mtime[i]), row + i, not reason, reason,
                                zlib.crc32(buf), offset, len(buf)))
                offset += len(buf)
                if len(pending) >= max(chunk, len(index) // 4) or i == len(todo) - 1:
                    f.flush()          # the records reach the file before the index that commits them
                    index = _commit(d, index, pending)
                    pending = []
                if progress:
                    progress(i + 1, len(todo))
        finally:
            rows.close()
    return index


def _compact(d, index: pd.DataFrame) -> pd.DataFrame:
    """Rewrite images.jpg without dead records once they hold half of it (store._compact)."""
    data = d / DATA
    total = os.path.getsize(data) if data.exists() else 0
    if int(index["row"].max() if len(index) else 0) + 1 < COMPACT_MIN_ROWS or index["length"].sum() > total / 2:
        return index
    index = index.sort_values("offset")
    src = np.memmap(data, dtype=np.uint8, mode="r")
    marker = d / "compacting"
    with atomic_output(data, tmp=d / (DATA + ".tmp")) as tmp:
        with open(tmp, "wb") as f:
            for o, n in zip(index["offset"].tolist(), index["length"].tolist()):
                f.write(src[o:o + n].tobytes())
        del src
        lengths = index["length"].to_numpy(np.int64)
        index = index.assign(row=np.arange(len(index)), offset=np.cumsum(lengths) - lengths)
        marker.touch()
    _save_index(d, index)
    marker.unlink()
    return index


def prepare_jpeg(paths: list[str], size: int, key: str, workers: int = 0, progress=None,
                 chunk: int = 512, pool_min: int = 256) -> Prepared:
    """As build.prepare (which passes its CHUNK and POOL_MIN), into the compressed store:
    -> Prepared whose `store` is a JpegStore."""
    d = store_dir(key, size, "jpeg")
    workers = workers or cpu_pool.usable_cores()
    with writing(d, "prepared-image cache", CACHE_FIX), _locked(d):
        _recover(d)
        _recover_others(d)
        index = _verified(d, _open(d))
        sig = _file_sig(list(dict.fromkeys(paths)))
        todo = _stale(index, sig)
        index = _encode_into(d, index, sig, todo, size, workers, progress, chunk, pool_min)
        if todo:
            index = _compact(d, index)
            _renew_stamp(d, DATA)
        n = int(index["row"].max()) + 1 if len(index) else 0
        offsets, lengths = np.zeros(n, np.int64), np.zeros(n, np.int64)
        offsets[index["row"].to_numpy(np.int64)] = index["offset"].to_numpy(np.int64)
        lengths[index["row"].to_numpy(np.int64)] = index["length"].to_numpy(np.int64)
        data = d / DATA
        # mapped under the lock: a compaction by another process replaces the file, not this mapping
        blob = np.memmap(data, dtype=np.uint8, mode="r") if data.exists() and os.path.getsize(data) else \
            np.zeros(0, np.uint8)
        rows = index.loc[paths]
    ok = rows["ok"].to_numpy(dtype=bool)
    reasons = list(dict.fromkeys((p, r) for p, r, good in zip(rows.index, rows["reason"], ok) if not good))
    return Prepared(JpegStore(blob, offsets, lengths, size), rows["row"].to_numpy(dtype=np.int64), ok, reasons,
                    len(todo))
