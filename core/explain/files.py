"""Explanations as files: one PNG per image and method with the faithfulness score
(`predict --explain`), and class model images (`class-model`). Shared by CLI, jobs and pages."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import UserError
from core.files import atomic_write
from core.explain.api import explain_one
from core.explain.class_model import batches, class_model as _class_model, class_models as _class_models
from core.explain.render import to_png_bytes


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
    if _stale(png, pred):
        img = _class_model(pred.model, target, size=size, steps=steps, progress=progress, should_stop=should_stop)
        if should_stop is not None and should_stop():
            raise UserError("Class model generation was stopped before it finished; nothing was cached.")
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        atomic_write(png, to_png_bytes(arr))
    with_logit = pred.probs(pred.tensor(_load_png(png)))[0]
    return {"run_id": pred.run_id, "class": target, "name": pred.names[target], "png": str(png),
            "prob": float(with_logit[target])}


def class_model_pngs(pred, classes: list, out_dir: Path, steps: int = 150, size: int = 0, progress=None,
                     should_stop=None) -> list[dict]:
    """class_model_png for several classes, the ones not cached drawn together in batches
    (core.explain.class_model.batches); each batch's PNGs are written as soon as it ends, so a
    stop keeps the finished ones. ``progress(fields)`` after each step: step, steps, batch,
    batches, first and last (1-based: the classes being drawn, among the `classes` to draw)."""
    targets = [resolve_class(pred, c) for c in classes]
    size = size or pred.cfg.image_size
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [t for t in dict.fromkeys(targets) if _stale(class_model_path(out_dir, t, steps, size), pred)]
    chunks, first = batches(todo, size), 1
    for b, chunk in enumerate(chunks):
        fields = {"batch": b + 1, "batches": len(chunks), "first": first, "last": first + len(chunk) - 1,
                  "classes": len(todo), "steps": steps}
        on_step = None if progress is None else (lambda s, n, scores, f=fields: progress({**f, "step": s}))
        imgs = _class_models(pred.model, chunk, size=size, steps=steps, progress=on_step, should_stop=should_stop)
        if should_stop is not None and should_stop():
            raise UserError("Class model generation was stopped before it finished; the images of the classes "
                            "finished before the stop are kept.")
        for t, img in zip(chunk, imgs):
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            atomic_write(class_model_path(out_dir, t, steps, size), to_png_bytes(arr))
        first += len(chunk)
    return [class_model_png(pred, pred.labels[t], out_dir, steps=steps, size=size) for t in targets]


def _stale(png: Path, pred) -> bool:
    return not png.exists() or png.stat().st_mtime < pred.weights_mtime

def _load_png(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.convert("RGB")
