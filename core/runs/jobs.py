"""One job system for every task that takes more than a second: training, class-model images,
the data-set scan, demo generation (and whatever kind is registered next).

A job is a row of the store's `jobs` table: kind, arguments, status, device, progress, result.
- **One launcher**: `submit()` queues a job and `schedule()` starts it in a worker process,
  `python -m core.runs.worker JOB_ID`, in a new session, so page reruns, closed tabs and a
  restarted Streamlit never kill it. (The CLI runs a job in its own process with `run_job()`.)
- **One queue**: a kind that needs a device (training) waits for a free slot, one job per GPU
  ("cuda:<i>") or one on the CPU; other kinds start at once. The worker that finishes starts
  the next job, and every dashboard page load calls `schedule()` too.
- **One liveness rule** (`reap()`): a starting or running job is dead when its recorded process
  (pid + process identity) is gone, or when no worker ever reported back within a minute.
- **One progress protocol**: a job reports with `ctx.progress(**fields)` (throttled, with a
  heartbeat) and ends with a result dict or an error sentence; pages only read `status()`.
A new kind is one function plus one registration line (`@kind("name")`, see core.runs.tasks); a kind
whose job trains a run (its job has the run's id) registers with `owns_run=True`. This module holds the
registry and never imports the kinds: the entry points (worker, CLI, dashboard) import core.runs.tasks.
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from core.errors import Cancelled, Pruned, UserError
from core.paths import DISK_FULL
from core.runs.launcher import spawn_worker
from core.runs.store import ACTIVE, RunStore, is_run_job

PROGRESS_EVERY_S = 0.25      # seconds between progress writes of one job
STOP_CHECK_S = 0.5           # seconds between reads of a job's cancel flag


@dataclass(frozen=True)
class Kind:
    name: str
    fn: Callable                              # (Context) -> result dict
    queue: Callable[[dict], str | None]       # args -> device queue ("cuda", "cpu", "mps") or None: no slot
    check: Callable | None = None             # (store, args, run_id) -> None; raises UserError before queueing
    owns_run: bool = False                    # its job trains a run: created with the run, logs into its folder


KINDS: dict[str, Kind] = {}


def kind(name: str, queue: Callable[[dict], str | None] | None = None, check: Callable | None = None,
         owns_run: bool = False):
    """Register a job kind: `@kind("scan")` above `def scan(ctx) -> dict`."""
    def register(fn):
        KINDS[name] = Kind(name, fn, queue or (lambda args: None), check, owns_run)
        return fn
    return register


def _kind(name: str) -> Kind:
    if name not in KINDS:
        known = ", ".join(KINDS) or "none registered (import core.runs.tasks first)"
        raise UserError(f"Unknown job kind {name!r}; known kinds: {known}.")
    return KINDS[name]


class Context:
    """What a job's function gets: its arguments, its run (if any), progress and a stop flag."""

    def __init__(self, store: RunStore, job: dict, sink=None, on_progress=None):
        self.store, self.job, self.job_id = store, job, job["job_id"]
        self.args = job.get("args") or {}
        self.run = store.run(job["run_id"]) if job.get("run_id") else None
        self.sink = sink
        self.on_progress = on_progress   # the CLI's printer: fields -> None
        self._last = self._stop_checked = 0.0
        self._stop = False

    def progress(self, force: bool = False, **fields) -> None:
        """Report progress (any flat fields: done, total, message...) and a heartbeat."""
        if force or time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._last = time.monotonic()
            self.store.set_job(self.job_id, progress=fields, heartbeat=time.time())
            if self.on_progress is not None:
                self.on_progress(fields)

    def should_stop(self) -> bool:
        if time.monotonic() - self._stop_checked > STOP_CHECK_S:
            self._stop_checked = time.monotonic()
            self._stop = bool((self.store.job(self.job_id) or {}).get("cancel"))
        return self._stop

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled()


# ------------------------------------------------------------------ devices

def device_key(device_pref: str, gpus: int = 1) -> str:
    """The queue a training job waits in: "cuda" (any GPU), "cuda*N" (N GPUs at once: a run on N
    processes), "mps" or "cpu". A started GPU job holds its GPUs' slots, "cuda:<i>[,cuda:<j>...]".
    A several-process run on the CPU (gloo) holds the one CPU slot."""
    import torch
    if device_pref in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda" if gpus <= 1 else f"cuda*{gpus}"
    return "mps" if device_pref == "mps" else "cpu"


