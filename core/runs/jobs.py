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
A new kind is one function plus one registration line (`@kind("name")`, see core.runs.tasks).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from core.errors import Cancelled, Pruned, UserError
from core.paths import DISK_FULL, REPO
from core.runs.store import ACTIVE, START_GRACE_S, RunStore, alive

PROGRESS_EVERY_S = 0.25      # seconds between progress writes of one job
STOP_CHECK_S = 0.5           # seconds between reads of a job's cancel flag


@dataclass(frozen=True)
class Kind:
    name: str
    fn: Callable                              # (Context) -> result dict
    queue: Callable[[dict], str | None]       # args -> device queue ("cuda", "cpu", "mps") or None: no slot
    check: Callable | None = None             # (store, args, run_id) -> None; raises UserError before queueing


KINDS: dict[str, Kind] = {}


def kind(name: str, queue: Callable[[dict], str | None] | None = None, check: Callable | None = None):
    """Register a job kind: `@kind("scan")` above `def scan(ctx) -> dict`."""
    def register(fn):
        KINDS[name] = Kind(name, fn, queue or (lambda args: None), check)
        return fn
    return register


def _kind(name: str) -> Kind:
    import core.runs.tasks  # noqa: F401 - the built-in kinds register themselves on import
    if name not in KINDS:
        raise UserError(f"Unknown job kind {name!r}; known kinds: {', '.join(KINDS)}.")
    return KINDS[name]


class Context:
    """What a job's function gets: its arguments, its run (if any), progress and a stop flag."""

    def __init__(self, store: RunStore, job: dict, sink=None):
        self.store, self.job, self.job_id = store, job, job["job_id"]
        self.args = job.get("args") or {}
        self.run = store.run(job["run_id"]) if job.get("run_id") else None
        self.sink = sink
        self._last = self._stop_checked = 0.0
        self._stop = False

    def progress(self, force: bool = False, **fields) -> None:
        """Report progress (any flat fields: done, total, message...) and a heartbeat."""
        if force or time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._last = time.monotonic()
            self.store.set_job(self.job_id, progress=fields, heartbeat=time.time())

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


def _slots(key: str | None) -> list[str | None]:
    if key is None:
        return [None]
    return [f"cuda:{i}" for i in range(gpu_count())] if key.split("*")[0] == "cuda" else [key]


def check_gpus(device_pref: str, gpus: int) -> None:
    """An N-GPU run on a machine with fewer GPUs would wait for ever: one sentence instead."""
    key = device_key(device_pref, gpus)
    if key.startswith("cuda") and _need(key) > gpu_count():
        raise UserError(f"This run asks for {gpus} GPUs; this machine has {gpu_count()}. "
                        f"Choose {gpu_count()} or fewer (--nproc).")


def _visible_device(slot: str | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for a worker on `slot` (one GPU or several, comma-separated),
    relative to what this process may see."""
    if not slot or not slot.startswith("cuda:"):
        return None
    mine = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    ids = [int(part.split(":")[1]) for part in slot.split(",")]
    return ",".join(mine[i] if i < len(mine) else str(i) for i in ids)


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


def launch(cfg, store: RunStore, start: bool = True) -> str:
    """Queue a training run and start it if its device is free. Returns the run id."""
    cfg.validate()
    check_gpus(cfg.device, nproc(cfg))
    run_id = store.create(cfg, status="queued", device=device_key(cfg.device, nproc(cfg)))
    if start:
        schedule(store)
    return run_id


def schedule(store: RunStore, max_per_device: int = 1) -> list[str]:
    """Start every queued job that may start: the oldest of each device with a free slot, and
    every job that needs no device."""
    reap(store)
    started = store.claim_queued(_slots, max_per_device, _need)
    for job_id, slot in started:
        _spawn(store, job_id, _visible_device(slot))
    return [job_id for job_id, _ in started]


def log_file(store: RunStore, job: dict):
    """A training job logs into its run folder; other jobs into runs/jobs/<job id>.log."""
    if job["kind"] == "train" and job.get("run_id"):
        return store.run(job["run_id"]).log_file
    d = store.root / "jobs"
    d.mkdir(exist_ok=True)
    return d / f"{job['job_id']}.log"


def _spawn(store: RunStore, job_id: str, cuda_device: str | None = None) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cuda_device is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_device      # the worker sees its one GPU as cuda:0
    with open(log_file(store, store.job(job_id)), "ab") as log:  # the child keeps its own handle
        p = subprocess.Popen([sys.executable, "-m", "core.runs.worker", job_id, "--runs", str(store.root)],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=str(REPO), env=env, start_new_session=True)
    store.set_job(job_id, pid=p.pid)


# ------------------------------------------------------------------ liveness, control, status

def reap(store: RunStore) -> list[str]:
    """Mark jobs whose worker died (killed, machine rebooted) as interrupted."""
    now, dead = time.time(), []
    for j in store.jobs(statuses=("starting", "running")):
        gone = not alive(j["pid"], j["proc"]) if j["pid"] else now - (j["heartbeat"] or 0) > START_GRACE_S
        if gone:
            dead.append(j["job_id"])
            _finish(store, j, "interrupted", "the worker process is gone")
    return dead


def _finish(store: RunStore, job: dict, status: str, message: str = "", **fields) -> None:
    store.set_job(job["job_id"], status=status, finished=time.time(), **fields)
    if job["kind"] == "train" and job.get("run_id"):
        store.event(job["run_id"], status, message)


def cancel(store: RunStore, job_id: str) -> str:
    """Stop a job: a queued one at once, a running one at its next step. Returns what happened."""
    job = store.job(job_id)
    if job is None or job["status"] not in ACTIVE:
        return "not active"
    if job["status"] == "queued":
        _finish(store, job, "cancelled", "cancelled while queued")
        return "cancelled"
    store.set_job(job_id, cancel=1)
    if job["kind"] == "train" and job.get("run_id"):
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

def run_job(store: RunStore, job_id: str, sink=None) -> dict:
    """Run a claimed (or foreground) job in this process and record how it ended."""
    job = store.job(job_id)
    if job is None:
        raise UserError(f"There is no job {job_id!r} in {store.root}.")
    k = _kind(job["kind"])
    store.set_job(job_id, status="running", pid=os.getpid(), started=job.get("started") or time.time(),
                  heartbeat=time.time())
    if job["kind"] == "train" and job.get("run_id"):
        store.event(job["run_id"], "started", f"pid {os.getpid()}")
    ctx = Context(store, job, sink)
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
    except UserError as e:
        return _failed(store, job, str(e))
    except OSError as e:
        if e.errno in DISK_FULL:
            return _failed(store, job, f"The disk is full ({e.filename or 'writing'}); free space, then resume.")
        traceback.print_exc()
        return _failed(store, job, f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - record anything, keep the traceback in the log
        traceback.print_exc()
        return _failed(store, job, f"{type(e).__name__}: {e}")
    _finish(store, job, "done", "", result=result, cancel=0)
    return {"job_id": job_id, "status": "done", **result}


def _failed(store: RunStore, job: dict, message: str) -> dict:
    _finish(store, job, "failed", message, error=message)
    return {"job_id": job["job_id"], "status": "failed", "error": message}
