"""Attributions -> pictures (numpy uint8 H x W x 3). numpy + PIL, no matplotlib; how a method is
drawn follows its registered kind."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from core.explain.methods import get_method

# Colour maps as ~10 evenly spaced stops, linearly interpolated (the 10-colour samples of
# matplotlib's perceptually uniform maps, van der Walt & Smith 2015).
_CMAPS: dict[str, list[str]] = {
    "inferno": ["000004", "1b0c42", "4b0c6b", "781c6d", "a52c60",
                "cf4446", "ed6925", "fb9a06", "f7d03c", "fcffa4"],
    "viridis": ["440154", "482878", "3e4a89", "31688e", "26828e",
                "1f9e89", "35b779", "6dcd59", "b4de2c", "fde725"],
    "gray": ["000000", "ffffff"],
    # diverging, zero at the white middle: ColorBrewer RdBu reversed (blue < 0 < red), without
    # its two darkest ends, which would read as black over a photo
    "diverging": ["2166ac", "4393c3", "92c5de", "d1e5f0", "f7f7f7",
                  "fddbc7", "f4a582", "d6604d", "b2182b"],
}

# How a method's kind (its class's ``kind``, see core.explain.methods.KINDS) is drawn. "signed": a
# diverging map centred on zero, blue for negative, red for positive, laid over the photo in
# proportion to its size. "heat" (|gradient|, Grad-CAM's ReLU): a heat map from dark to bright.
HEAT_CMAP = "inferno"
_BAR: dict[str, tuple[str, tuple[str, str, str]]] = {  # kind -> (colour map, colour bar's end labels)
    "signed": ("diverging", ("blue: lowers the class score", "0: no colour", "red: raises it")),
    "heat": (HEAT_CMAP, ("dark: no effect", "", "bright: strongest")),
}
SCALE_NOTE = "Scaled per image: the strongest 1 % of pixels get the end colours."


def _np(a) -> np.ndarray:
    """Tensor or array -> float64 array without a leading batch dim of 1."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().float().numpy()
    a = np.asarray(a, dtype=np.float64)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


