"""The job kinds: each is one function and one registration line (see core.runs.jobs).

  train         fit a run's model (one GPU or the CPU slot; --nproc N: N processes under torchrun), then
                evaluate train/val/holdout
  class_models  draw the class model image of each chosen class of a finished run
  scan          decode the top classes' images once (cached) and list the unreadable files
  demo          generate the synthetic demo data set
  download      get the top-N Google Landmarks classes' images (URLs or tar shards), then remember the set
  sweep         drive a hyperparameter sweep (core.runs.sweeps): its trials are ordinary train runs
  export        write a finished run's model as ONNX or TorchScript, checked against PyTorch (core.serve.export)
  embed         a finished run's photos as unit vectors with a 2-D map, for neighbours and kNN (core.serve.embeddings)
  inspect       rank every image of a run's split by how likely its label is wrong; near-duplicates and
                leaks (core.serve.inspect), written to the run folder's inspect.json
  report        the poster regenerated from chosen runs: one self-contained HTML file (core.report)
  calibrate     fit a finished run's temperature and rejection threshold on its validation images
                (core.serve.predictor.calibrate_run; train does it too, after the final evaluation)
  distractors   score a finished run's holdout with a folder of photos of no known landmark
                (core.serve.distractors: GAP with distractors, the precision-coverage curve)
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from core.data.prepared import SCAN_SIZE
from core.errors import UserError
from core.runs.eta import WINDOW_S, phase_and_eta, steps_eta
from core.runs.jobs import Context, kind

STEPS_RANGE = (1, 5000)     # class models: gradient-ascent steps per class
SIZE_RANGE = (16, 512)      # class models: px, the image is size x size


class StoreSink:
    """The engine's rows into the run store: step rows batched (one transaction a second),
    epochs, evaluations and events at once; progress and heartbeat into the run's job."""

    def __init__(self, ctx: Context, flush_s: float = 1.0, on_epoch=None):
        self.ctx, self.run, self.flush_s = ctx, ctx.run, flush_s
        self._steps: list[tuple] = []
        self._last = 0.0
        self.on_epoch = on_epoch         # a sweep trial: report to the study; True = prune
        self.pruned_at: int | None = None
        self._offset, self._last_step = 0, None
        self._times: list[float] = []    # recent step timestamps: the ETA's rate
        self._cfg = None

    def _step(self, step: int) -> int:
        """Steps stay unique and increasing in the store however an epoch's length changes (a resume
        after images vanished makes epochs shorter: the engine's count would step back)."""
        step += self._offset
        if self._last_step is not None and step <= self._last_step:
            self._offset += self._last_step + 1 - step
            step = self._last_step + 1
        self._last_step = step
        return step

    def emit(self, kind_: str, row: dict) -> None:
        store, run_id = self.run.store, self.run.id
        if kind_ == "step":
            now = time.time()
            self._steps.append((self._step(int(row["step"])), row["epoch"], row["loss"], row["acc"], row["lr"], now))
            self._times = [t for t in self._times if t >= now - 2 * WINDOW_S] + [now]
            if time.time() - self._last > self.flush_s:
                self.flush(row.get("progress"))
        elif kind_ == "epoch":
            self.flush()
            store.log_epoch(run_id, row)
            if self.on_epoch is not None and self.pruned_at is None and self.on_epoch(row):
                self.pruned_at = int(row["epoch"])
        elif kind_ == "eval":
            store.log_eval(run_id, row["split"], row["metrics"])
        elif kind_ == "progress":
            self.flush(row)
        elif kind_ == "resume":
            # resuming from epoch k's checkpoint re-runs what followed: drop those rows
            store.truncate_after(run_id, row["epoch"])
            self._last_step = store.last_step(run_id)
        else:
            store.event(run_id, kind_, row.get("message", ""))

    def flush(self, progress: dict | None = None) -> None:
        if self._steps:
            self.run.store.log_step(self.run.id, self._steps)
            self._steps = []
        if progress and progress.get("steps_per_epoch"):     # the one place a run's ETA is computed
            if self._cfg is None:
                self._cfg = self.run.read_config()
            phase, eta = phase_and_eta(progress, self._times, self._cfg)
            progress = {**progress, "phase": phase, "eta_s": eta}
        if progress:
            self.ctx.progress(force=True, **progress)
        else:
            self.run.store.set_job(self.run.id, heartbeat=time.time())
        self._last = time.time()

    def should_stop(self) -> bool:
        return self.pruned_at is not None or self.ctx.should_stop()


