"""The poster's holdout table as one action: its configurations as a sweep of explicit runs
(the poster's recipe: Adam, constant lr 0.001, 10 epochs, 1% holdout then 80/20), and the
table with the poster's numbers beside this run's."""
from __future__ import annotations

from core.errors import UserError
from core.train.config import DEFAULT_MODEL, TrainConfig

# (model, classes) -> the poster's (train, val, holdout) accuracy
POSTER = {("resnet18", 10): (0.992, 0.988, 0.988), ("resnet18", 20): (0.993, 0.983, 0.984),
          ("resnet18", 30): (0.991, 0.980, 0.969), ("resnet18", 50): (0.984, 0.975, 0.968),
          ("vgg16", 10): (0.935, 0.943, 0.941), ("vgg16", 20): (0.889, 0.900, 0.881)}
STAND_IN = DEFAULT_MODEL                 # ImageNet weights that ship with pip (work offline)
QUICK = dict(image_size=64, epochs=2)    # --quick: fits a CPU in minutes; the table says so


def _imagenet_ok(model: str) -> bool:
    """ImageNet weights can be had: cached, shipped, or downloadable right now."""
    from core.train.models import REGISTRY, imagenet_available
    ok, _ = imagenet_available(model)
    if ok or REGISTRY[model].imagenet is None:
        return ok
    try:
        REGISTRY[model].imagenet()
        return True
    except Exception:  # noqa: BLE001 - no internet, a proxy, a full disk: the stand-in trains instead
        return False


def plan(data: str, classes: list[int] | None = None, models: list[str] | None = None, epochs: int = 10,
         quick: bool = False, extra: dict | None = None) -> tuple[str, TrainConfig, list[dict], dict]:
    """(sweep name, base config, one params dict per table row, meta {rows, stand_in, quick}).
    Without `classes` and `models`: the poster's six rows; with them, every combination."""
    from core.train.models import REGISTRY
    bad = [m for m in models or [] if m not in REGISTRY]
    if bad:
        raise UserError(f"Unknown model {bad[0]!r}; choose from {', '.join(REGISTRY)}.")
    if any(c < 2 for c in classes or []):
        raise UserError("Each --classes value must be at least 2.")
    rows = [(m, c) for m, c in POSTER if (models is None or m in models) and (classes is None or c in classes)]
    if models and classes and len(rows) < len(models) * len(classes):
        rows = [(m, c) for m in models for c in classes]
    if not rows:
        raise UserError("Those models and classes match no row of the poster's table; give both --models and --classes.")
    stand = {m: STAND_IN for m in dict.fromkeys(m for m, _ in rows) if not _imagenet_ok(m)}
    base = dict(data=data, weights="imagenet", epochs=epochs, recipe="poster", optimizer="adam", lr=1e-3,
                batch_size=32, holdout=0.01, val=0.2, seed=0, **(extra or {}))
    if quick:
        base.update(image_size=QUICK["image_size"], epochs=min(epochs, QUICK["epochs"]))
    cfg = TrainConfig.from_dict({**base, "model": rows[0][0], "classes": rows[0][1]})
    configs = [{"model": stand.get(m, m), "classes": c} for m, c in rows]
    tag = "quick" if quick else f"{cfg.epochs}ep"
    name = f"poster-table-{tag}-" + "-".join(sorted({str(c) for _, c in rows}, key=int))
    return name, cfg, configs, {"rows": [list(r) for r in rows], "stand_in": stand, "quick": quick}


def table(sweep: dict, store, rows: list[tuple] | None = None, stand_in: dict | None = None) -> list[dict]:
    """One row per (model, classes): the poster's train/val/holdout and this run's."""
    stand_in = stand_in or {}
    by_params = {(c["params"].get("model"), int(c["params"].get("classes", 0))): c for c in sweep["configs"]}
    rows = rows or [(m, c) for (m, c) in by_params]
    out = []
    for model, classes in rows:
        used = stand_in.get(model, model)
        c = by_params.get((used, classes)) or {}
        run = store.get(c["run_id"]) if c.get("run_id") else None
        s = (run or {}).get("summary") or {}
        p = POSTER.get((model, classes), (None, None, None))
        out.append({"model": model, "classes": classes, "trained": used,
                    "stand_in": used != model, "state": c.get("state", "waiting"), "run_id": c.get("run_id"),
                    "status": (run or {}).get("status"),
                    "poster": {"train": p[0], "val": p[1], "holdout": p[2]},
                    "this": {"train": s.get("train_acc"), "val": s.get("val_acc"), "holdout": s.get("holdout_acc")}})
    return out


def markdown(rows: list[dict], quick: bool = False) -> str:
    def f(v):
        return "—" if v is None else f"{v:.3f}"
    lines = ["| Model | Classes | Poster train | Poster val | Poster holdout | Train | Val | Holdout | Run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = r["model"] + (f" (stand-in: {r['trained']})" if r["stand_in"] else "")
        lines.append(f"| {model} | {r['classes']} | {f(r['poster']['train'])} | {f(r['poster']['val'])} | "
                     f"{f(r['poster']['holdout'])} | {f(r['this']['train'])} | {f(r['this']['val'])} | "
                     f"{f(r['this']['holdout'])} | {r['run_id'] or r['state']} |")
    if quick:
        lines.append(f"\n--quick: {QUICK['image_size']} px, {QUICK['epochs']} epochs: not the poster's "
                     f"224 px and 10 epochs, so lower numbers are expected.")
    if any(r["stand_in"] for r in rows):
        lines.append("\nA stand-in model trained where the poster's ImageNet weights could not be had here.")
    return "\n".join(lines)