def foreground_device(device_pref: str, gpus: int = 1) -> str:
    """The slot(s) a CLI run (in this very process, on its first GPUs) holds."""
    key = device_key(device_pref, gpus)
    return ",".join(f"cuda:{i}" for i in range(_need(key))) if key.startswith("cuda") else key


def gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _need(key: str | None) -> int:
    """How many slots a job of queue `key` holds at once: N for "cuda*N", else 1."""
    return int(key.split("*")[1]) if key and "*" in key else 1


def slots(key: str | None) -> list[str | None]:
    """The slots of a device queue: every GPU for "cuda"/"cuda*N", the queue itself otherwise."""
    if key is None:
        return [None]
    return [f"cuda:{i}" for i in range(gpu_count())] if key.split("*")[0] == "cuda" else [key]


def check_gpus(device_pref: str, gpus: int) -> None:
    """An N-GPU run on a machine with fewer GPUs would wait for ever: one sentence instead."""
    key = device_key(device_pref, gpus)
    if key.startswith("cuda") and _need(key) > gpu_count():
        raise UserError(f"This run asks for {gpus} GPUs; this machine has {gpu_count()}. "
                        f"Choose {gpu_count()} or fewer (--nproc).")


# ------------------------------------------------------------------ launcher

def submit(store: RunStore, kind_name: str, args: dict, run_id: str | None = None, start: bool = True) -> str:
    """Queue a job of a registered kind (and start it if it may). Returns the job id."""
    k = _kind(kind_name)
    if k.check is not None:
        k.check(store, args, run_id)         # bad input: one sentence, nothing queued
    job_id = store.add_job(kind_name, args, run_id, k.queue(args))
    if start:
        schedule(store)
    return job_id


def nproc(cfg) -> int:
    """The processes (GPUs) one run trains on."""
    return max(int(getattr(cfg, "nproc", 1) or 1), 1)


def launch(cfg, store: RunStore, start: bool = True, args: dict | None = None, kind_name: str = "train") -> str:
    """Queue a run (and its job of a kind that owns a run) and start it if its device is free."""
    if kind_name in KINDS and not KINDS[kind_name].owns_run:   # the worker that runs it registers the kinds
        raise UserError(f"Jobs of kind {kind_name!r} do not train a run.")
    cfg.validate()
    check_gpus(cfg.device, nproc(cfg))
    run_id = store.create(cfg, status="queued", device=device_key(cfg.device, nproc(cfg)), args=args, kind=kind_name)
    if start:
        schedule(store)
    return run_id


def schedule(store: RunStore, max_per_device: int = 1) -> list[str]:
    """Start every queued job that may start: the oldest of each device with a free slot, and
    every job that needs no device."""
    reap(store)
    started = store.claim_queued(slots, max_per_device, _need)
    for job_id, slot in started:
        spawn(store, job_id, slot)
    return [job_id for job_id, _ in started]


def spawn(store: RunStore, job_id: str, slot: str | None = None) -> None:
    """Start a claimed job's worker process (the one place that does)."""
    pid = spawn_worker(job_id, store.root, log_file(store, store.job(job_id)), slot)
    store.set_job(job_id, pid=pid)


def log_file(store: RunStore, job: dict):
    """A run's own job logs into its run folder; other jobs into runs/jobs/<job id>.log."""
    if is_run_job(job):
        return store.run(job["run_id"]).log_file
    d = store.root / "jobs"
    d.mkdir(exist_ok=True)
    return d / f"{job['job_id']}.log"


# ------------------------------------------------------------------ liveness, control, status

def reap(store: RunStore) -> list[str]:
    """Mark jobs whose worker died (killed, machine rebooted) as interrupted (core.runs.proc's rule)."""
    return store.reap()


def _finish(store: RunStore, job: dict, status: str, message: str = "", **fields) -> None:
    store.finish_job(job, status, message, **fields)


def cancel(store: RunStore, job_id: str) -> str:
    """Stop a job: a queued one at once, a running one at its next step. Returns what happened."""
    job = store.job(job_id)
    if job is None or job["status"] not in ACTIVE:
        return "not active"
    if job["status"] == "queued":
        _finish(store, job, "cancelled", "cancelled while queued")
        return "cancelled"
    store.set_job(job_id, cancel=1)
    if is_run_job(job):
        store.event(job["run_id"], "cancel", "cancel requested")
    return "requested"


