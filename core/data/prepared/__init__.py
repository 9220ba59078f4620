"""Decode each image once, per data set and image size, into a memory-mapped uint8 array.

JPEG decoding is the wall when training from photos (see docs/BENCHMARKS.md): a plain
ImageFolder pipeline decodes every full-size JPEG again at every epoch. Here each image is
decoded once with libjpeg's DCT-domain downscaling (`Image.draft`), EXIF-oriented, resized
(shorter side) and centre-cropped to size x size, and appended to `images.u8`. The store is
incremental (only new or changed files are decoded), resumable (the index is committed in
chunks), parallel over cores, and invalid rows for files whose size or mtime changed are
re-decoded. Unreadable files are recorded with the reason: that is the scan report.

By concern (issue 18):
  store   the store on disk and its index: lock, commit, checks, compaction
  pool    decoding on the CPU: one image, runs of rows, the worker-process pool
  gpu     decoding JPEGs on the GPU (nvJPEG), as the CPU path would
  build   prepare(): what the store lacks, decoded by one of the above
Every name is also an attribute of this package, as when it was one module; setting one here
(a test's monkeypatch, a benchmark's switch) sets it in the module that reads it.
"""
from __future__ import annotations

import sys
import types

from core.data.prepared import build, gpu, pool, store
# the names other code has imported from core.data.prepared (tests, bench, train, cli)
# flake8: noqa: F401
from core.data.prepared.build import CHUNK, POOL_MIN, _decode_into, prepare
from core.data.prepared.gpu import (BATCHED_ON_CPU, GPU_BATCH, GPU_BATCH_PIXELS, GPU_WITH_POOL, MAX_AHEAD, _coeffs,
                                    _cuda_ok, _draft_scale, _exif_orientation, _gpu_images, _gpu_rows, _jpeg_info,
                                    _orient_t, _pixel_batches, _read, _reduce_t, _resize_square_t)
from core.data.prepared.pool import (TASK, _context, _decode, _decode_rows, _executor, _pool, _pool_rows, _pwrite,
                                     _serial_rows, _write_row, last_stats, usable_cores)
from core.data.prepared.store import (AUTO_SCAN_IMAGES, CACHE_FIX, COMPACT_MIN_ROWS, NO_CRC, SCAN_SIZE, Prepared,
                                      _commit, _committed, _compact, _crc_rows, _file_sig, _load_index, _locked,
                                      _open_store, _save_index, _stale, _verified, store_dir)

_PARTS = (store, pool, gpu, build)


class _Package(types.ModuleType):
    """`prepared.CHUNK = 3` reaches the modules that hold CHUNK, as it did when this was one module."""

    def __setattr__(self, name, value):
        for part in _PARTS:
            if name in vars(part):
                setattr(part, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
