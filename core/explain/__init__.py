"""Explanations of a classifier's decision: attribution maps, their rendering, a
faithfulness score and class model visualisation. Built on captum; no UI code here.

Models take float images in [0, 1] shaped (N, 3, H, W) and return logits (N, C).
"""
from __future__ import annotations

from torch import Tensor, nn

from core.explain.class_model import class_model
from core.explain.faithfulness import Faithfulness, blurred, faithfulness
from core.explain.methods import METHODS, Method, Target, default_target_layer, get_method, model_guard
from core.explain.render import colorize, overlay, render, signed_to_rgb, to_map, to_png_bytes

__all__ = [
    "METHODS", "Method", "explain", "default_target_layer", "model_guard",
    "to_map", "colorize", "signed_to_rgb", "overlay", "to_png_bytes", "render",
    "Faithfulness", "faithfulness", "blurred", "class_model",
]


def explain(model: nn.Module, x: Tensor, target: Target, method: str,
            target_layer: nn.Module | None = None, **options) -> Tensor:
    """Attribution of ``target`` for images ``x`` by ``method`` (a key of METHODS).

    Returns (N, 3, H, W) for pixel methods, (N, 1, H, W) for "gradcam" (a 3-D x gives the
    same without the batch dim). ``options`` go to the method (e.g. n_steps=64 for
    integrated_gradients, nt_samples=32 for smoothgrad).
    """
    return get_method(method)(model, target_layer, **options).attribute(x, target)
