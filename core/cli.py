"""Command line: python -m core {demo-data,stats,train,runs,eval,predict,class-model}.

With --json the last line on stdout is one JSON object; progress goes to stderr.
Bad input prints one sentence to stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from core.train.config import add_arguments, from_arguments
from core.errors import UserError
from core.data.prepared import AUTO_SCAN_IMAGES


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


def cmd_demo_data(a) -> dict:
    from core.data.demo import generate
    def progress(done, total):
        if done == total or done % 500 == 0:
            print(f"\rgenerated {done}/{total}", end="" if done < total else "\n", file=sys.stderr)
    info = generate(a.out, classes=a.classes, images=a.images, size=a.size, seed=a.seed, progress=progress)
    info["counts"] = {str(k): v for k, v in info["counts"].items()}
    return info


def cmd_stats(a) -> dict:
    from core.data.readers import class_counts, imbalance, load_index
    from core.data.prepared import prepare
    counts = class_counts(a.data, clean=a.clean)
    out = imbalance(counts, a.top)
    out["top"] = [{"label": str(l), "count": int(c)} for l, c in counts.head(a.top).items()]
    # scanning decodes every file of the top classes (cached): automatic for small sets
    scan = a.scan or (not a.no_scan and out["top_n_images"] <= AUTO_SCAN_IMAGES)
    if scan:
        index = load_index(a.data, clean=a.clean)
        sel = index.samples[index.samples["label"].isin(set(counts.head(a.top).index.astype(str)))]
        prep = prepare(sel["path"].tolist(), 32, key=str(index.root))
        out["scan"] = {"checked": len(sel), "unreadable": len(prep.reasons),
                       "skipped": [{"path": p, "reason": r} for p, r in prep.reasons]}
    if not a.json:
        print(f"{out['images']:,} images in {out['classes']:,} classes; top {out['top_n']} hold "
              f"{out['top_n_share']:.1%}; largest/smallest {out['largest']}/{out['smallest']} ({out['ratio']:.1f}x)")
        w = max((len(r["label"]) for r in out["top"]), default=8)
        for row in out["top"]:
            print(f"  {row['label']:<{w}}  {row['count']:>9,}")
        if not scan:
            print(f"scan: skipped for {out['top_n_images']:,} images; pass --scan to decode them and list unreadable files")
        else:
            print(f"scan: {out['scan']['checked']} files checked, {out['scan']['unreadable']} unreadable")
            for s in out["scan"]["skipped"][:50]:
                print(f"  skipped {s['path']}: {s['reason']}")
        return {}
    return out


def cmd_train(a) -> dict:
    from core.runs.jobs import foreground_device, resume, run_job
    from core.runs.store import RunStore
    from core.train.sinks import TqdmSink
    store = RunStore(a.runs)
    if a.resume:
        run_id = a.resume
        here = foreground_device(store.require(run_id).config().device)
        resume(store, run_id, here=here)       # holds its device's slot, like a new CLI run
    else:
        if not a.data or not a.model:
            raise UserError("train needs --data DIR and --model NAME (or --resume RUN_ID).")
        cfg = from_arguments(a, data=str(Path(a.data).expanduser().resolve()), model=a.model).validate()
        from core.data.readers import load_index
        from core.data.splits import top_classes
        top_classes(load_index(cfg.data, clean=cfg.clean).counts(), cfg.classes)  # fail fast, before a run folder exists
        run_id = store.create(cfg, status="running", device=foreground_device(cfg.device))  # holds its device's slot
    print(f"run {run_id} in {store.run(run_id).dir}", file=sys.stderr)
    result = run_job(store, run_id, sink=TqdmSink())
    if result["status"] == "failed":
        if not a.resume and store.epochs(run_id).empty:
            store.delete(run_id)  # nothing was trained: do not leave an empty failed run behind
        raise UserError(result["error"])
    keys = ("run_id", "status", "epochs_completed", "train_acc", "val_acc", "holdout_acc", "holdout_top5",
            "holdout_gap", "images_per_s", "seconds")
    return {**{k: result.get(k) for k in keys}, "run_id": run_id}


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
    m = evals[a.split]
    hist = store.epochs(a.run_id)[["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]]
    per_class = [{"label": l, "name": n, "acc": acc, "support": s}
                 for l, n, acc, s in zip(m["labels"], m["names"], m["per_class"], m["support"])]
    out = {"run_id": a.run_id, "status": run["status"], "split": a.split, "epochs_completed": int(len(hist))}
    out.update({f"{s}_{k}": evals.get(s, {}).get(k) for s in ("train", "val", "holdout") for k in ("acc", "top5", "gap")})
    out.update(acc=m["acc"], top5=m["top5"], gap=m["gap"], n=m["n"], images_per_s=run["summary"].get("images_per_s"),
               seconds=run["summary"].get("seconds"), history=hist.to_dict("records"), per_class=per_class,
               confusion=m["confusion"])
    return out


def cmd_predict(a) -> dict:
    from core.explain.predictor import load_predictor
    from core.runs.store import RunStore
    pred = load_predictor(a.run, RunStore(a.runs))
    results = []
    for path in a.images:
        try:
            x = pred.tensor(path)
        except (UserError, OSError, ValueError) as e:
            results.append({"image": path, "error": str(e) or type(e).__name__})
            continue
        item = {"image": path, "top": pred.top(x, a.top)}
        if a.explain:
            item["explanations"] = _explain(pred, x, path, a.explain, a.out)
        results.append(item)
        if not a.json:
            print(path)
            for t in item["top"]:
                print(f"  {t['prob']:.3f}  {t['name']}")
    if all("error" in r for r in results):
        raise UserError(results[0]["error"])
    return {"run_id": a.run, "results": results}


def _explain(pred, x, path, methods: str, out_dir) -> list:
    from core.explain.files import explain_to_png
    return [explain_to_png(pred, x, path, m.strip(), Path(out_dir or ".")) for m in methods.split(",") if m.strip()]


def cmd_class_model(a) -> dict:
    from core.explain.files import class_model_png
    from core.explain.predictor import load_predictor
    from core.runs.store import RunStore
    pred = load_predictor(a.run, RunStore(a.runs))
    return class_model_png(pred, a.cls, Path(a.out), steps=a.steps, size=a.size)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core", description="Landmark recognition workbench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo-data", help="write the synthetic demo data set (GLDv2 layout)")
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_demo_data)

    p = sub.add_parser("stats", help="class distribution and imbalance of a data set")
    p.add_argument("data")
    p.add_argument("--top", type=int, default=50)
    p.add_argument("--scan", action="store_true", help="decode the top classes' files and report unreadable ones "
                   f"(automatic up to {AUTO_SCAN_IMAGES:,} images)")
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

    p = sub.add_parser("predict", help="classify images with a run's model")
    p.add_argument("--run", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--explain", default=None, help="saliency,vanilla,guided,gradcam,integrated_gradients,smoothgrad")
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
        print("interrupted; the last checkpoint is kept (resume with --resume RUN_ID)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if out:
        _out(out, a.json)
    return 0
