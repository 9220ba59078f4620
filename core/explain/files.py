"""Explanations as files: one PNG per image and method with the faithfulness score
(`predict --explain`), and class model images (`class-model`). Shared by CLI and pages."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.explain import METHODS, explain, faithfulness, render, to_map, to_png_bytes
from core.explain import class_model as _class_model


def image_uint8(x) -> np.ndarray:
    """(1,3,H,W) float tensor in [0,1] -> HxWx3 uint8."""
    return (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def explain_one(pred, x, method: str, target: int | None = None, alpha: float = 0.5) -> dict:
    """Attribution, its rendering and its faithfulness score for one image (1,3,H,W)."""
    if method not in METHODS:
        raise UserError(f"Unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}.")
    target = int(pred.probs(x)[0].argmax()) if target is None else int(target)
    layer = pred.model.submodule(pred.model.cam_layer)
    t0 = time.perf_counter()
    attr = explain(pred.model, x, target, method, target_layer=layer)
    ms = (time.perf_counter() - t0) * 1000
    m = to_map(attr[0])
    faith = faithfulness(pred.model, x, target, m)
    return {"method": method, "target": target, "name": pred.names[target], "attr": attr, "map": m,
            "image": render(method, image_uint8(x), attr[0], alpha=alpha), "ms": ms,
            "faithfulness": faith.score, "deletion_auc": faith.deletion_auc, "insertion_auc": faith.insertion_auc}


def explain_to_png(pred, x, image_path, method: str, out_dir: Path) -> dict:
    r = explain_one(pred, x, method)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{Path(str(image_path)).stem}_{method}.png"
    png.write_bytes(to_png_bytes(r["image"]))
    return {"method": method, "png": str(png), "target": r["name"], "faithfulness": r["faithfulness"],
            "deletion_auc": r["deletion_auc"], "insertion_auc": r["insertion_auc"]}


def resolve_class(pred, cls) -> int:
    """A class given as target index, landmark label or readable name."""
    s = str(cls)
    for seq in (pred.labels, pred.names):
        if s in seq:
            return seq.index(s)
    if s.isdigit() and int(s) < len(pred.labels):
        return int(s)
    raise UserError(f"Run {pred.run_id} has no class {s!r}; its classes are: {', '.join(pred.names[:20])}"
                    + (" …" if len(pred.names) > 20 else "") + ".")


def class_model_path(out_dir: Path, target: int, steps: int, size: int) -> Path:
    return Path(out_dir) / f"class_{int(target)}_{int(steps)}_{int(size)}.png"


def class_model_png(pred, cls, out_dir: Path, steps: int = 150, size: int = 0, progress=None, should_stop=None) -> dict:
    """Simonyan et al. 2014 §2 class model image, cached per run, class, steps and size (and
    redrawn when the run's checkpoint is newer than the cached image, e.g. after a resume)."""
    target = resolve_class(pred, cls)
    size = size or pred.cfg.image_size
    out_dir.mkdir(parents=True, exist_ok=True)
    png = class_model_path(out_dir, target, steps, size)
    if not png.exists() or png.stat().st_mtime < pred.weights_mtime:
        img = _class_model(pred.model, target, size=size, steps=steps, progress=progress, should_stop=should_stop)
        if should_stop is not None and should_stop():
            raise UserError("Class model generation was stopped before it finished; nothing was cached.")
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        tmp = png.with_suffix(".tmp")
        tmp.write_bytes(to_png_bytes(arr))
        tmp.replace(png)
    with_logit = pred.probs(pred.tensor(_load_png(png)))[0]
    return {"run_id": pred.run_id, "class": target, "name": pred.names[target], "png": str(png),
            "prob": float(with_logit[target])}


def _load_png(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.convert("RGB")


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
