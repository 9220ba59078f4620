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
    p.add_argument("--like", default=None, metavar="RUN_ID", help="a new run with RUN_ID's configuration (flags "
                   "given override it); refuses when RUN_ID's data set changed or is gone, unless --force")
    p.add_argument("--force", action="store_true", help="with --like: train even though the data set changed")
    p.add_argument("--seeds", default=None, metavar="S,S,...",
                   help="one run per seed on the first seed's split, as one seed group (mean and sd at the end)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_train)


def add_runs(sub) -> None:
    p = sub.add_parser("runs", help="list runs, rebuild the run index from the run folders, show a run's "
                                    "provenance (runs show RUN_ID) or tag a run (runs tag RUN TAG [--remove])")
    p.add_argument("action", nargs="?", choices=["list", "rebuild", "show", "tag"], default="list")
    p.add_argument("run_id", nargs="?", help="runs show / runs tag: the run")
    p.add_argument("tag", nargs="?", help="runs tag: the tag to add (or remove)")
    p.add_argument("--remove", action="store_true", help="runs tag: remove the tag instead")
    _runs_and_json(p)
    p.set_defaults(fn=cmd_runs)


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="metrics of a finished run")
    p.add_argument("run_id")
    p.add_argument("--split", choices=["train", "val", "holdout"], default="holdout")
    p.add_argument("--calibrate", action="store_true",
                   help="fit temperature scaling and the rejection threshold on the validation images and store "
                        "them with the run (calibration.json); without it a stored calibration is reported")
    p.add_argument("--target-precision", type=float, default=None, metavar="P",
                   help="with --calibrate: the rejection threshold is the lowest confidence whose answers are "
                        "right at least P of the time on validation (default 0.9)")
    p.add_argument("--distractors", metavar="DIR", default=None,
                   help="a folder of photos of no known landmark: half join the holdout as queries "
                        "(gap_with_distractors, a precision-coverage curve)")
    p.add_argument("--classifier", choices=["softmax", "knn"], default="softmax",
                   help="softmax: the network's own figures; knn: each image's 10 nearest training photos vote "
                        "(needs python -m core embed RUN first)")
    p.add_argument("--distractor-penalty", type=float, nargs="?", const=1.0, default=None, metavar="W",
                   help="with --classifier knn and --distractors: each query's confidence minus W (default 1) times "
                        "its similarity to the nearest photo of the distractors' tune half")
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


def _train_seeds(a) -> dict:
    """--seeds S1,S2,...: one run per seed through cmd_train's own path, all on the first seed's split
    (split_seed), each with `group` = the first run's id; then the group's mean and sd."""
    from argparse import Namespace
    from core.runs.groups import group_stats, name_group, parse_seeds, split_seed_of
    from core.runs.store import RunStore
    from core.train import distributed
    seeds = parse_seeds(a.seeds)
    if a.seed is not None:
        raise UserError("Give either --seed or --seeds, not both: --seeds 0,1,2 trains one run per seed.")
    if a.resume or distributed.under_torchrun():
        raise UserError("--seeds starts new runs: leave out --resume, and run it without torchrun "
                        "(--nproc N gives each run N processes).")
    split_seed = split_seed_of(seeds, a.split_seed)
    store, group, runs = RunStore(a.runs), None, []
    for seed in seeds:
        print(f"seed {seed} ({len(runs) + 1} of {len(seeds)})", file=sys.stderr)
        out = cmd_train(Namespace(**{**vars(a), "seeds": None, "seed": seed, "split_seed": split_seed,
                                     "group": group, "json": False}))
        runs.append(out["run_id"])
        if group is None:           # the first run names the group: its id is known once it exists
            group = name_group(store.run(out["run_id"]))
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
    fixed = _like(a, store) if a.like else {}
    if not a.data or not a.model:
        raise UserError("train needs --data DIR and --model NAME (or --resume RUN_ID, or --like RUN_ID).")
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


