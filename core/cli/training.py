"""Training commands: train (with --resume, and every process of a torchrun launch), runs, eval."""
from __future__ import annotations

import os
import sys
from dataclasses import replace

from core.cli.common import _abs, _counts, _runs_and_json
from core.errors import UserError
from core.train.config import add_arguments, default_classes, from_arguments


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (defaults: the seed's Adam, lr 0.001, 10 epochs)")
    p.add_argument("--data")
    p.add_argument("--model")
    add_arguments(p)                     # one flag per TrainConfig field, defaults from the dataclass
    p.add_argument("--runs", default=None)
    p.add_argument("--resume", default=None, metavar="RUN_ID")
    p.add_argument("--seeds", default=None, metavar="S,S,...",
                   help="one run per seed on the first seed's split, as one seed group (mean and sd at the end)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_train)


def add_runs(sub) -> None:
    p = sub.add_parser("runs", help="list runs, or rebuild the run index from the run folders")
    p.add_argument("action", nargs="?", choices=["list", "rebuild"], default="list")
    _runs_and_json(p)
    p.set_defaults(fn=cmd_runs)


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="metrics of a finished run")
    p.add_argument("run_id")
    p.add_argument("--split", choices=["train", "val", "holdout"], default="holdout")
    _runs_and_json(p)
    p.set_defaults(fn=cmd_eval)


def cmd_train(a) -> dict:
    if getattr(a, "seeds", None) is not None:
        return _train_seeds(a)
    import core.runs.tasks  # noqa: F401 - the job kinds register themselves
    from core.runs.jobs import run_job
    from core.train import distributed
    from core.train.sinks import TqdmSink
    ddp = distributed.setup()     # under torchrun every process runs this command: rank 0 the run, the others follow
    if not ddp.is_main:
        return _follow(ddp)
    try:
        store, run_id = _open_run(a, ddp)
    except BaseException:
        ddp.broadcast(None)       # the others stop too (rank 0 says why)
        raise
    ddp.broadcast(run_id)
    print(f"run {run_id} in {store.run(run_id).dir}", file=sys.stderr)
    result = run_job(store, run_id, sink=TqdmSink())
    if result["status"] == "failed":
        if not a.resume and store.epochs(run_id).empty:
            store.delete(run_id)  # nothing was trained: do not leave an empty failed run behind
        raise UserError(result["error"])
    ddp.close()
    keys = ("run_id", "status", "epochs_completed", "train_acc", "val_acc", "holdout_acc", "holdout_top5",
            "holdout_gap", "images_per_s", "seconds")
    return {**{k: result.get(k) for k in keys}, "run_id": run_id}


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        seeds = []
    if len(seeds) < 2 or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds takes two or more different whole numbers of 0 or more, like 0,1,2; got {text!r}.")
    return seeds


def _train_seeds(a) -> dict:
    """--seeds S1,S2,...: one run per seed through cmd_train's own path, all on the first seed's split
    (split_seed), each with `group` = the first run's id; then the group's mean and sd."""
    from argparse import Namespace
    from core.runs.groups import group_stats
    from core.runs.store import RunStore
    from core.train import distributed
    seeds = _parse_seeds(a.seeds)
    if a.seed is not None:
        raise UserError("Give either --seed or --seeds, not both: --seeds 0,1,2 trains one run per seed.")
    if a.resume or distributed.under_torchrun():
        raise UserError("--seeds starts new runs: leave out --resume, and run it without torchrun "
                        "(--nproc N gives each run N processes).")
    split_seed = seeds[0] if a.split_seed is None else a.split_seed
    store, group, runs = RunStore(a.runs), None, []
    for seed in seeds:
        print(f"seed {seed} ({len(runs) + 1} of {len(seeds)})", file=sys.stderr)
        out = cmd_train(Namespace(**{**vars(a), "seeds": None, "seed": seed, "split_seed": split_seed,
                                     "group": group, "json": False}))
        runs.append(out["run_id"])
        if group is None:           # the first run names the group: its id is known once it exists
            group = out["run_id"]
            first = store.run(group)
            first.update_config(replace(first.config(), group=group))
    stats = group_stats(store, group)
    if not a.json:                  # the group's table; _out adds its id and n
        for k, m in stats.mean.items():
            sd = stats.sd.get(k)
            print(f"{k:>16}: {m:.4f} ± {'—' if sd is None else f'{sd:.4f}'}")
    return {**stats.to_dict(), "runs": runs}


def _open_run(a, ddp):
    """(store, run id) of the run this command trains: a new one, or --resume's, claimed to run here.
    --nproc N: the run's job starts torchrun with N processes. Under torchrun (every process runs
    this command) the run takes torchrun's process count."""
    from core.runs.jobs import check_gpus, foreground_device
    from core.runs.store import RunStore
    from core.train import distributed
    store = RunStore(a.runs)
    torchrun = distributed.under_torchrun()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ddp.world_size)) if torchrun else None  # this machine's GPUs
    if a.resume:
        return store, _resume(a, ddp, store, torchrun, local)
    if not a.data or not a.model:
        raise UserError("train needs --data DIR and --model NAME (or --resume RUN_ID).")
    fixed = {}
    if torchrun:
        if a.nproc not in (None, ddp.world_size):
            raise UserError(f"--nproc {a.nproc} disagrees with torchrun's {ddp.world_size} process(es); leave "
                            "--nproc out under torchrun.")
        fixed["nproc"] = ddp.world_size
    from core.data.splits import top_classes
    cfg = from_arguments(a, data=_abs(a.data), model=a.model, **fixed).validate()
    if not torchrun:
        check_gpus(cfg.device, cfg.nproc)
    counts = _counts(cfg.data, cfg.clean)
    if a.classes is None:            # the poster's 10, or every class of a smaller data set
        cfg = replace(cfg, classes=default_classes(len(counts))).validate()
    top_classes(counts, cfg.classes)  # fail fast, before a run folder exists
    run_id = store.create(cfg, status="running", device=foreground_device(cfg.device, local or cfg.nproc))
    return store, run_id