@kind("train", owns_run=True)  # the queue of a run is set at creation (its device)
def train(ctx: Context) -> dict:
    """Fit the run here, or, for a run on several processes (--nproc N), start torchrun and wait:
    its rank 0 fits into this very job (core.runs.ddp)."""
    from core.train import distributed
    cfg = ctx.run.config()
    if cfg.nproc > 1 and not distributed.launched():
        from core.runs.launcher import launch_torchrun as launch
        summary = launch(ctx, cfg)
    else:
        summary = fit_job(ctx, cfg)
    ctx.run.set(summary=summary, args={**ctx.args, "resume": False})
    return summary


def fit_job(ctx: Context, cfg=None) -> dict:
    """fit() into the job's run: its rows into the store (and the CLI's progress bar); a sweep's
    trial is pruned when its study says so. On several processes only rank 0 runs this."""
    from core.errors import Cancelled, Pruned
    from core.train.engine import fit
    on_epoch = None
    if ctx.args.get("sweep"):            # a sweep's trial: every epoch's val accuracy goes to its study
        from core.runs.sweeps import epoch_reporter
        on_epoch = epoch_reporter(ctx.args)
    store_sink = sink = StoreSink(ctx, on_epoch=on_epoch)
    if ctx.sink is not None:             # the CLI's progress bar, forwarding to the store
        ctx.sink.inner = sink
        sink = ctx.sink
    try:
        summary = fit(cfg or ctx.run.config(), ctx.run, sink, resume=bool(ctx.args.get("resume")))
    except Cancelled:
        if store_sink.pruned_at is None:
            raise
        e = store_sink.pruned_at
        raise Pruned(e, f"pruned by sweep {ctx.args['sweep']} after epoch {e}: its validation accuracy is "
                        f"below the median of earlier trials at that epoch") from None
    if (cfg or ctx.run.config()).calibrate == "on":
        calibrate_at_end(ctx)
    return summary


def calibrate_at_end(ctx: Context) -> None:
    """Issue 23: after the final evaluation, the temperature and the rejection threshold fitted on the
    validation images (at most calibration.MAX_FIT_IMAGES of them, a seeded subsample) and stored with
    the run, so Evaluate, Classify and `eval` use calibrated confidences from the start. A run that
    cannot be calibrated (no readable validation image) or is stopped meanwhile is still trained: the
    reason goes to its events, and it can be calibrated on demand later."""
    from core.serve.predictor import calibrate_run, load_predictor
    from core.train.engine import select_device

    def progress(done, total):
        if ctx.should_stop():
            raise UserError("stopped before it ended")
        ctx.store.set_job(ctx.job_id, heartbeat=time.time())
    try:
        pred = load_predictor(ctx.run)
        pred.model.to(select_device(pred.cfg.device))     # the forward passes where the run trained
        c = calibrate_run(pred, ctx.run, progress=progress, fitted="end of training")
    except Exception as e:  # noqa: BLE001 - the trained run stays done; a bug keeps its traceback in the log
        from core.runs.jobs import failure
        message, user = failure(e)
        if not user:
            traceback.print_exc()
        ctx.store.event(ctx.run.id, "calibration", f"not calibrated: {message} The Evaluate page calibrates on "
                                                   "demand.")
        return
    ctx.store.event(ctx.run.id, "calibration", f"temperature {c['temperature']:.3f} fitted on {c['fit_images']:,} "
                                               f"validation images; rejection threshold {c['threshold']:.3f}")


