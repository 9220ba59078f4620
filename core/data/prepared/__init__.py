"""Decode each image once, per data set and image size, into a memory-mapped uint8 array.

JPEG decoding is the wall when training from photos (see docs/BENCHMARKS.md): a plain
ImageFolder pipeline decodes every full-size JPEG again at every epoch. Here each image is
decoded once with libjpeg's DCT-domain downscaling (`Image.draft`), EXIF-oriented, resized
(shorter side) and centre-cropped to size x size, and appended to `images.u8`. The store is
incremental (only new or changed files are decoded), resumable (the index is committed in
chunks), parallel over cores, and invalid rows for files whose size or mtime changed are
re-decoded. Unreadable files are recorded with the reason: that is the scan report.

By concern (issue 18):
  scans   the sizes of a scan (no libraries: the command line reads them)
  store   the store on disk and its index: lock, commit, checks, compaction
  pool    decoding on the CPU: one image, runs of rows, the worker-process pool
  gpu     decoding JPEGs on the GPU (nvJPEG), as the CPU path would
  jpeg    the compressed store (issue 20): the same images re-encoded as JPEG, decoded per batch
  build   prepare(): what the store lacks, decoded by one of the above; which store ("auto")
Every name is also an attribute of this package, as when it was one module.
"""
from __future__ import annotations

import importlib
import sys
import types

# by concern, in the order a name is looked for; the first holds no library (the CLI reads it)
_PARTS = ("scans", "store", "pool", "gpu", "jpeg", "build")


def _part(name: str) -> types.ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def __getattr__(name: str):
    """Any name of the parts, as when this was one module. The first name asked for that is not
    in `scans` imports every part and copies their names here (a test's monkeypatch reads and
    restores them here); until then `from core.data.prepared import AUTO_SCAN_IMAGES` loads
    neither pandas nor numpy."""
    if name in _PARTS:
        return _part(name)
    scans = _part("scans")
    if name in vars(scans):
        return getattr(scans, name)
    here = sys.modules[__name__].__dict__
    for part in map(_part, _PARTS):
        for k, v in vars(part).items():
            if not k.startswith("__"):
                here.setdefault(k, v)
    if name in here:
        return here[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """`prepared.CHUNK = 3` (a test's monkeypatch, a benchmark's switch) sets CHUNK in the parts
    that hold it too, as when this was one module."""

    def __setattr__(self, name, value):
        if not (name in _PARTS or name.startswith("__")):   # not the import system recording a part
            for part in map(_part, _PARTS):
                if name in vars(part):
                    setattr(part, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