def resume(store: RunStore, run_id: str, here: str | None = None) -> None:
    """Queue an interrupted, cancelled or failed run to continue from its last checkpoint; with
    `here` (a device slot), claim it to run in this very process instead (the CLI's --resume).
    A worker that died a moment ago is reaped first, so its run is resumable at once."""
    reap(store)
    run = store.get(run_id)
    if run is None:
        raise UserError(f"There is no run {run_id!r} in {store.root}.")
    if run["status"] in ("starting", "running") or (run["status"] == "queued" and here is None):
        pid = f" (pid {run['pid']})" if run.get("pid") else ""
        raise UserError(f"Run {run_id} is {run['status']}{pid}; only a stopped run can be resumed.")
    gpus = nproc(store.require(run_id).config())
    device = here or (device_key("cuda", gpus) if str(run.get("device") or "").startswith("cuda")
                      else run.get("device") or "cpu")
    store.set(run_id, status="running" if here else "queued", device=device, cancel=0, error=None,
              args={**(run.get("args") or {}), "resume": True}, queued_at=time.time(), progress={}, finished=None)
    store.event(run_id, "resume", "resumed from the command line" if here else "queued to resume")
    if here is None:
        schedule(store)


def status(store: RunStore, job_id: str) -> dict | None:
    """The job as pages read it: status, progress, result, error, plus "active"."""
    reap(store)
    job = store.job(job_id)
    if job is not None:
        job["active"] = job["status"] in ACTIVE
    return job


def latest(store: RunStore, kind_name: str, run_id: str | None = None, **match) -> dict | None:
    """The newest job of a kind (for a run, and with these argument values), with "active"."""
    reap(store)
    for job in store.jobs(kind=kind_name, run_id=run_id):
        if all(job["args"].get(k) == v for k, v in match.items()):
            job["active"] = job["status"] in ACTIVE
            return job
    return None


# ------------------------------------------------------------------ running a job (worker or CLI)

def run_here(store: RunStore, kind_name: str, args: dict, run_id: str | None = None, on_progress=None) -> dict:
    """Run a job of a registered kind in this very process (the CLI): the same kind function, the
    same checks and the same record as a queued job, with progress also handed to `on_progress`."""
    k = _kind(kind_name)
    if k.check is not None:
        k.check(store, args, run_id)
    job_id = store.add_job(kind_name, args, run_id, None, status="running")
    store.set_job(job_id, pid=os.getpid())        # never claimed by a scheduler: it runs here
    return run_job(store, job_id, on_progress=on_progress)


def run_job(store: RunStore, job_id: str, sink=None, on_progress=None) -> dict:
    """Run a claimed (or foreground) job in this process and record how it ended."""
    job = store.job(job_id)
    if job is None:
        raise UserError(f"There is no job {job_id!r} in {store.root}.")
    k = _kind(job["kind"])
    store.set_job(job_id, status="running", pid=os.getpid(), started=job.get("started") or time.time(),
                  heartbeat=time.time())
    if is_run_job(job):
        store.event(job["run_id"], "started", f"pid {os.getpid()}")
    ctx = Context(store, job, sink, on_progress)
    try:
        result = k.fn(ctx) or {}
    except Pruned as e:                  # a sweep's trial that cannot catch up
        _finish(store, job, "pruned", str(e), result={"pruned_at": e.epoch}, cancel=0)
        return {"job_id": job_id, "status": "pruned", "pruned_at": e.epoch}
    except Cancelled:
        _finish(store, job, "cancelled", "stopped at a step; the last checkpoint is kept")
        return {"job_id": job_id, "status": "cancelled"}
    except KeyboardInterrupt:            # Ctrl-C, or SIGTERM turned into one by the worker/CLI
        _finish(store, job, "interrupted", "stopped by a signal (Ctrl-C or SIGTERM); resume continues it")
        raise
    except Exception as e:  # noqa: BLE001 - record anything; a bug keeps its traceback in the log
        message, user = failure(e)
        if not user:
            traceback.print_exc()
        return _failed(store, job, message)
    _finish(store, job, "done", "", result=result, cancel=0)
    return {"job_id": job_id, "status": "done", **result}


def failure(e: BaseException) -> tuple[str, bool]:
    """(the sentence that records how a job failed, whether it is the user's to fix): the one
    place that words a failure (jobs here, and each process of a several-process run)."""
    if isinstance(e, UserError):
        return str(e), True
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return f"The disk is full ({e.filename or 'writing'}); free space, then resume.", True
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".rstrip(": "), False


def _failed(store: RunStore, job: dict, message: str) -> dict:
    _finish(store, job, "failed", message, error=message)
    return {"job_id": job["job_id"], "status": "failed", "error": message}
