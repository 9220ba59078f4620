"""Command line: python -m core {demo-data,stats,train,runs,eval,predict,class-model,export,download,sweep,reproduce}.

With --json the last line on stdout is one JSON object; progress goes to stderr.
Bad input prints one sentence to stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from core.train.config import DEFAULT_MODEL, add_arguments, from_arguments
from core.errors import UserError


def _out(obj: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_clean(obj)))
    else:
        for k, v in obj.items():
            if not isinstance(v, (list, dict)):
                print(f"{k:>16}: {v:.4f}" if isinstance(v, float) else f"{k:>16}: {v}")


def _clean(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _run_here(a, kind_name: str, args: dict, run_id: str | None = None, on_progress=None) -> dict:
    """A long task through its job kind (core.runs.tasks), in this process: the dashboard runs the
    same function as a background job. Its failure is the job's one sentence."""
    import core.runs.tasks  # noqa: F401 - the job kinds register themselves
    from core.runs.jobs import run_here
    from core.runs.store import RunStore
    out = run_here(RunStore(getattr(a, "runs", None)), kind_name, args, run_id, on_progress)
    if out["status"] == "failed":
        raise UserError(out["error"])
    if out["status"] != "done":
        raise KeyboardInterrupt()
    return out


def cmd_demo_data(a) -> dict:
    def progress(p):
        done, total = p.get("done", 0), p.get("total", 0)
        print(f"\rgenerated {done}/{total}", end="" if done < total else "\n", file=sys.stderr)
    out = _run_here(a, "demo", {"out": str(Path(a.out).expanduser().resolve()), "classes": a.classes,
                                "images": a.images, "size": a.size, "seed": a.seed}, on_progress=progress)
    info = out["info"]
    info["counts"] = {str(k): v for k, v in info["counts"].items()}
    return info


def cmd_stats(a) -> dict:
    from core.data.prepared import AUTO_SCAN_IMAGES
    from core.data.readers import imbalance, label_counts
    counts, dups = label_counts(a.data, clean=a.clean)
    out = imbalance(counts, a.top)
    out["top"] = [{"label": str(l), "count": int(c)} for l, c in counts.head(a.top).items()]
    out["duplicates"] = dups       # rows listed twice with the same label: counted once, as training does
    # scanning decodes every file of the top classes (cached): automatic for small sets
    scan = a.scan or (not a.no_scan and out["top_n_images"] <= AUTO_SCAN_IMAGES)
    if scan:
        out["scan"] = _scan(a, counts.head(a.top).index)
    if not a.json:
        _print_stats(out, scan)
        return {}
    return out


def _scan(a, labels) -> dict:
    """Decode the files of `labels` that are on disk (cached; the scan job kind, as the Dataset page
    runs it); count those listed but missing."""
    r = _run_here(a, "scan", {"data": str(Path(a.data).expanduser().resolve()), "clean": bool(a.clean),
                              "labels": [str(x) for x in labels]})
    return {"checked": r["checked"], "unreadable": len(r["reasons"]), "missing": r["missing"],
            "missing_examples": r["missing_examples"], "skipped": [{"path": p, "reason": w} for p, w in r["reasons"]]}


def _print_stats(out: dict, scan: bool) -> None:
    print(f"{out['images']:,} images in {out['classes']:,} classes; top {out['top_n']} hold "
          f"{out['top_n_share']:.1%}; largest/smallest {out['largest']}/{out['smallest']} ({out['ratio']:.1f}x)")
    w = max((len(r["label"]) for r in out["top"]), default=8)
    for row in out["top"]:
        print(f"  {row['label']:<{w}}  {row['count']:>9,}")
    d = out["duplicates"]
    if d["rows"]:
        print(f"duplicates: {d['rows']:,} row(s) list an image again under the same landmark, counted once "
              f"(e.g. {', '.join(d['ids'])})")
    if not scan:
        print(f"scan: skipped for {out['top_n_images']:,} images; pass --scan to decode them and list unreadable files")
        return
    s = out["scan"]
    print(f"scan: {s['checked']} files checked, {s['unreadable']} unreadable"
          + (f", {s['missing']:,} listed but not on disk (e.g. {s['missing_examples'][0]})" if s["missing"] else ""))
    for k in s["skipped"][:50]:
        print(f"  skipped {k['path']}: {k['reason']}")


def cmd_train(a) -> dict:
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


