"""Commands that queue many runs: sweep (a hyperparameter search) and reproduce (the poster's table)."""
from __future__ import annotations

import sys
import time
from dataclasses import replace

from core.cli.common import _abs, _check_classes, _counts, _runs_and_json
from core.errors import UserError
from core.train.config import DEFAULT_MODEL, add_arguments, default_classes, from_arguments


def add_sweep(sub) -> None:
    from core.runs.sweeps import SAMPLERS
    p = sub.add_parser("sweep", help="a hyperparameter search on Optuna; every trial is an ordinary run")
    p.add_argument("--data")
    p.add_argument("--model")
    p.add_argument("--grid", nargs="+", metavar="NAME=V1,V2", help="values to search, e.g. lr=0.01,0.001 "
                   "optimizer=adam,sgd (tpe/random also take ranges: lr=1e-4:1e-2)")
    p.add_argument("--sampler", choices=SAMPLERS, default=SAMPLERS[0])
    p.add_argument("--trials", type=int, default=None, help="how many configurations (tpe, random)")
    p.add_argument("--prune", action="store_true", help="stop trials that cannot catch up (median of earlier trials)")
    p.add_argument("--name", default=None, help="the sweep's name (default: sweep-DATE-TIME)")
    p.add_argument("--storage", default=None, metavar="URL", help="Optuna storage shared by several machines, e.g. "
                   "postgresql://user@host/db (default: sqlite in LANDMARKS_HOME)")
    p.add_argument("--join", metavar="NAME", help="work on an existing sweep (another machine, or after a crash)")
    p.add_argument("--status", metavar="NAME", help="show a sweep's trials")
    p.add_argument("--cancel", metavar="NAME", help="stop a sweep and its queued and running trials")
    _seeds_flag(p, "each trial trains one run per seed on one shared split; its objective is the group's mean")
    add_arguments(p)
    _runs_and_json(p)
    p.set_defaults(fn=cmd_sweep)