def _known_args(args: dict, allowed, what: str) -> None:
    unknown = set(args) - set(allowed)
    if unknown:
        raise UserError(f"Unknown {what} argument(s): {', '.join(sorted(unknown))}.")


def _with_checkpoint(store, run_id: str | None, why: str = ""):
    """The job's run; refused in one sentence while it has no checkpoint (`why`: what it is needed for)."""
    run = store.require(run_id or "")
    if not run.has_checkpoint():
        raise UserError(f"Run {run.id} has no checkpoint yet{why}; wait for its first epoch to finish.")
    return run


def _not_busy(store, kind_: str, run, sentence: str, **match) -> None:
    """Refuse a second job of this kind on this run while one is queued or running."""
    from core.runs.jobs import latest
    job = latest(store, kind_, run_id=run.id, **match)
    if job and job["active"]:
        raise UserError(sentence)


def _check_class_models(store, args: dict, run_id: str | None) -> None:
    run = _with_checkpoint(store, run_id)
    if not args.get("classes"):
        raise UserError("Choose at least one class to visualise.")
    steps, size = int(args.get("steps", 0)), int(args.get("size", 0))
    if not STEPS_RANGE[0] <= steps <= STEPS_RANGE[1]:
        raise UserError(f"Steps must be between {STEPS_RANGE[0]} and {STEPS_RANGE[1]}; got {steps}.")
    if size and not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:      # 0: the run's own image size
        raise UserError(f"Image size must be between {SIZE_RANGE[0]} and {SIZE_RANGE[1]} px; got {size}.")
    _not_busy(store, "class_models", run,
              f"Class models for run {run.id} are already being generated; wait for them or stop them.")


@kind("class_models", check=_check_class_models)
def class_models(ctx: Context) -> dict:
    """The chosen classes' images, drawn together in batches (core.explain.files.class_model_pngs).
    Progress: done/total ascent steps of all batches, step/steps of this batch, the classes
    first..last of `classes` being drawn, and eta_s (core.runs.eta)."""
    from core.explain.files import class_model_pngs
    from core.serve.predictor import load_predictor
    a = ctx.args
    classes, steps, size = list(a["classes"]), int(a["steps"]), int(a.get("size") or 0)
    out = Path(a["out"]) if a.get("out") else ctx.run.class_models_dir    # the CLI's --out, else the run's folder
    pred = load_predictor(ctx.run)
    times: list[float] = []

    def on_step(f: dict) -> None:
        now = time.time()
        times[:] = [t for t in times if t >= now - 2 * WINDOW_S] + [now]
        done, total = (f["batch"] - 1) * steps + f["step"], f["batches"] * steps
        ctx.progress(force=done == total, done=done, total=total, eta_s=steps_eta(done, total, times), **f)
    try:
        results = class_model_pngs(pred, classes, out, steps=steps, size=size, progress=on_step,
                                   should_stop=ctx.should_stop)
    except UserError:
        ctx.check_stop()             # stopped by the user: cancelled, not failed
        raise
    return {"results": [{k: r[k] for k in ("class", "name", "png", "prob")} for r in results]}


def class_models_line(p: dict) -> str:
    """"step n/N · class k/K · ETA mm:ss" (k a range while several classes share a batch): the
    Class model page's progress line and the CLI's."""
    k = str(p["first"]) if p["first"] == p["last"] else f"{p['first']}–{p['last']}"
    eta = p.get("eta_s")
    eta = "…" if eta is None else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
    return f"step {p['step']}/{p['steps']} · class {k}/{p['classes']} · ETA {eta}"


@kind("scan")
def scan(ctx: Context) -> dict:
    """Decode the chosen classes' images that are on disk (cached) and list the unreadable ones;
    count those the CSV lists but the disk lacks."""
    from core.data.prepared import prepare
    from core.data.readers import scan_index
    a = ctx.args
    index, missing = scan_index(a["data"], a["labels"], clean=bool(a.get("clean")))
    paths = index.samples["path"].tolist()

    def progress(done, total):
        ctx.check_stop()
        ctx.progress(done=done, total=total)
    prep = prepare(paths, SCAN_SIZE, key=str(index.root), progress=progress) if paths else None
    reasons = [list(r) for r in prep.reasons] if prep else []
    return {"checked": len(paths), "decoded": prep.decoded if prep else 0, "reasons": reasons,
            "missing": missing["images"], "missing_examples": missing["paths"]}


