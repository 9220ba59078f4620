"""The explain package's entry points: one attribution by method name (``explain``), and for a
trained run's predictor the rendered map with its faithfulness score (``explain_one``) and how much
of the attribution lands on the landmark of demo photos (``landmark_focus``).

A predictor is anything with ``model`` (a LandmarkNet: ``cam_layer``, ``submodule``), ``names``,
``labels``, ``probs(x)``, ``tensor(image)`` and ``cfg.image_size``; nothing here imports the run store.
"""
from __future__ import annotations

import hashlib
import time
import weakref

import numpy as np
from torch import Tensor, nn

from core.errors import UserError
from core.explain.faithfulness import faithfulness
from core.explain.methods import Target, _weights_version, get_method
from core.explain.render import render, to_map


def explain(model: nn.Module, x: Tensor, target: Target, method: str,
            target_layer: nn.Module | None = None, **options) -> Tensor:
    """Attribution of ``target`` for images ``x`` by ``method`` (a key of METHODS).

    Returns (N, 3, H, W) for pixel methods, (N, 1, H, W) for "gradcam" (a 3-D x gives the
    same without the batch dim). ``options`` go to the method (e.g. n_steps=64 for
    integrated_gradients, nt_samples=32 for smoothgrad). An unknown name: UserError.
    """
    return get_method(method)(model, target_layer, **options).attribute(x, target)


def image_uint8(x) -> np.ndarray:
    """(1,3,H,W) float tensor in [0,1] -> HxWx3 uint8."""
    return (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


_FAITH: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _shared_faithfulness(model: nn.Module, x: Tensor, target: int, m: np.ndarray):
    """faithfulness() once per model weights, image, class and map: the score depends on the map's
    ranking only, so saliency and vanilla backpropagation (the same |gradient| map) share one."""
    h = hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(m, dtype=np.float32).tobytes())
    key = (_weights_version(model), int(target), tuple(x.shape), h.hexdigest())
    cache = _FAITH.setdefault(model, {})
    if key not in cache:
        if len(cache) >= 16 or any(k[0] != key[0] for k in cache):
            cache.clear()
        cache[key] = faithfulness(model, x, target, m)
    return cache[key]


def explain_one(pred, x, method: str, target: int | None = None, alpha: float = 0.5) -> dict:
    """Attribution, its rendering and its faithfulness score for one image (1,3,H,W). Work shared
    between methods (the input gradient, the faithfulness of one map) is done once."""
    get_method(method)  # an unknown name: one sentence, before the forward pass
    target = int(pred.probs(x)[0].argmax()) if target is None else int(target)
    layer = pred.model.submodule(pred.model.cam_layer)
    t0 = time.perf_counter()
    attr = explain(pred.model, x, target, method, target_layer=layer)
    ms = (time.perf_counter() - t0) * 1000
    m = to_map(attr[0])
    faith = _shared_faithfulness(pred.model, x, target, m)
    return {"method": method, "target": target, "name": pred.names[target], "attr": attr, "map": m,
            "image": render(method, image_uint8(x), attr[0], alpha=alpha), "ms": ms,
            "faithfulness": faith.score, "deletion_auc": faith.deletion_auc, "insertion_auc": faith.insertion_auc}


def landmark_focus(pred, images: int = 60, methods=("saliency",), seed: int = 12345) -> dict:
    """For fresh demo photos rendered with their landmark mask (a seed no run trained on): the
    median share of attribution mass on the landmark divided by its share of the image area
    (1.0 = no better than uniform), and the fraction of images denser on the landmark."""
    from core.data.demo import KINDS, draw_landmark as render_demo
    kinds = list(KINDS)
    if not all(str(l).isdigit() and int(l) < len(kinds) for l in pred.labels):
        raise UserError(f"Run {pred.run_id} was not trained on the demo data set, whose photos come with masks.")
    layer = pred.model.submodule(pred.model.cam_layer)
    pred.model.eval()
    out = {}
    for method in methods:
        ratios, wins = [], 0
        for i in range(images):
            target = i % len(pred.labels)
            kind = kinds[int(pred.labels[target])]
            img, mask = render_demo(kind, seed, i, pred.cfg.image_size, with_mask=True)
            m = np.asarray(mask, dtype=np.float32) / 255
            if m.mean() < 0.02:
                continue                      # the landmark is almost fully out of frame
            attr = explain(pred.model, pred.tensor(img), target, method, target_layer=layer)
            a = np.abs(attr.detach().float().numpy())[0].sum(0)        # (H, W)
            share = float((a * m).sum() / max(a.sum(), 1e-12))
            ratios.append(share / float(m.mean()))
            inside = (a * m).sum() / m.sum()
            outside = (a * (1 - m)).sum() / max((1 - m).sum(), 1)
            wins += inside > outside
        out[method] = {"images": len(ratios), "mass_on_landmark_vs_area": float(np.median(ratios)),
                       "images_denser_on_landmark": float(wins) / max(1, len(ratios))}
    return out
