"""The poster's holdout table as one action: its configurations as a sweep of explicit runs
(the poster's recipe: Adam, constant lr 0.001, 10 epochs, 1% holdout then 80/20), and the
table with the poster's numbers beside this run's.

The rows fit the data set in use (`fit`): those needing more classes than it has are skipped and
named in one sentence; a set smaller than every row trains each model on all its classes. Rows
that train one configuration (ResNet-18 and VGG-16 both falling back to the stand-in offline)
share one run, and the table says so."""
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


def fit(rows: list[tuple], available: int) -> tuple[list[tuple], list[tuple], bool]:
    """(rows a data set of `available` classes can hold, rows it skips, fell back). Where it holds
    none (a 4-class set and the poster's 10-50), each model trains on all its classes instead."""
    if available < 2:
        raise UserError(f"The data set has {available} class{'es' if available != 1 else ''}; the poster's table "
                        "needs at least 2.")
    kept = [(m, c) for m, c in rows if c <= available]
    skipped = [(m, c) for m, c in rows if c > available]
    if kept:
        return kept, skipped, False
    return [(m, available) for m in dict.fromkeys(m for m, _ in rows)], skipped, True


def skip_note(skipped: list[tuple], kept: list[tuple], available: int, fell_back: bool) -> str | None:
    """One sentence naming the rows a data set cannot hold (None when it holds every one)."""
    if not skipped:
        return None
    models = list(dict.fromkeys(m for m, _ in skipped))
    named = " and ".join(f"{m} at {_and([c for mm, c in skipped if mm == m])}" for m in models)
    instead = (f"; {_and(list(dict.fromkeys(m for m, _ in kept)))} train on all {available} classes instead "
               f"(the poster has no numbers at {available})") if fell_back else ""
    return f"The data set has {available} classes, so the table skips {named} classes{instead}."


def _and(items: list) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def plan(data: str, classes: list[int] | None = None, models: list[str] | None = None, epochs: int = 10,
         quick: bool = False, extra: dict | None = None, available: int | None = None,
         seeds: list[int] | None = None) -> tuple[str, TrainConfig, list[dict], dict]:
    """(sweep name, base config, one params dict per configuration to train, meta {rows, stand_in,
    quick, skipped, note}). Without `classes` and `models`: the poster's six rows; with them, every
    combination. `available`: the data set's class count; rows needing more are skipped (see fit).
    Rows that train the same configuration (two models with one stand-in) share one trial: Optuna
    keeps one of two equal enqueued trials, and a study planned for both would wait for ever.
    `seeds`: each row trains one run per seed (the sweep's seed groups); its name says so."""
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
    skipped, note = [], None
    if available is not None:
        rows, skipped, fell_back = fit(rows, available)
        note = skip_note(skipped, rows, available, fell_back)
    # a model without ImageNet weights at all (the small CNN) trains from scratch as itself; one whose
    # weights cannot be had here (offline) has the stand-in train in its place, and the table says so
    scratch = [m for m in dict.fromkeys(m for m, _ in rows) if REGISTRY[m].imagenet is None]
    stand = {m: STAND_IN for m in dict.fromkeys(m for m, _ in rows) if m not in scratch and not _imagenet_ok(m)}
    base = dict(data=data, weights="imagenet", epochs=epochs, recipe="poster", optimizer="adam", lr=1e-3,
                batch_size=32, holdout=0.01, val=0.2, seed=0, **(extra or {}))
    if quick:
        base.update(image_size=QUICK["image_size"], epochs=min(epochs, QUICK["epochs"]))
    cfg = TrainConfig.from_dict({**base, "model": rows[0][0], "classes": rows[0][1]})
    configs = list({(stand.get(m, m), c): {"model": stand.get(m, m), "classes": c,
                                           **({"weights": "none"} if m in scratch else {})}
                    for m, c in rows}.values())
    tag = "quick" if quick else f"{cfg.epochs}ep"
    name = f"poster-table-{tag}-" + "-".join(sorted({str(c) for _, c in rows}, key=int))
    name += f"-seeds-{'-'.join(map(str, seeds))}" if seeds else ""
    return name, cfg, configs, {"rows": [list(r) for r in rows], "stand_in": stand, "scratch": scratch, "quick": quick,
                                "skipped": [list(r) for r in skipped], "note": note, "seeds": seeds}