def _like(a, store) -> dict:
    """--like RUN_ID: RUN_ID's stored configuration under the flags not given, its id as the parent
    (config extra, as the Runs page's "Train again like this"); what differs from its provenance now
    is warned, a changed or missing data set refused unless --force. Returns the fields to fix."""
    from dataclasses import fields

    from core.runs import provenance
    from core.train.config import TrainConfig
    if a.resume or a.data or a.model:
        raise UserError("--like takes the data set and model from its run; leave out --resume, --data and --model.")
    cfg, found = provenance.like(store.require(a.like))
    for kind, sentence in found:
        if kind == "data" and not a.force:
            raise UserError(f"{sentence} Train on it as it is now with --force.")
        print(f"warning: {sentence}", file=sys.stderr)
    a.data, a.model = cfg.get("data"), cfg.get("model")
    for f in fields(TrainConfig):      # what the command line did not give comes from the run
        if f.metadata.get("flag") and f.name in cfg and getattr(a, f.name, None) is None:
            setattr(a, f.name, cfg[f.name])
    return {"extra": {**(cfg.get("extra") or {}), provenance.PARENT: a.like}}


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
    if a.action == "show":
        return _show(a)
    if a.action == "tag":
        return cmd_tag(a)
    if a.run_id is not None or a.remove:
        raise UserError(f"runs {a.action} takes no run id or --remove (runs show RUN_ID shows one run's "
                        "provenance; python -m core runs tag RUN TAG [--remove] tags a run).")
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


def _show(a) -> dict:
    """runs show RUN_ID: the run's provenance (core.runs.provenance)."""
    from core.runs import provenance
    from core.runs.store import RunStore
    if not a.run_id:
        raise UserError("runs show needs a run id: python -m core runs show RUN_ID.")
    rec = provenance.read(RunStore(a.runs).require(a.run_id))
    if a.json:
        return {"run_id": a.run_id, **rec}
    print("\n".join(provenance.lines(rec)))
    return {}


def cmd_tag(a) -> dict:
    """runs tag RUN TAG [--remove]: the run's tags afterwards."""
    from core.runs.store import RunStore
    if not a.run_id or a.tag is None:
        raise UserError("Give a run and a tag: python -m core runs tag RUN TAG [--remove].")
    tags = RunStore(a.runs).tag(a.run_id, a.tag, remove=a.remove)
    if not a.json:
        print(f"{a.run_id}: {', '.join(tags) or 'no tags'}")
        return {}
    return {"run_id": a.run_id, "tags": tags}


def cmd_eval(a) -> dict:
    from core.runs.store import RunStore
    store = RunStore(a.runs)
    run = store.get(a.run_id)
    if run is None:
        raise UserError(f"There is no run {a.run_id!r} in {store.root}.")
    knn = _knn_embeddings(a, store.require(a.run_id))     # None: the network's own figures (softmax)
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
    out.update(_calibration(a, store.require(a.run_id), out))
    if a.distractors and knn is None:
        extra = _eval_distractors(store.run(a.run_id), a.split, a.distractors)
        out.update({k: v for k, v in extra.items() if k != "gap"})      # `gap` stays the known landmarks' own
    out["classifier"] = "softmax" if knn is None else "knn"
    if knn is not None:
        _eval_knn(knn, a.split, out)
        if a.distractors:
            _eval_knn_distractors(store.run(a.run_id), knn, a, out)
    return out


def _knn_embeddings(a, run):
    """eval --classifier knn: the run's embeddings (core.serve.embeddings), checked before anything
    else is computed or printed; None for softmax."""
    penalty = getattr(a, "distractor_penalty", None)
    if getattr(a, "classifier", "softmax") != "knn":
        if penalty is not None:
            raise UserError("--distractor-penalty lowers the kNN classifier's similarities; add --classifier knn "
                            "(and --distractors DIR) to use it.")
        return None
    from core.cli.inference import _knn_store
    emb = _knn_store(run)
    if penalty is not None and not a.distractors:
        raise UserError("--distractor-penalty compares each query with the photos of a distractor folder; add "
                        "--distractors DIR.")
    if penalty is not None and not penalty > 0:
        raise UserError(f"--distractor-penalty takes a positive weight (the published form uses 1; got {penalty:g}).")
    if a.distractors and a.split != "holdout":
        raise UserError(f"Distractors join the holdout as queries; drop --split {a.split} or use --split holdout.")
    return emb


def _eval_knn(emb, split: str, out: dict) -> None:
    """Issue 23: the split's figures in `out` by the kNN classifier over the run's stored embeddings
    (acc, top5, gap, balanced_acc, macro_f1, n, per-class accuracy, confusion cells); the network's own
    stay beside them as softmax_acc, softmax_top5, softmax_gap."""
    from core.serve import embeddings
    m, confusion = embeddings.knn_evaluation(emb, split, len(out["per_class"]))
    out.update({f"softmax_{k}": out[k] for k in ("acc", "top5", "gap")})
    out.update({k: m[k] for k in ("acc", "top5", "gap", "balanced_acc", "macro_f1", "n")},
               k=embeddings.K_CLASSIFY, confidence="similarity of the predicted class's nearest training photo",
               confusion_cells=confusion.cells(), embeddings_missing=emb.meta.get("missing", 0))
    for row, acc, n in zip(out["per_class"], m["per_class"], m["support"]):
        row.update(acc=acc, support=n)


