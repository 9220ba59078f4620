"""Uploaded images, checked before they reach a model: size in bytes, file type (by content,
not by name), pixel count (decompression bombs), truncation; then EXIF rotation and RGB.

Every rejection is a UserError whose message is one sentence naming the file, what is
wrong and what to do. The Classify page states the limits below under its uploader.
"""
from __future__ import annotations

import io

from PIL import Image, ImageFile

from core.data.readers import MAX_PIXELS, open_image
from core.errors import UserError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024   # bytes; = maxUploadSize (MB) in .streamlit/config.toml
MAX_UPLOAD_PIXELS = MAX_PIXELS // 2    # pixels (25 megapixels); a 12 MP phone photo passes
UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp")   # file_uploader's filter; content decides below
MAX_FILES_PER_UPLOAD = 20             # files in one upload on the Classify page; more are refused

# Magic numbers of the formats we decode. Sniffing first keeps every other Pillow plugin
# (EPS runs Ghostscript, for one) away from uploaded bytes.
_SIGNATURES = {"JPEG": (b"\xff\xd8\xff",), "PNG": (b"\x89PNG\r\n\x1a\n",)}
_OTHER_IMAGES = {"GIF": (b"GIF87a", b"GIF89a"), "BMP": (b"BM",), "TIFF": (b"II*\x00", b"MM\x00*")}


def sniff_format(data: bytes) -> str | None:
    """'JPEG', 'PNG' or 'WEBP' from the first bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for fmt, sigs in _SIGNATURES.items():
        if data.startswith(sigs):
            return fmt
    return None


def human_bytes(n: int) -> str:
    for unit, size in (("MB", 1024 ** 2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} bytes"


def limits_text(max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS) -> str:
    return (f"JPEG, PNG or WebP; at most {human_bytes(max_bytes)} and {max_pixels / 1e6:g} megapixels "
            "per image. EXIF rotation is applied; transparency is put on white.")


def check_file_count(n: int, max_files: int = MAX_FILES_PER_UPLOAD) -> None:
    """Refuse an upload of more than max_files files (each one is decoded and run through the model)."""
    if n > max_files:
        raise UserError(f"{n} files were uploaded at once, more than the limit of {max_files}; "
                        f"remove some and classify them in batches of {max_files} or fewer.")


def load_upload(data: bytes, name: str, max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """Uploaded file bytes -> upright RGB PIL image, or a UserError saying why not."""
    if len(data) > max_bytes:
        size = human_bytes(len(data))
        size = f"{len(data):,} bytes" if size == human_bytes(max_bytes) else size
        raise UserError(f"{name} is {size}; the upload limit is {human_bytes(max_bytes)}, "
                        "so downscale or recompress it first.")
    if not data:
        raise UserError(f"{name} is empty; upload the complete file.")
    _check_type(data, name)
    # Pillow would otherwise fill the missing part of a cut-off JPEG with grey and classify that.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set to True; uploads need it False.")
    try:
        return open_image(io.BytesIO(data), max_pixels=max_pixels)
    except UserError:  # open_image's bomb guard; Pillow's own guard (MAX_PIXELS) applies too
        limit = min(max_pixels, MAX_PIXELS)
        raise UserError(f"{name} has more than {limit:,} pixels, the limit that guards against decompression "
                        "bombs; downscale it and upload again.") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"{name} is not an image Pillow can read; upload a JPEG, PNG or WebP.") from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data raises OSError, SyntaxError, ValueError…
        raise UserError(f"{name} is truncated or damaged ({e}); upload the complete file.") from None


def _check_type(data: bytes, name: str) -> None:
    """Only JPEG, PNG and WebP reach a decoder; other images get their own sentence."""
    if sniff_format(data) is not None:
        return
    other = next((f for f, sigs in _OTHER_IMAGES.items() if data.startswith(sigs)), None)
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"avif"):
        other = "HEIC/AVIF"  # iPhone photos; renamed to .jpg they pass the uploader's filter
    if other:
        raise UserError(f"{name} is a {other} image, which this page does not read; "
                        "upload a JPEG, PNG or WebP.")
    raise UserError(f"{name} is not an image Pillow can read; upload a JPEG, PNG or WebP.")
