"""Explanations of a classifier's decision: attribution maps, their rendering, a
faithfulness score and class model visualisation. Built on captum; no UI code here.

Models take float images in [0, 1] shaped (N, 3, H, W) and return logits (N, C).

The public entry: ``explain`` (one attribution by method name), ``explain_one`` (a trained run's
map, picture and faithfulness score), ``explain_to_png`` (the same as a file), and ``METHODS``,
the registry of attribution classes (name -> class with label, kind, legend, cost), filled by
``@register`` in core/explain/methods.py.
"""
from __future__ import annotations

from core.explain.api import explain, explain_one, image_uint8, landmark_focus
from core.explain.class_model import class_model
from core.explain.faithfulness import Faithfulness, blurred, faithfulness
from core.explain.files import class_model_path, class_model_png, explain_to_png, resolve_class
from core.explain.methods import (KINDS, METHODS, Method, Target, default_target_layer, get_method, model_guard,
                                  register)
from core.explain.render import (SCALE_NOTE, colorbar, colorize, legend, overlay, render, signed_to_rgb, to_map,
                                 to_png_bytes)

__all__ = [
    "METHODS", "KINDS", "Method", "register", "get_method", "Target", "explain", "explain_one", "explain_to_png",
    "image_uint8", "landmark_focus", "default_target_layer", "model_guard",
    "to_map", "colorize", "signed_to_rgb", "overlay", "to_png_bytes", "render", "colorbar", "legend", "SCALE_NOTE",
    "Faithfulness", "faithfulness", "blurred", "class_model",
    "class_model_png", "class_model_path", "resolve_class",
]