def _resume(a, ddp, store, torchrun: bool, local: int | None) -> str:
    """--resume RUN_ID: the run, claimed to run here, on as many processes as it was started with."""
    from core.runs.jobs import check_gpus, foreground_device, resume
    run_id = a.resume
    cfg = store.require(run_id).config()
    if torchrun and cfg.nproc != ddp.world_size:
        raise UserError(f"Run {run_id} trains on {cfg.nproc} process(es), not {ddp.world_size}; resume it with "
                        f"torchrun --nproc_per_node {cfg.nproc} (over all machines), or without torchrun: "
                        f"python -m core train --resume {run_id}.")
    if not torchrun:
        check_gpus(cfg.device, cfg.nproc)
    resume(store, run_id, here=foreground_device(cfg.device, local or cfg.nproc))  # holds its device's slots
    return run_id


def _follow(ddp) -> dict:
    """A process of a torchrun launch other than rank 0: train the run rank 0 opened, print nothing."""
    from core.errors import Cancelled
    from core.train.engine import fit
    if ddp.broadcast(None) is None:
        raise SystemExit(2)       # rank 0 could not open the run and says why
    try:
        fit(None, None, ddp=ddp)
    except Cancelled:
        pass
    ddp.close()
    return {}


def cmd_runs(a) -> dict:
    from core.runs.store import RunStore
    if a.action == "rebuild":
        out = RunStore.rebuild(a.runs)
        if not a.json:
            print(f"rebuilt {out['database']} from {out['runs']} run folder(s)", file=sys.stderr)
        return out
    rows = [{k: r.get(k) for k in ("run_id", "status", "model", "classes", "data")} | {
             "holdout_acc": (r.get("summary") or {}).get("holdout_acc")} for r in RunStore(a.runs).list()]
    if not a.json:
        for r in rows:
            acc = "—" if r["holdout_acc"] is None else f"{r['holdout_acc']:.3f}"
            print(f"{r['run_id']}  {r['status']:<11} {r['model']:<18} {acc}")
        return {}
    return {"runs": rows}


def cmd_eval(a) -> dict:
    from core.runs.store import RunStore
    store = RunStore(a.runs)
    run = store.get(a.run_id)
    if run is None:
        raise UserError(f"There is no run {a.run_id!r} in {store.root}.")
    evals = store.evals(a.run_id)
    if a.split not in evals:
        raise UserError(f"Run {a.run_id} has no {a.split} evaluation (status {run['status']}); "
                        f"evaluations are written when a run finishes.")
    _fill_balanced(evals, store.run(a.run_id))
    m = evals[a.split]
    hist = store.epochs(a.run_id)[["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]]
    per_class = [{"label": l, "name": n, "acc": acc, "support": s}
                 for l, n, acc, s in zip(m["labels"], m["names"], m["per_class"], m["support"])]
    out = {"run_id": a.run_id, "status": run["status"], "split": a.split, "epochs_completed": int(len(hist))}
    out.update({f"{s}_{k}": evals.get(s, {}).get(k) for s in ("train", "val", "holdout")
                for k in ("acc", "top5", "gap", "balanced_acc", "macro_f1")})
    out.update(acc=m["acc"], top5=m["top5"], gap=m["gap"], balanced_acc=m.get("balanced_acc"),
               macro_f1=m.get("macro_f1"), n=m["n"], images_per_s=run["summary"].get("images_per_s"),
               seconds=run["summary"].get("seconds"), history=hist.to_dict("records"), per_class=per_class)
    confusion = store.run(a.run_id).read_confusion(a.split, m)
    out["confusion_cells"] = confusion.cells() if confusion is not None else []   # [true, predicted, count]
    return out


def _fill_balanced(evals: dict, run) -> None:
    """Runs evaluated before balanced_acc/macro_f1 were stored: both from the split's confusion."""
    from core.train import metrics
    for split, e in evals.items():
        if e.get("n") and e.get("balanced_acc") is None:
            confusion = run.read_confusion(split, e)
            if confusion is not None:
                e.update(balanced_acc=metrics.balanced_accuracy(confusion), macro_f1=metrics.macro_f1(confusion))