def table(sweep: dict, store, rows: list[tuple] | None = None, stand_in: dict | None = None) -> list[dict]:
    """One row per (model, classes): the poster's train/val/holdout and this run's (with the holdout's
    image count). A row that trained the same configuration as an earlier one (both fell back to one
    stand-in) shares its run and names it in `same_as`. Each row is a seed group too: `group` (None for
    a row of one run), `n` finished runs, `mean` and `sd` of their metrics; with a group, `this` holds
    the group's means (the run_id is its first run's)."""
    stand_in = stand_in or {}
    by_params = {(c["params"].get("model"), int(c["params"].get("classes", 0))): c for c in sweep["configs"]}
    rows = rows or [(m, c) for (m, c) in by_params]
    out, first = [], {}
    for model, classes in rows:
        used = stand_in.get(model, model)
        owner = first.setdefault((used, classes), model)
        c = by_params.get((used, classes)) or {}
        run = store.get(c["run_id"]) if c.get("run_id") else None
        s = (run or {}).get("summary") or {}
        p = POSTER.get((model, classes), (None, None, None))
        n = (store.evals(c["run_id"]).get("holdout") or {}).get("n") if (run or {}).get("status") == "done" else None
        g = _group(store, c, run)
        s = {**s, **{k: v for k, v in g["mean"].items() if g["group"]}}
        out.append({**g, "model": model, "classes": classes, "trained": used, "stand_in": used != model,
                    "scratch": (c.get("params") or {}).get("weights") == "none",
                    "same_as": owner if owner != model else None,
                    "state": c.get("state", "waiting"), "run_id": c.get("run_id"),
                    "status": (run or {}).get("status"),
                    "poster": {"train": p[0], "val": p[1], "holdout": p[2]},
                    "this": {"train": s.get("train_acc"), "val": s.get("val_acc"), "holdout": s.get("holdout_acc"),
                             "holdout_n": n}})
    return out


def _group(store, config: dict, run: dict | None) -> dict:
    """{group, n, mean, sd} of a row's trial: its seed group's finished runs (live, as they finish), or
    its one run (sd None)."""
    from core.runs.groups import METRICS, group_stats
    if config.get("group"):
        try:
            return {k: v for k, v in group_stats(store, config["group"]).to_dict().items() if k != "runs"}
        except UserError:                          # none finished yet
            return {"group": config["group"], "n": 0, "mean": {}, "sd": {}}
    s = (run or {}).get("summary") or {}
    done = (run or {}).get("status") == "done"
    mean = {k: s[k] for k in METRICS if done and s.get(k) is not None}
    return {"group": None, "n": int(done), "mean": mean, "sd": {k: None for k in mean}}


def row_note(r: dict) -> str:
    """Why a row shares another row's run ('' when it has its own)."""
    if not r.get("same_as"):
        return ""
    if r["same_as"] == r["trained"]:
        return f"same run as {r['same_as']}: {r['model']} fell back to it"
    return f"same run as {r['same_as']}: both fell back to {r['trained']}"


def markdown(rows: list[dict], quick: bool = False, note: str | None = None) -> str:
    """The table as Markdown; `note`: plan()'s sentence naming the rows the data set skips."""
    def f(v):
        return "—" if v is None else f"{v:.3f}"

    def spread(r, key):
        sd = (r.get("sd") or {}).get(key) if r.get("group") else None
        return f(r["this"][key.split("_")[0]]) + (f" ± {sd:.3f}" if sd is not None else "") + (
            f" (n = {r['n']})" if r.get("group") else "")

    def holdout(r):
        t = r["this"]
        return spread(r, "holdout_acc") + (f" (on {t['holdout_n']} images)" if t.get("holdout_n") else "")
    lines = ["| Model | Classes | Poster train | Poster val | Poster holdout | Train | Val | Holdout | Run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = r["model"] + (f" (stand-in: {r['trained']})" if r["stand_in"] else "")
        model += " (from scratch: it has no ImageNet weights)" if r.get("scratch") else ""
        run = (r["run_id"] or r["state"]) + (f" ({row_note(r)})" if r.get("same_as") else "")
        lines.append(f"| {model} | {r['classes']} | {f(r['poster']['train'])} | {f(r['poster']['val'])} | "
                     f"{f(r['poster']['holdout'])} | {spread(r, 'train_acc')} | {spread(r, 'val_acc')} | "
                     f"{holdout(r)} | {run} |")
    if quick:
        lines.append(f"\n--quick: {QUICK['image_size']} px, {QUICK['epochs']} epochs: not the poster's "
                     f"224 px and 10 epochs, so lower numbers are expected.")
    if any(r["stand_in"] for r in rows):
        lines.append("\nA stand-in model trained where the poster's ImageNet weights could not be had here.")
    if any(r.get("group") for r in rows):
        lines.append("\nWith seeds, each figure is the mean ± sd over the row's seed group (n: its finished runs); "
                     "the run named is the group's first.")
    if note:
        lines.append("\n" + note)
    return "\n".join(lines)