@kind("demo")
def demo(ctx: Context) -> dict:
    from core.data.demo import generate
    a = dict(ctx.args)
    out = a.pop("out")

    def progress(done, total):
        ctx.check_stop()
        ctx.progress(done=done, total=total)
    info = generate(out, progress=progress, **a)
    return {"out": str(out), "images": info.get("images"), "classes": info.get("classes"), "info": info}


DOWNLOAD_ARGS = ("csv", "out", "top", "clean", "max_side", "workers", "shard", "tars", "allow_private")


def _check_download(store, args: dict, run_id: str | None) -> None:
    from core.data.download import DEFAULTS, check
    from core.runs.jobs import latest
    _known_args(args, DOWNLOAD_ARGS, "download")
    check(args.get("csv"), args.get("out"), args.get("top"), clean=bool(args.get("clean")),
          max_side=args.get("max_side", DEFAULTS["max_side"]), workers=args.get("workers", DEFAULTS["workers"]),
          shard=args.get("shard") or DEFAULTS["shard"], tars=args.get("tars") or None)
    job = latest(store, "download", out=args.get("out"))
    if job and job["active"]:
        raise UserError(f"A download into {args.get('out')} is already running; wait for it or stop it.")


@kind("download", check=_check_download)
def download(ctx: Context) -> dict:
    from core.data.download import DEFAULTS, download as get
    from core.data.registry import remember
    from core.errors import Cancelled
    a = ctx.args

    def progress(done, total, counts):
        ctx.progress(done=done, total=total, **counts)
    summary = get(a["csv"], a["out"], int(a["top"]), clean=bool(a.get("clean")),
                  max_side=int(a.get("max_side", DEFAULTS["max_side"])), workers=int(a.get("workers", DEFAULTS["workers"])),
                  shard=a.get("shard") or DEFAULTS["shard"], tars=a.get("tars") or None, progress=progress,
                  should_stop=ctx.should_stop, allow_private=a.get("allow_private"))
    if summary["on_disk"]:
        try:
            remember(summary["out"], source="download")   # offered by every data set picker from now on
        except UserError as e:
            summary["warning"] = f"the data set was not added to the app's list: {e}"
    if summary["stopped"]:
        raise Cancelled()
    ctx.progress(force=True, done=summary["total"], total=summary["total"],
                 **{k: summary[k] for k in ("fetched", "already", "dead", "not_image", "failed", "no_url", "missing")})
    return summary


@kind("sweep")
def sweep(ctx: Context) -> dict:
    """Drive a sweep (core.runs.sweeps): its trials are ordinary runs in the queue."""
    from core.runs.sweeps import drive
    a = ctx.args

    def progress(**fields):
        ctx.progress(**fields)
    out = drive(a["name"], ctx.store, storage=a.get("storage"), should_stop=ctx.should_stop, progress=progress)
    return {"name": out["name"], "counts": out["counts"], "best": out["best"]}


def _check_export(store, args: dict, run_id: str | None) -> None:
    from core.serve.export import normalise_format
    _known_args(args, {"format", "out"}, "export")
    run = _with_checkpoint(store, run_id, ", so there is no model to export")
    fmt = normalise_format(args.get("format", "onnx"))
    _not_busy(store, "export", run, f"Run {run.id} is already being exported as {fmt}; wait for it or stop it.",
              format=fmt)


@kind("export", check=_check_export)
def export(ctx: Context) -> dict:
    from core.serve.export import export_run
    return export_run(ctx.run, ctx.args.get("format", "onnx"), ctx.args.get("out"), progress=ctx.progress,
                      should_stop=ctx.should_stop)