def add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="the poster's holdout table: queue its runs and fill it in")
    p.add_argument("--data", required=True)
    p.add_argument("--classes", default=None, help="comma list (default: the poster's 10,20,30,50)")
    p.add_argument("--models", default=None, help="comma list (default: the poster's resnet18,vgg16)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="64 px and 2 epochs: fits a CPU in minutes")
    p.add_argument("--storage", default=None, metavar="URL")
    _seeds_flag(p, "each row trains one run per seed on one shared split; the table shows mean ± sd (n)")
    _runs_and_json(p)
    p.set_defaults(fn=cmd_reproduce)


def _seeds_flag(p, what: str) -> None:
    p.add_argument("--seeds", default=None, metavar="S,S,...", help=f"two or more seeds, e.g. 0,1,2: {what}")


def cmd_sweep(a) -> dict:
    from core.runs import sweeps
    from core.runs.store import RunStore
    store = RunStore(a.runs)
    if a.status or a.cancel:
        info = sweeps.info(a.status, a.storage) if a.status else sweeps.cancel_sweep(a.cancel, store, a.storage)
    else:
        name = a.join or _create_sweep(a)
        print(f"sweep {name}: trials queue as ordinary runs (see the Runs and Sweeps pages)", file=sys.stderr)
        info = _drive(a, name, store)
    if not a.json:
        _print_sweep(info)
        return {}
    return _sweep_rows(info)


def _create_sweep(a) -> str:
    """A new sweep from --data, --grid and the training flags; its name."""
    from core.runs import sweeps
    if not a.data or not a.grid:
        raise UserError("sweep needs --data DIR and --grid NAME=V1,V2 … (or --join/--status/--cancel NAME).")
    space = sweeps.parse_space(a.grid)
    seeds = _seeds(a)
    cfg = from_arguments(a, data=_abs(a.data), model=a.model or DEFAULT_MODEL).validate()
    if a.classes is None and "classes" not in space:   # the poster's 10, or every class of a smaller set
        cfg = replace(cfg, classes=default_classes(len(_counts(cfg.data, cfg.clean)))).validate()
    if "classes" not in space:
        _check_classes(cfg.data, cfg.classes, cfg.clean)
    name = a.name or time.strftime("sweep-%Y%m%d-%H%M%S")
    sweeps.create(name, cfg, space, a.sampler, a.trials, a.prune, a.storage, seeds=seeds)
    return name


def _seeds(a) -> list[int] | None:
    """--seeds, checked (as train --seeds: not with --seed)."""
    from core.runs.groups import parse_seeds
    if not a.seeds:
        return None
    seeds = parse_seeds(a.seeds)
    if getattr(a, "seed", None) is not None:
        raise UserError("Give either --seed or --seeds, not both: --seeds 0,1,2 trains one run per seed.")
    return seeds


def cmd_reproduce(a) -> dict:
    from core.runs import reproduce, sweeps
    from core.runs.store import RunStore
    store = RunStore(a.runs)
    ints = [int(c) for c in a.classes.split(",") if c.strip()] if a.classes else None
    models = [m.strip() for m in a.models.split(",") if m.strip()] if a.models else None
    data = _abs(a.data)
    seeds = _seeds(a)
    name, cfg, configs, meta = reproduce.plan(data, ints, models, a.epochs, a.quick, available=len(_counts(data)),
                                              seeds=seeds)
    if meta["note"]:
        print(meta["note"], file=sys.stderr)
    for m, s in meta["stand_in"].items():
        print(f"{m}'s ImageNet weights cannot be had here: {s} stands in for it (the table says so)", file=sys.stderr)
    sweeps.create(name, cfg, configs=configs, storage=a.storage, kind="reproduce", meta=meta, seeds=seeds)
    info = _drive(a, name, store)
    rows = reproduce.table(info, store, [tuple(r) for r in meta["rows"]], meta["stand_in"])
    if not a.json:
        print(reproduce.markdown(rows, a.quick, meta["note"]))
        return {}
    return {"name": name, "quick": a.quick, "finished": info["finished"], "rows": rows,
            "skipped": meta["skipped"], "note": meta["note"]}


def _drive(a, name: str, store) -> dict:
    from core.runs.sweeps import drive
    a.interrupted = (f"the sweep driver stopped; running trials go on. Continue with: python -m core sweep --join "
                     f"{name}   (or stop them: python -m core sweep --cancel {name})")
    return drive(name, store, storage=a.storage, progress=_sweep_printer(name))


def _sweep_printer(name: str):
    last = [None]

    def progress(done, total, counts):
        line = (f"sweep {name}: {done}/{total} ended ({counts['complete']} complete, {counts['pruned']} pruned, "
                f"{counts['failed']} failed), {counts['running']} in flight")
        if line != last[0]:
            print(line, file=sys.stderr)
            last[0] = line
    return progress


def _sweep_rows(info: dict) -> dict:
    """--json: each trial's keys, and its seed group (group, n, mean, sd; the group is None for a trial
    of one run); `noise` says whether the best two trials differ by more than the seed noise."""
    keys = ("number", "params", "run_id", "val_acc", "state", "pruned_at", "error", "host",
            "group", "n", "mean", "sd")
    return {"name": info["name"], "storage": info["storage"], "sampler": info["sampler"], "counts": info["counts"],
            "finished": info["finished"], "configs": [{k: c[k] for k in keys} for c in info["configs"]],
            "best": info["best"] and {k: info["best"][k] for k in keys}, "seeds": info["seeds"],
            "noise": info["noise"]}


def _print_sweep(info: dict) -> None:
    from core.runs.sweeps import describe
    print(f"sweep {info['name']} ({info['sampler']}, {info['storage']}): " + ", ".join(
        f"{v} {k}" for k, v in info["counts"].items() if v and k != "ended"))
    for c in sorted(info["configs"], key=lambda c: -(c["val_acc"] or -1)):
        acc = "  —  " if c["val_acc"] is None else f"{c['val_acc']:.3f}"
        if c["group"] and c["n"]:
            acc = describe(c)
        params = " ".join(f"{k}={v}" for k, v in c["params"].items())
        note = f" at epoch {c['pruned_at']}" if c["pruned_at"] else f" ({c['error']})" if c["error"] else ""
        best = " ← best" if info["best"] and c["number"] == info["best"]["number"] else ""
        print(f"  #{c['number']:<3} {acc}  {c['state']}{note:<12} {params}  {c['run_id'] or ''}{best}")
    if info["noise"]:
        print(info["noise"]["sentence"])
