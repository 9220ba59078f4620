"""core.data.uploads: every bad upload is one clear sentence; every odd but valid image becomes
upright RGB. All images are generated here."""
import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.errors import UserError
from core.data.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, limits_text, load_upload, sniff_format


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noise_jpeg(size=(128, 96)) -> bytes:
    return encode(Image.effect_noise(size, 60).convert("RGB"), "JPEG", quality=90)


def rejected(data: bytes, name: str, **kw) -> str:
    with pytest.raises(UserError) as e:
        load_upload(data, name, **kw)
    return str(e.value)


def test_limits_are_stated():
    assert MAX_UPLOAD_BYTES == 20 * 1024 * 1024  # = maxUploadSize in .streamlit/config.toml
    assert MAX_UPLOAD_PIXELS == 25_000_000
    assert "at most 20 MB and 25 megapixels" in limits_text()


@pytest.mark.parametrize("name,data", [
    ("x.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
    ("notes.txt", b"The Eiffel tower is 330 m tall.\n"),
    ("renamed.jpg", b"%PDF-1.4 a PDF with a .jpg name passes the uploader's filter"),
])
def test_non_images(name, data):
    assert rejected(data, name) == f"{name} is not an image Pillow can read; upload a JPEG, PNG or WebP."


def test_other_image_formats_are_named():
    gif = encode(Image.new("P", (8, 8)), "GIF")
    assert rejected(gif, "a.gif") == "a.gif is a GIF image, which this page does not read; upload a JPEG, PNG or WebP."
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    assert "is a HEIC/AVIF image" in rejected(heic, "IMG_0001.jpg")


def test_empty_file():
    assert rejected(b"", "e.jpg") == "e.jpg is empty; upload the complete file."


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(fmt):
    data = noise_jpeg() if fmt == "JPEG" else encode(Image.effect_noise((96, 96), 60), "PNG")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # else Pillow pads a cut-off JPEG with grey
    msg = rejected(data[: len(data) // 2], "cut.img")
    assert msg.startswith("cut.img is truncated or damaged (") and msg.endswith("; upload the complete file.")
    load_upload(data, "whole.img")  # the complete file is fine


def test_decompression_bomb_small_limit():
    bomb = encode(Image.new("L", (2000, 2000)), "PNG")  # 4 MP of zeros: a few KB
    assert len(bomb) < 20_000
    assert rejected(bomb, "bomb.png", max_pixels=1_000_000) == (
        "bomb.png has more than 1,000,000 pixels, the limit that guards against decompression bombs; "
        "downscale it and upload again.")


def test_decompression_bomb_default_limit():
    bomb = encode(Image.new("L", (9000, 9000)), "PNG")  # 81 MP (243 MB as RGB) in ~80 KB
    assert len(bomb) < 200_000
    assert "bomb.png has more than 25,000,000 pixels" in rejected(bomb, "bomb.png")


def test_oversized_bytes():
    big = b"\xff\xd8\xff" + bytes(MAX_UPLOAD_BYTES)
    assert rejected(big, "huge.jpg") == (
        f"huge.jpg is {len(big):,} bytes; the upload limit is 20 MB, so downscale or recompress it first.")
    assert rejected(noise_jpeg(), "a.jpg", max_bytes=1000).startswith("a.jpg is ")
    assert "the upload limit is 1000 bytes" in rejected(noise_jpeg(), "a.jpg", max_bytes=1000)
    assert "is 25 MB; the upload limit is 20 MB" in rejected(bytes(25 * 1024 * 1024), "b.png")


def test_grayscale():
    im = load_upload(encode(Image.new("L", (10, 6), 100), "PNG"), "g.png")
    assert im.mode == "RGB" and im.size == (10, 6) and im.getpixel((0, 0)) == (100, 100, 100)


def test_cmyk_jpeg():
    data = encode(Image.new("CMYK", (10, 6), (0, 0, 0, 0)), "JPEG", quality=100)  # no ink = white
    im = load_upload(data, "c.jpg")
    assert im.mode == "RGB" and im.size == (10, 6)
    assert min(im.getpixel((5, 3))) >= 250


def test_rgba_transparency_goes_on_white():
    rgba = Image.new("RGBA", (4, 2), (0, 0, 0, 0))      # fully transparent black
    rgba.putpixel((1, 0), (255, 0, 0, 255))             # opaque red
    rgba.putpixel((2, 0), (0, 0, 255, 128))             # half-transparent blue
    im = load_upload(encode(rgba, "PNG"), "t.png")
    assert im.mode == "RGB"
    assert im.getpixel((0, 0)) == (255, 255, 255)       # white, not black
    assert im.getpixel((1, 0)) == (255, 0, 0)
    r, g, b = im.getpixel((2, 0))
    assert abs(r - 127) <= 1 and abs(g - 127) <= 1 and b == 255


def test_palette():
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert load_upload(encode(p, "PNG"), "p.png").getpixel((2, 2)) == (10, 200, 30)
    p.info["transparency"] = 1                           # palette entry 1 transparent -> white
    assert load_upload(encode(p, "PNG", transparency=1), "pt.png").getpixel((2, 2)) == (255, 255, 255)


def test_exif_rotation():
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))            # white left half
    exif = Image.Exif()
    exif[0x0112] = 6                                     # orientation 6: rotate 90° clockwise to view
    out = load_upload(encode(im, "JPEG", exif=exif.tobytes(), quality=95), "phone.jpg")
    assert out.size == (20, 40)                          # width and height swapped
    assert np.asarray(out)[5, 10].mean() > 200 and np.asarray(out)[35, 10].mean() < 50  # left -> top


def test_webp_and_misnamed_png():
    assert load_upload(encode(Image.new("RGB", (9, 7), (0, 128, 0)), "WEBP", lossless=True), "w.webp").size == (9, 7)
    png = encode(Image.new("RGB", (5, 5)), "PNG")
    assert sniff_format(png) == "PNG"
    assert load_upload(png, "actually_png.jpg").size == (5, 5)  # content decides, not the name
