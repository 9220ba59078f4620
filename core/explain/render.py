"""Attributions -> pictures (numpy uint8 H x W x 3). Pure numpy + PIL: no matplotlib."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Colour maps as ~10 evenly spaced stops, linearly interpolated (the 10-colour samples of
# matplotlib's perceptually uniform maps, van der Walt & Smith 2015).
_CMAPS: dict[str, list[str]] = {
    "inferno": ["000004", "1b0c42", "4b0c6b", "781c6d", "a52c60",
                "cf4446", "ed6925", "fb9a06", "f7d03c", "fcffa4"],
    "viridis": ["440154", "482878", "3e4a89", "31688e", "26828e",
                "1f9e89", "35b779", "6dcd59", "b4de2c", "fde725"],
    "gray": ["000000", "ffffff"],
}

# Methods whose attribution is a signed per-channel gradient, shown as an image of its own
# (Springenberg et al. 2015, Fig. 1 style); the others are heat maps laid over the photo.
SIGNED_METHODS = ("vanilla", "guided")
HEAT_METHODS = ("saliency", "gradcam", "integrated_gradients", "smoothgrad")


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


def render(method_name: str, image_uint8, attr, alpha: float = 0.5,
           cmap: str = "inferno") -> np.ndarray:
    """The picture the dashboard shows for one image's attribution.

    vanilla / guided: the signed gradient as a colour image (alpha unused);
    saliency, smoothgrad, integrated gradients, Grad-CAM: colour heat map over the image.
    """
    if method_name in SIGNED_METHODS:
        return signed_to_rgb(attr)
    if method_name in HEAT_METHODS:
        return overlay(image_uint8, colorize(to_map(attr), cmap), alpha)
    names = ("saliency", "vanilla", "guided", "gradcam", "integrated_gradients", "smoothgrad")
    raise ValueError(f"Unknown explanation method {method_name!r}; choose one of: {', '.join(names)}")
