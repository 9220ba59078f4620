"""One image: where it goes, how its bytes are decoded and shrunk, how it is written (atomically),
and the cleanup of the temporary files a killed download left behind (issue 19 #12)."""
from __future__ import annotations

import errno
import io
import os
import re
import threading
import time
import warnings
from pathlib import Path

from core.data.download.base import STATE, reason
from core.files import atomic_write

TMP = "tmp"        # OUT/.download/tmp: every image is written here first, then renamed into train/
# the downloader's own temporary names: <id>.jpg.<pid>.<thread>.tmp in OUT/.download/tmp (and,
# from earlier versions, .<id>.jpg.<pid>.<thread>.tmp beside the image), .<file>.<pid>.tmp for
# its bookkeeping files in OUT and OUT/.download
_IMAGE_TMP = re.compile(r"^\.?[\w-]+\.jpg\.(\d+)\.\d+\.tmp$")
_FILE_TMP = re.compile(r"^\.(?:train\.csv|train_label_to_category\.csv|download_report\.json|plan\.json|"
                       r"(?:shard|tar)_[\w.-]+\.json)\.(\d+)\.tmp$")


def target(out: Path, image_id: str) -> Path:
    """OUT/train/<a>/<b>/<c>/<id>.jpg (GLDv2's nested layout, as readers._rel writes it)."""
    return out / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def encode(body: bytes, max_side: int) -> bytes:
    """The bytes to store: the body decoded in full (or ValueError/OSError), shrunk so the longer
    side is at most max_side and saved as JPEG; a JPEG small enough keeps its own bytes."""
    from PIL import Image, ImageOps

    from core.data.readers import MAX_PIXELS, to_rgb
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(body))
        if im.width * im.height > MAX_PIXELS:
            raise ValueError(f"{im.width}x{im.height} pixels is over the {MAX_PIXELS:,}-pixel limit")
        jpeg = im.format in ("JPEG", "MPO")
        big = bool(max_side) and max(im.size) > max_side
        if jpeg and big:                            # DCT-domain downscale by 2, 4 or 8 while decoding,
            k = max_side / max(im.size)             # never below the final size
            im.draft("RGB", (max(1, int(im.width * k)), max(1, int(im.height * k))))
        im.load()                                   # the full decode: a truncated body fails here
    if jpeg and not big:
        return body
    im = to_rgb(ImageOps.exif_transpose(im))
    if big:
        im.thumbnail((max_side, max_side), Image.BILINEAR, reducing_gap=2.0)   # antialiased, as torchvision's Resize
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def save(body: bytes, path: Path, max_side: int, tmp_dir: Path | None = None) -> tuple[str, str]:
    """Decode/resize `body` and write it atomically at `path`: ("fetched", "") or ("not_image", why).
    The temporary file lies in `tmp_dir` (same file system; default: beside `path`), so that what
    a killed run leaves is in one folder. An OSError while writing (disk full, permissions)
    propagates: it stops the whole download."""
    try:
        data = encode(body, max_side)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "not an image"
        return "not_image", reason(e)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"    # _IMAGE_TMP: per thread, cleaned up
    try:
        atomic_write(path, data, tmp=tmp_dir / name if tmp_dir is not None else path.with_name(f".{name}"))
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        atomic_write(path, data, tmp=path.with_name(f".{name}"))   # train/ on another disk than OUT: write beside it
    return "fetched", ""


# ------------------------------------------------------------------ leftovers of a killed run

def process_start() -> float:
    """When this process started (epoch seconds; Linux /proc, else when this module was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False                     # a file of ours older than our own start is a recycled pid's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _sweep(folder: Path, pattern: re.Pattern, before: float) -> int:
    """Remove the files of `folder` whose name matches `pattern`, older than `before`, written by a
    process that is gone. Returns how many."""
    n = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        m = pattern.match(e.name)
        if not m or not e.is_file(follow_symlinks=False):
            continue
        try:
            if e.stat(follow_symlinks=False).st_mtime >= before or _alive(int(m[1])):
                continue
            os.unlink(e.path)
            n += 1
        except OSError:
            continue                     # gone meanwhile, or not ours to remove
    return n


def clean_leftovers(out: Path) -> tuple[Path, int]:
    """The temporary folder of OUT (created) and how many files a killed download left there, in
    OUT and in OUT/.download were removed: only the downloader's own temporary names, older than
    this process and written by a process that is no longer running. The first time (a folder an
    earlier version wrote), the temporary files beside the images are looked for too."""
    before = process_start()
    state = out / STATE
    tmp = state / TMP
    first = not tmp.is_dir()
    tmp.mkdir(parents=True, exist_ok=True)
    n = _sweep(tmp, _IMAGE_TMP, before) + _sweep(out, _FILE_TMP, before) + _sweep(state, _FILE_TMP, before)
    if first and (out / "train").is_dir():
        for folder, _dirs, files in os.walk(out / "train"):
            if any(f.endswith(".tmp") for f in files):
                n += _sweep(Path(folder), _IMAGE_TMP, before)
    return tmp, n