def _eval_knn_distractors(run, emb, a, out: dict) -> None:
    """eval --classifier knn --distractors DIR [--distractor-penalty W]: the kNN classifier's holdout
    plus the folder's query half, scored by core.serve.distractors as the softmax path is (the same
    keys; `gap` stays the known landmarks' own). Not written to the run folder: the distractors file
    there holds the network's own figures, which the Evaluate page shows."""
    from core.serve import distractors
    from core.serve.predictor import load_predictor
    pred = load_predictor(run)
    result = distractors.evaluate_knn(run, emb, pred.model, pred.cfg.image_size, a.distractors,
                                      penalty=a.distractor_penalty)
    if result["distractors_left_out"]:
        print(f"{result['distractors_left_out']} image(s) of the distractor folder are photos of this run's data set "
              "(same path or same bytes) and were left out.", file=sys.stderr)
    out.update({k: v for k, v in result.items() if k != "gap"})
    out.setdefault("distractor_penalty", None)


def _calibration(a, run, out: dict) -> dict:
    """Issue 23: --calibrate fits and stores the run's calibration; a stored one (fitted on the current
    checkpoint) makes `gap` and `<split>_gap` the calibrated GAP, with "calibrated": true."""
    if a.target_precision is not None and not 0 < a.target_precision <= 1:
        raise UserError(f"--target-precision must be between 0 and 1 (got {a.target_precision}).")
    if not a.calibrate and run.read_calibration() is None:
        c = None                                             # no need to import torch to say so
    elif a.calibrate:
        from core.serve.predictor import calibrate_run, load_predictor
        from core.train.calibration import TARGET_PRECISION
        print(f"calibrating run {a.run_id} on its validation images…", file=sys.stderr)
        c = calibrate_run(load_predictor(run), run, a.target_precision or TARGET_PRECISION,
                          distractors=_tune_distractors(a, run))
    else:
        from core.serve.predictor import current_calibration
        c = current_calibration(run)
    if c is None:
        if not a.json:
            why = "was calibrated on an older checkpoint" if run.read_calibration() else "has no calibration yet"
            print(f"run {a.run_id} {why} (runs are calibrated at the end of training unless trained with "
                  f"--calibrate off): python -m core eval {a.run_id} --calibrate fits one on its validation images",
                  file=sys.stderr)
        return {"calibrated": False}
    res = {"calibrated": True, "gap_uncalibrated": out["gap"], "temperature": c["temperature"],
           "threshold": c["threshold"], "target_precision": c.get("target_precision"),
           "ece_before": c["ece_before"], "ece_after": c["ece_after"], "ece_on": c.get("ece_on")}
    for s, r in c.get("splits", {}).items():
        res[f"{s}_gap"] = r["gap_after"]
        res[f"{s}_ece_before"], res[f"{s}_ece_after"] = r["ece_before"], r["ece_after"]
    if a.split in c.get("splits", {}):
        res["gap"] = c["splits"][a.split]["gap_after"]
    return res


def _tune_distractors(a, run) -> list:
    """The "tune" half of --distractors (core.serve.distractors, issue 23's other half), when both exist:
    the rejection threshold then counts every answer on them as wrong."""
    if not getattr(a, "distractors", None):
        return []
    try:
        from core.serve import distractors
    except ImportError:
        return []
    return list(distractors.load(a.distractors, run).tune)


def _eval_distractors(run, split: str, folder: str) -> dict:
    """The split scored with the distractor folder's query half; kept in the run folder too."""
    from core.serve import distractors
    from core.serve.predictor import load_predictor
    if split != "holdout":
        raise UserError(f"Distractors join the holdout as queries; drop --split {split} or use --split holdout.")
    predictions = run.predictions(split)
    if predictions is None:
        raise UserError(f"Run {run.id} has no per-image holdout predictions to score distractors with.")
    result = distractors.evaluate(run, load_predictor(run), predictions, folder)
    if result["distractors_left_out"]:
        print(f"{result['distractors_left_out']} image(s) of the distractor folder are photos of this run's data set "
              "(same path or same bytes) and were left out.", file=sys.stderr)
    run.write_distractors(split, result)
    return result


def _fill_balanced(evals: dict, run) -> None:
    """Runs evaluated before balanced_acc/macro_f1 were stored: both from the split's confusion."""
    from core.train import metrics
    for split, e in evals.items():
        if e.get("n") and e.get("balanced_acc") is None:
            confusion = run.read_confusion(split, e)
            if confusion is not None:
                e.update(balanced_acc=metrics.balanced_accuracy(confusion), macro_f1=metrics.macro_f1(confusion))