def _check_embed(store, args: dict, run_id: str | None) -> None:
    _known_args(args, (), "embed")
    run = _with_checkpoint(store, run_id, ", so there is no model to embed its photos with")
    _not_busy(store, "embed", run, f"Run {run.id}'s photos are already being embedded; wait for it or stop it.")


@kind("embed", check=_check_embed)
def embed(ctx: Context) -> dict:
    from core.serve.embeddings import compute
    return compute(ctx.run, progress=lambda done, total: ctx.progress(done=done, total=total),
                   should_stop=ctx.should_stop)


def _check_inspect(store, args: dict, run_id: str | None) -> None:
    _known_args(args, {"folds", "top", "weights"}, "inspect")
    run = _with_checkpoint(store, run_id, ", so it has no finished split to inspect")
    if int(args.get("folds") or 2) < 2 or int(args.get("top") or 1) < 1:
        raise UserError(f"--folds must be at least 2 and --top at least 1; got {args.get('folds')} and {args.get('top')}.")
    _not_busy(store, "inspect", run, f"Run {run.id} is already being inspected; wait for it or stop it.")


@kind("inspect", check=_check_inspect)
def inspect(ctx: Context) -> dict:
    """core.serve.inspect on the job's run; the whole result to inspect.json (atomically, at the end:
    a cancelled inspection leaves the previous file), the capped summary as the job's result."""
    from core.serve import inspect as insp
    a = ctx.args
    result = insp.inspect(ctx.run, folds=int(a.get("folds") or insp.FOLDS), weights=a.get("weights") or "imagenet",
                          progress=lambda **f: ctx.progress(force=not f.get("total"), **f), should_stop=ctx.should_stop)
    ctx.run.write_inspect(result)
    note = insp.missing_sentence(result)
    if note:
        ctx.run.store.event(ctx.run.id, "inspect", note)
    return {**insp.summary(result, int(a.get("top") or insp.TOP)), "note": note, "features": result["features"],
            "leak_sentence": insp.leak_sentence(result["leaks"])}


REPORT_ARGS = ("runs", "out", "data", "photos", "class_models")


def report_path() -> Path:
    """Where a report goes unless told: LANDMARKS_HOME/reports/report-<time>.html."""
    from core.paths import ensure_dir, home
    return ensure_dir(home() / "reports", "reports") / f"report-{time.strftime('%Y%m%d-%H%M%S')}.html"


def _check_report(store, args: dict, run_id: str | None) -> None:
    _known_args(args, REPORT_ARGS, "report")
    if not args.get("runs"):
        raise UserError("Choose at least one run for the report.")
    for r in args["runs"]:
        store.require(r)
    for p in args.get("photos") or ():
        if not Path(p).is_file():
            raise UserError(f"The photo {p} for Figs. 5–6 does not exist; give image files to --photos.")


def sweep_trials(store, runs) -> dict:
    """name -> [{"run_id", "label", "val_acc"}] for each sweep a run of `runs` is a trial of: every
    trial of that sweep (the poster's Fig. 2 shows them all), labelled by what the sweep varies."""
    names = {((r.get() or {}).get("args") or {}).get("sweep") for r in runs} - {None}
    out = {}
    for row in reversed(store.list()) if names else ():
        name = (row.get("args") or {}).get("sweep")
        if name in names:
            trial = store.run(row["run_id"])
            c = trial.read_config()
            accs = [e["val_acc"] for e in trial.read_epochs() if e.get("val_acc") is not None]
            label = (f"#{(row.get('args') or {}).get('trial', '?')} lr={c.get('lr')} {c.get('optimizer')} "
                     f"bs={c.get('batch_size')}" + (f" seed {c.get('seed')}" if c.get("group") else ""))
            # the last epoch's, as every page shows it (the checkpoint's; charts.VAL_ACC)
            out.setdefault(name, []).append({"run_id": trial.id, "label": label, "val_acc": accs[-1] if accs else None})
    return out