def _open_run(a, ddp):
    """(store, run id) of the run this command trains: a new one, or --resume's, claimed to run here.
    --nproc N: the run's job starts torchrun with N processes. Under torchrun (every process runs
    this command) the run takes torchrun's process count."""
    from core.runs.jobs import check_gpus, foreground_device, resume
    from core.runs.store import RunStore
    from core.train import distributed
    store = RunStore(a.runs)
    torchrun = distributed.under_torchrun()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ddp.world_size)) if torchrun else None  # this machine's GPUs
    if a.resume:
        run_id = a.resume
        cfg = store.require(run_id).config()
        if torchrun and cfg.nproc != ddp.world_size:
            raise UserError(f"Run {run_id} trains on {cfg.nproc} process(es), not {ddp.world_size}; resume it with "
                            f"torchrun --nproc_per_node {cfg.nproc} (over all machines), or without torchrun: "
                            f"python -m core train --resume {run_id}.")
        if not torchrun:
            check_gpus(cfg.device, cfg.nproc)
        resume(store, run_id, here=foreground_device(cfg.device, local or cfg.nproc))  # holds its device's slots
        return store, run_id
    if not a.data or not a.model:
        raise UserError("train needs --data DIR and --model NAME (or --resume RUN_ID).")
    fixed = {}
    if torchrun:
        if a.nproc not in (None, ddp.world_size):
            raise UserError(f"--nproc {a.nproc} disagrees with torchrun's {ddp.world_size} process(es); leave "
                            "--nproc out under torchrun.")
        fixed["nproc"] = ddp.world_size
    cfg = from_arguments(a, data=str(Path(a.data).expanduser().resolve()), model=a.model, **fixed).validate()
    if not torchrun:
        check_gpus(cfg.device, cfg.nproc)
    from core.data.readers import load_index
    from core.data.splits import top_classes
    top_classes(load_index(cfg.data, clean=cfg.clean).counts(), cfg.classes)  # fail fast, before a run folder exists
    run_id = store.create(cfg, status="running", device=foreground_device(cfg.device, local or cfg.nproc))
    return store, run_id


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
    from core.train import metrics
    for e in evals.values():      # runs evaluated before balanced_acc/macro_f1 were stored: from the confusion
        if e.get("n") and e.get("confusion") and e.get("balanced_acc") is None:
            e.update(balanced_acc=metrics.balanced_accuracy(e["confusion"]), macro_f1=metrics.macro_f1(e["confusion"]))
    m = evals[a.split]
    hist = store.epochs(a.run_id)[["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]]
    per_class = [{"label": l, "name": n, "acc": acc, "support": s}
                 for l, n, acc, s in zip(m["labels"], m["names"], m["per_class"], m["support"])]
    out = {"run_id": a.run_id, "status": run["status"], "split": a.split, "epochs_completed": int(len(hist))}
    out.update({f"{s}_{k}": evals.get(s, {}).get(k) for s in ("train", "val", "holdout")
                for k in ("acc", "top5", "gap", "balanced_acc", "macro_f1")})
    out.update(acc=m["acc"], top5=m["top5"], gap=m["gap"], balanced_acc=m.get("balanced_acc"),
               macro_f1=m.get("macro_f1"), n=m["n"], images_per_s=run["summary"].get("images_per_s"),
               seconds=run["summary"].get("seconds"), history=hist.to_dict("records"), per_class=per_class,
               confusion=m["confusion"])
    return out


def cmd_predict(a) -> dict:
    from core.runs.store import RunStore
    from core.serve.predictor import load_predictor
    methods = _explain_methods(a.explain)   # an unknown name: one sentence before the model loads
    pred = load_predictor(RunStore(a.runs).require(a.run))
    results = []
    for path in a.images:
        try:
            x = pred.tensor(path)
        except (UserError, OSError, ValueError) as e:
            results.append({"image": path, "error": str(e) or type(e).__name__})
            continue
        item = {"image": path, "top": pred.top(x, a.top)}
        if methods:
            item["explanations"] = _explain(pred, x, path, methods, a.out)
        results.append(item)
        if not a.json:
            print(path)
            for t in item["top"]:
                print(f"  {t['prob']:.3f}  {t['name']}")
    if all("error" in r for r in results):
        raise UserError(results[0]["error"])
    return {"run_id": a.run, "results": results}


def _explain_methods(names: str | None) -> list[str]:
    """`--explain a,b` -> registered method names (core.explain.METHODS); UserError names the known ones."""
    if not names:
        return []
    from core.explain import get_method
    return [get_method(m.strip()).name for m in names.split(",") if m.strip()]


def _explain(pred, x, path, methods: list[str], out_dir) -> list:
    from core.explain import explain_to_png
    return [explain_to_png(pred, x, path, m, Path(out_dir or ".")) for m in methods]


class _MethodsHelp(argparse.HelpFormatter):
    """Fills %(methods)s in a help text with the attribution registry's names when the help is shown,
    not when the parser is built: the registry imports torch, which `python -m core --help` must not.
    (_get_help_string is the hook argparse's own ArgumentDefaultsHelpFormatter overrides.)"""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        if text and "%(methods)s" in text:
            from core.explain import METHODS
            text = text.replace("%(methods)s", ", ".join(METHODS))
        return text


def cmd_class_model(a) -> dict:
    """One class's model image through the class_models job kind (the Class model page's), into --out."""
    out = _run_here(a, "class_models", {"classes": [a.cls], "steps": a.steps, "size": a.size,
                                        "out": str(Path(a.out).expanduser().resolve())}, run_id=a.run)
    return {"run_id": a.run, **out["results"][0]}


def cmd_export(a) -> dict:
    from core.runs.store import RunStore
    from core.serve.export import export_run, normalise_format
    fmt = normalise_format(a.format)
    run = RunStore(a.runs).require(a.run_id)
    print(f"exporting run {a.run_id} as {fmt} and checking it against PyTorch…", file=sys.stderr)
    out = export_run(run, fmt, a.out)
    if not a.json:
        print(f"{'reused' if out['cached'] else 'wrote'} {out['path']} ({out['bytes'] / 1e6:.1f} MB, "
              f"{out['classes']} classes, input {out['input']['size']} px RGB in [0, 1]); largest difference from "
              f"PyTorch {out['max_abs_diff']:.1e} on {out['checked_on']}, top-1 agrees on {out['top1_agree']:.0%}")
        print(f"class names and preprocessing: inside the file and in {out['sidecar']}")
        return {}
    return out


def cmd_download(a) -> dict:
    import time
    from core.data.download import LABELS, describe, parse_shard
    shard = parse_shard(a.shard)
    last = [0.0]

    def progress(c):
        done, total = c.get("done", 0), c.get("total", 0)
        now = time.monotonic()
        if done < total and now - last[0] < 0.5:
            return
        last[0] = now
        eta = c.get("eta_s")
        eta = f"  ETA {eta // 60:.0f}m{eta % 60:02.0f}s" if eta else ""
        print(f"\r{done:,}/{total:,}  {describe(c)}  {c.get('rate') or 0:.1f} img/s{eta}\033[K", end="",
              file=sys.stderr)
    args = {"csv": str(Path(a.csv).expanduser().resolve()), "out": str(Path(a.out).expanduser().resolve()),
            "top": a.top, "clean": a.clean, "max_side": a.max_side, "workers": a.workers,
            "shard": f"{shard[0]}/{shard[1]}" if isinstance(shard, tuple) else a.shard,
            "tars": [str(Path(t).expanduser().resolve()) for t in a.tars] if a.tars else None,
            "allow_private": bool(a.allow_private) or None}
    try:
        out = _run_here(a, "download", args, on_progress=progress)   # remembers the data set (the app's list)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume (nothing on disk is fetched twice)",
              file=sys.stderr)
        raise SystemExit(130) from None
    print(file=sys.stderr)
    if out.get("warning"):
        print(f"warning: {out['warning']}", file=sys.stderr)
    if not a.json:
        print(f"{out['on_disk']:,} of {out['listed']:,} images of the top {out['classes']} classes are in "
              f"{out['out']} ({describe(out)}); report: {out['out']}/download_report.json")
        short = [r for r in out["per_class"] if r["short"]]
        for r in short[:20]:
            why = ", ".join(f"{r[k]} {LABELS[k]}" for k in ("dead", "not_image", "failed", "no_url", "missing")
                            if r[k])
            print(f"  class {r['landmark_id']}: {r['on_disk']}/{r['listed']} on disk ({why or 'not tried yet'})")
        if len(short) > 20:
            print(f"  … and {len(short) - 20} more classes short of images (see the report)")
        return {}
    return out


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
    keys = ("number", "params", "run_id", "val_acc", "state", "pruned_at", "error", "host")
    return {"name": info["name"], "storage": info["storage"], "sampler": info["sampler"], "counts": info["counts"],
            "finished": info["finished"], "configs": [{k: c[k] for k in keys} for c in info["configs"]],
            "best": info["best"] and {k: info["best"][k] for k in keys}}


def _print_sweep(info: dict) -> None:
    print(f"sweep {info['name']} ({info['sampler']}, {info['storage']}): " + ", ".join(
        f"{v} {k}" for k, v in info["counts"].items() if v and k != "ended"))
    for c in sorted(info["configs"], key=lambda c: -(c["val_acc"] or -1)):
        acc = "  —  " if c["val_acc"] is None else f"{c['val_acc']:.3f}"
        params = " ".join(f"{k}={v}" for k, v in c["params"].items())
        note = f" at epoch {c['pruned_at']}" if c["pruned_at"] else f" ({c['error']})" if c["error"] else ""
        best = " ← best" if info["best"] and c["number"] == info["best"]["number"] else ""
        print(f"  #{c['number']:<3} {acc}  {c['state']}{note:<12} {params}  {c['run_id'] or ''}{best}")


def _drive(a, name: str, store) -> dict:
    from core.runs.sweeps import drive
    a.interrupted = (f"the sweep driver stopped; running trials go on. Continue with: python -m core sweep --join "
                     f"{name}   (or stop them: python -m core sweep --cancel {name})")
    return drive(name, store, storage=a.storage, progress=_sweep_printer(name))


def cmd_sweep(a) -> dict:
    from core.runs import sweeps
    from core.runs.store import RunStore
    store = RunStore(a.runs)
    if a.status or a.cancel:
        info = sweeps.info(a.status, a.storage) if a.status else sweeps.cancel_sweep(a.cancel, store, a.storage)
    else:
        name = a.join
        if not name:
            if not a.data or not a.grid:
                raise UserError("sweep needs --data DIR and --grid NAME=V1,V2 … (or --join/--status/--cancel NAME).")
            space = sweeps.parse_space(a.grid)
            cfg = from_arguments(a, data=str(Path(a.data).expanduser().resolve()),
                                 model=a.model or DEFAULT_MODEL).validate()
            if "classes" not in space:
                from core.data.readers import load_index
                from core.data.splits import top_classes
                top_classes(load_index(cfg.data, clean=cfg.clean).counts(), cfg.classes)
            name = a.name or time.strftime("sweep-%Y%m%d-%H%M%S")
            sweeps.create(name, cfg, space, a.sampler, a.trials, a.prune, a.storage)
        print(f"sweep {name}: trials queue as ordinary runs (see the Runs and Sweeps pages)", file=sys.stderr)
        info = _drive(a, name, store)
    if not a.json:
        _print_sweep(info)
        return {}
    return _sweep_rows(info)


def cmd_reproduce(a) -> dict:
    from core.runs import reproduce, sweeps
    from core.runs.store import RunStore
    store = RunStore(a.runs)
    ints = [int(c) for c in a.classes.split(",") if c.strip()] if a.classes else None
    models = [m.strip() for m in a.models.split(",") if m.strip()] if a.models else None
    data = str(Path(a.data).expanduser().resolve())
    name, cfg, configs, meta = reproduce.plan(data, ints, models, a.epochs, a.quick)
    from core.data.readers import load_index
    from core.data.splits import top_classes
    top_classes(load_index(data).counts(), max(c["classes"] for c in configs))
    for m, s in meta["stand_in"].items():
        print(f"{m}'s ImageNet weights cannot be had here: {s} stands in for it (the table says so)", file=sys.stderr)
    sweeps.create(name, cfg, configs=configs, storage=a.storage, kind="reproduce", meta=meta)
    info = _drive(a, name, store)
    rows = reproduce.table(info, store, [tuple(r) for r in meta["rows"]], meta["stand_in"])
    if not a.json:
        print(reproduce.markdown(rows, a.quick))
        return {}
    return {"name": name, "quick": a.quick, "rows": rows}


def build_parser() -> argparse.ArgumentParser:
    from core.data import DEMO_DEFAULTS
    from core.data.download import DEFAULTS as DOWNLOAD
    from core.runs.sweeps import SAMPLERS
    ap = argparse.ArgumentParser(prog="python -m core", description="Landmark recognition workbench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo-data", help="write the synthetic demo data set (GLDv2 layout)")
    p.add_argument("out")
    for k, v in DEMO_DEFAULTS.items():
        p.add_argument(f"--{k}", type=int, default=v, help=f"default {v}")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_demo_data)

    p = sub.add_parser("stats", help="class distribution and imbalance of a data set")
    p.add_argument("data")
    p.add_argument("--top", type=int, default=50)
    p.add_argument("--scan", action="store_true", help="decode the top classes' files and report unreadable ones "
                   "(automatic for a few thousand images)")
    p.add_argument("--no-scan", action="store_true")
    p.add_argument("--clean", action="store_true", help="GLDv2: count only the images in train_clean.csv")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_stats)

    p = sub.add_parser("train", help="train a model (defaults: the seed's Adam, lr 0.001, 10 epochs)")
    p.add_argument("--data")
    p.add_argument("--model")
    add_arguments(p)                     # one flag per TrainConfig field, defaults from the dataclass
    p.add_argument("--runs", default=None)
    p.add_argument("--resume", default=None, metavar="RUN_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("runs", help="list runs, or rebuild the run index from the run folders")
    p.add_argument("action", nargs="?", choices=["list", "rebuild"], default="list")
    p.add_argument("--runs", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)

    p = sub.add_parser("eval", help="metrics of a finished run")
    p.add_argument("run_id")
    p.add_argument("--split", choices=["train", "val", "holdout"], default="holdout")
    p.add_argument("--runs", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("predict", help="classify images with a run's model", formatter_class=_MethodsHelp)
    p.add_argument("--run", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--explain", default=None, metavar="METHOD[,METHOD...]",
                   help="attribution maps to write as PNGs, comma-separated, from: %(methods)s")
    p.add_argument("--out", default=None)
    p.add_argument("--runs", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("class-model", help="image that maximises a class score (Simonyan et al. 2014)")
    p.add_argument("--run", required=True)
    p.add_argument("--class", dest="cls", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--runs", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_class_model)

    p = sub.add_parser("download", help="get the images of the top-N Google Landmarks classes (URLs or tar shards)")
    p.add_argument("--csv", required=True, help="GLDv2 train.csv or the 2018 Kaggle CSV (id,url,landmark_id)")
    p.add_argument("--top", type=int, required=True, help="how many of the most frequent classes to get")
    p.add_argument("--clean", action="store_true", help="GLDv2: only the images in train_clean.csv beside the CSV")
    p.add_argument("--out", required=True, help="folder to write train.csv and train/<a>/<b>/<c>/<id>.jpg into")
    p.add_argument("--max-side", type=int, default=DOWNLOAD["max_side"],
                   help="shrink so the longer side is at most this (0: keep)")
    p.add_argument("--workers", type=int, default=DOWNLOAD["workers"], help="concurrent requests")
    p.add_argument("--shard", default=DOWNLOAD["shard"], metavar="K/N",
                   help="take the K-th of N disjoint shares (machines)")
    p.add_argument("--tars", nargs="+", default=None, metavar="DIR_OR_FILE",
                   help="extract from GLDv2's images_000.tar … instead of fetching URLs")
    p.add_argument("--allow-private", action="store_true",
                   help="also fetch from loopback and private addresses (a local mirror); metadata never")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_download)

    p = sub.add_parser("export", help="write a run's model as ONNX or TorchScript, checked against PyTorch")
    p.add_argument("run_id")
    p.add_argument("--format", default="onnx", metavar="onnx|torchscript",
                   help="onnx (onnxruntime, any language) or torchscript (LibTorch); default onnx")
    p.add_argument("--out", default=None, metavar="FILE", help="default: the run's exports folder")
    p.add_argument("--runs", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_export)
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
    add_arguments(p)
    p.add_argument("--runs", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("reproduce", help="the poster's holdout table: queue its runs and fill it in")
    p.add_argument("--data", required=True)
    p.add_argument("--classes", default=None, help="comma list (default: the poster's 10,20,30,50)")
    p.add_argument("--models", default=None, help="comma list (default: the poster's resnet18,vgg16)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="64 px and 2 epochs: fits a CPU in minutes")
    p.add_argument("--storage", default=None, metavar="URL")
    p.add_argument("--runs", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_reproduce)
    return ap


def _terminate(*_):
    raise KeyboardInterrupt()


def main(argv=None) -> int:
    import signal
    a = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)   # SIGTERM like Ctrl-C: the run is marked interrupted
    try:
        out = a.fn(a)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(getattr(a, "interrupted", "interrupted; the last checkpoint is kept (resume with --resume RUN_ID)"),
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if out:
        _out(out, a.json)
    return 0