def to_map(attr, percentile: float = 99.0) -> np.ndarray:
    """(C,H,W) / (H,W) attribution -> H x W map in [0, 1].

    Max |.| over channels as in Simonyan et al. 2014 §3.1; divided by the 99th percentile
    rather than the max so a handful of extreme gradients don't turn the rest black.
    """
    a = np.abs(_np(attr))
    if a.ndim == 3:
        a = a.max(axis=0)
    if a.ndim != 2:
        raise ValueError(f"Expected an attribution shaped (C, H, W) or (H, W); got {a.shape}.")
    scale = np.percentile(a, percentile)
    if scale <= 0:
        scale = a.max()
    return np.clip(a / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(a)


def signed_map(attr, percentile: float = 99.0) -> np.ndarray:
    """(C,H,W) / (H,W) signed attribution -> H x W map in [-1, 1], 0 staying 0.

    Summed over colour channels (for integrated gradients the sum is the pixel's attribution,
    Sundararajan et al. 2017 §3), divided by the 99th percentile of |.| (one scale for both signs).
    """
    a = _np(attr)
    if a.ndim == 3:
        a = a.sum(axis=0)
    if a.ndim != 2:
        raise ValueError(f"Expected an attribution shaped (C, H, W) or (H, W); got {a.shape}.")
    scale = np.percentile(np.abs(a), percentile)
    if scale <= 0:
        scale = np.abs(a).max()
    return np.clip(a / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(a)


def upsample(m, size: tuple[int, int]) -> np.ndarray:
    """H x W float map -> size (width, height), bicubic on the values (smooth, no blocky cells),
    clipped back to the map's own range (bicubic overshoots a little at edges)."""
    m = _np(m).astype(np.float32)
    if (m.shape[1], m.shape[0]) == tuple(size):
        return m.astype(np.float64)
    out = np.asarray(Image.fromarray(m).resize(tuple(size), Image.BICUBIC), dtype=np.float64)
    return np.clip(out, float(m.min()), float(m.max()))


def colorize(m, cmap: str = "inferno") -> np.ndarray:
    """H x W map in [0, 1] -> H x W x 3 uint8 via a hand-written LUT."""
    if cmap not in _CMAPS:
        raise ValueError(f"Unknown colour map {cmap!r}; choose one of: {', '.join(_CMAPS)}")
    stops = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in _CMAPS[cmap]], float)
    m = np.clip(_np(m), 0.0, 1.0)
    if m.ndim != 2:
        raise ValueError(f"Expected a 2-D map; got shape {m.shape}.")
    xs = np.linspace(0.0, 1.0, len(stops))
    rgb = np.stack([np.interp(m, xs, stops[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def signed_to_rgb(attr, percentile: float = 99.0) -> np.ndarray:
    """(3,H,W) signed gradient -> H x W x 3 uint8, zero at mid grey.

    One symmetric scale for all channels (robust 99th percentile of |g|) keeps the
    colour of a pixel meaningful: red = the red channel's gradient is large there.
    """
    a = _np(attr)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"Expected an attribution shaped (C, H, W); got {a.shape}.")
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    scale = np.percentile(np.abs(a), percentile) or np.abs(a).max() or 1.0
    rgb = 0.5 + 0.5 * np.clip(a / scale, -1.0, 1.0)
    return np.round(rgb.transpose(1, 2, 0) * 255).astype(np.uint8)


def _rgb_uint8(image) -> np.ndarray:
    """Accept H x W x 3 uint8, H x W grey, or a (3,H,W) float tensor/array in [0, 1]."""
    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a[..., :3]


def overlay(image_uint8, heat_uint8, alpha: float = 0.5) -> np.ndarray:
    """Blend (1-alpha)*image + alpha*heat; the heat map is resized to the image if needed."""
    img, heat = _rgb_uint8(image_uint8), _rgb_uint8(heat_uint8)
    if heat.shape[:2] != img.shape[:2]:
        heat = np.asarray(Image.fromarray(heat).resize(img.shape[1::-1], Image.BILINEAR))
    alpha = float(np.clip(alpha, 0.0, 1.0))
    if alpha == 0.0:
        return img.copy()
    out = (1.0 - alpha) * img.astype(np.float64) + alpha * heat.astype(np.float64)
    return np.round(out).astype(np.uint8)


def to_png_bytes(array) -> bytes:
    """H x W (x 3) uint8 array (or floats in [0, 1]) -> PNG file bytes."""
    a = _rgb_uint8(array) if np.asarray(array).ndim == 3 else np.asarray(array)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def signed_overlay(image_uint8, m, alpha: float = 0.5, cmap: str = "diverging") -> np.ndarray:
    """A map in [-1, 1] over the photo: each pixel's colour covers the photo in proportion to
    alpha * |value|, so zero shows the photo and strong evidence its full colour."""
    img = _rgb_uint8(image_uint8).astype(np.float64)
    m = np.clip(_np(m), -1.0, 1.0)
    colour = colorize((m + 1) / 2, cmap).astype(np.float64)
    w = float(np.clip(alpha, 0.0, 1.0)) * np.abs(m)[..., None]
    return np.round((1 - w) * img + w * colour).astype(np.uint8)


def render(method_name: str, image_uint8, attr, alpha: float = 0.5,
           cmap: str = HEAT_CMAP) -> np.ndarray:
    """The picture the dashboard shows for one image's attribution, at the size of `image_uint8`.

    The attribution (at the model's input size) is reduced to one value per pixel, then resized
    smoothly (bicubic on the values, before colouring) to the image: pass the photo at the size
    it is displayed. A "signed" method: a diverging map centred on zero; a "heat" method: a heat map
    from dark (0) to bright, blended by alpha.
    """
    kind = get_method(method_name).kind
    img = _rgb_uint8(image_uint8)
    size = (img.shape[1], img.shape[0])
    if kind == "signed":
        return signed_overlay(img, upsample(signed_map(attr), size), alpha)
    return overlay(img, colorize(upsample(to_map(attr), size), cmap), alpha)


def colorbar(method_name: str, width: int = 256, height: int = 12) -> np.ndarray:
    """The colour scale of `method_name`'s maps, low to high, as an image (the page's legend)."""
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    return colorize(ramp, _BAR[get_method(method_name).kind][0])


def legend(method_name: str) -> tuple[tuple[str, str, str], str]:
    """((left end, middle, right end) labels of the colour bar, the sentence of what the colours mean)."""
    method = get_method(method_name)
    return _BAR[method.kind][1], method.legend