@kind("report", check=_check_report)
def report(ctx: Context) -> dict:
    from core.report import build_report
    from core.runs.reproduce import POSTER
    a = ctx.args
    runs = [ctx.store.require(r) for r in a["runs"]]
    out = a.get("out") or str(report_path())

    def progress(**fields):
        ctx.check_stop()
        ctx.progress(**fields)
    return build_report(runs, out, poster=POSTER, sweeps=sweep_trials(ctx.store, runs), data=a.get("data"),
                        photos=a.get("photos"), class_models=bool(a.get("class_models")), progress=progress)


def images_progress(ctx: Context):
    """A job's progress(done, total) over images ("n/N images"), stopping at the user's request."""
    def progress(done, total):
        ctx.check_stop()
        ctx.progress(force=done == total, done=done, total=total)
    return progress


def _finished_run(store, run_id: str | None, what: str):
    run = store.require(run_id or "")
    if not run.has_checkpoint() or not run.predictions_file("val").exists():
        raise UserError(f"Run {run.id} has not finished, so it cannot be {what} yet; wait for it to end.")
    return run


def _check_calibrate(store, args: dict, run_id: str | None) -> None:
    _known_args(args, {"target_precision", "distractors"}, "calibrate")
    run = _finished_run(store, run_id, "calibrated")
    t = args.get("target_precision")
    if t is not None and not 0 < float(t) <= 1:
        raise UserError(f"The target precision must be between 0 and 1 (got {t}).")
    if args.get("distractors"):
        from core.serve.distractors import list_images
        list_images(args["distractors"])
    _not_busy(store, "calibrate", run, f"Run {run.id} is already being calibrated; wait for it or stop it.")


@kind("calibrate", check=_check_calibrate)
def calibrate(ctx: Context) -> dict:
    """calibrate_run on demand (Evaluate's button): the tune half of `distractors` (a folder) joins
    the threshold's choice. The result is calibration.json in the run folder; the job keeps its figures."""
    from core.serve import distractors
    from core.serve.predictor import calibrate_run, load_predictor
    from core.train.calibration import TARGET_PRECISION
    a, run = ctx.args, ctx.run
    tune = list(distractors.load(a["distractors"], run).tune) if a.get("distractors") else []
    c = calibrate_run(load_predictor(run), run, float(a.get("target_precision") or TARGET_PRECISION),
                      distractors=tune, progress=images_progress(ctx), fitted="on demand")
    return {k: c[k] for k in ("temperature", "threshold", "ece_before", "ece_after", "ece_on", "fit_images",
                              "val_images", "distractors_tune")}


def _check_distractors(store, args: dict, run_id: str | None) -> None:
    from core.serve.distractors import list_images
    _known_args(args, {"folder", "split"}, "distractors")
    if args.get("split", "holdout") != "holdout":
        raise UserError(f"Distractors join the holdout as queries, not the {args['split']} split.")
    run = _finished_run(store, run_id, "scored with distractors")
    if not run.predictions_file("holdout").exists():
        raise UserError(f"Run {run.id} has no per-image holdout predictions to score distractors with.")
    if not args.get("folder"):
        raise UserError("Give a folder of photos that show none of the run's landmarks.")
    list_images(args["folder"])
    _not_busy(store, "distractors", run,
              f"Run {run.id} is already being scored with distractors; wait for it or stop it.")


@kind("distractors", check=_check_distractors)
def distractors_job(ctx: Context) -> dict:
    """The run's holdout plus the query half of a distractor folder (core.serve.distractors.evaluate),
    kept in the run folder (distractors_holdout.json) where Evaluate and Compare read it."""
    from core.serve import distractors
    from core.serve.predictor import load_predictor
    run, split = ctx.run, ctx.args.get("split", "holdout")
    result = distractors.evaluate(run, load_predictor(run), run.predictions(split), ctx.args["folder"],
                                  progress=images_progress(ctx))
    run.write_distractors(split, result)
    return {k: result[k] for k in ("folder", "gap", "gap_with_distractors", "acc_known", "known", "distractors",
                                   "distractors_tune", "distractors_left_out", "distractors_unreadable")}
