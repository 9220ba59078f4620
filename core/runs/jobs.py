"""Run lifecycle: launch into a persisted queue, start workers in their own sessions, run.

A worker is `python -m core.runs.worker RUN_ID --runs DIR`, started with start_new_session=True so
page reruns, closed tabs and a restarted Streamlit never kill it. By default one run at a time
per device (one per GPU, one on the CPU); the rest wait in the queue (the runs table) and start
in order when the device frees up: the worker that finishes starts the next one, and every
dashboard page load calls `schedule()` too, so the queue also moves after a restart.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback

from core.train.config import TrainConfig
from core.errors import UserError
from core.paths import REPO
from core.runs.store import RunStore
from core.runs.sinks import Cancelled, StoreSink


def device_key(cfg: TrainConfig) -> str:
    """The queue a run waits in: "cuda" (any GPU), "mps" or "cpu". A started GPU run holds
    one GPU's slot, "cuda:<i>"."""
    import torch
    if cfg.device in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "mps" if cfg.device == "mps" else "cpu"


def foreground_device(cfg: TrainConfig) -> str:
    """The slot a CLI run (in this very process, on its default GPU) holds."""
    key = device_key(cfg)
    return "cuda:0" if key == "cuda" else key


def gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _slots(key: str) -> list[str]:
    return [f"cuda:{i}" for i in range(gpu_count())] if key == "cuda" else [key]


def _visible_device(slot: str) -> str | None:
    """CUDA_VISIBLE_DEVICES for a worker on `slot`, relative to what this process may see."""
    if not slot.startswith("cuda:"):
        return None
    i = int(slot.split(":")[1])
    mine = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return mine[i] if i < len(mine) else str(i)


def launch(cfg: TrainConfig, store: RunStore, start: bool = True) -> str:
    """Queue a run and start it if its device is free. Returns the run id."""
    cfg.validate()
    run_id = store.create(cfg, status="queued", device=device_key(cfg))
    if start:
        schedule(store)
    return run_id


def schedule(store: RunStore, max_per_device: int = 1) -> list[str]:
    """Start the oldest queued run of every device that has a free slot."""
    store.reap()
    started = []
    with store._conn() as c:
        c.execute("BEGIN IMMEDIATE")  # one scheduler at a time claims queued runs
        busy = {r["device"]: r["n"] for r in c.execute(
            "SELECT device, COUNT(*) AS n FROM runs WHERE status IN ('starting','running') GROUP BY device")}
        queued = c.execute("SELECT run_id, device FROM runs WHERE status='queued' ORDER BY queued_at").fetchall()
        for r in queued:
            slot = next((k for k in _slots(r["device"]) if busy.get(k, 0) < max_per_device), None)
            if slot is not None:     # one run per GPU: a queued "cuda" run takes the first free one
                busy[slot] = busy.get(slot, 0) + 1
                c.execute("UPDATE runs SET status='starting', device=?, heartbeat=?, pid=NULL, proc=NULL "
                          "WHERE run_id=?", (slot, time.time(), r["run_id"]))  # a resumed run's old worker is gone
                started.append((r["run_id"], slot))
        c.execute("COMMIT")
    for run_id, slot in started:
        _spawn(store, run_id, _visible_device(slot))
    return [run_id for run_id, _ in started]


def _spawn(store: RunStore, run_id: str, cuda_device: str | None = None) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cuda_device is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_device      # the worker sees its one GPU as cuda:0
    with open(store.run_dir(run_id) / "log.txt", "ab") as log:  # the child keeps its own handle
        p = subprocess.Popen([sys.executable, "-m", "core.runs.worker", run_id, "--runs", str(store.root)],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=str(REPO), env=env, start_new_session=True)
    store.set(run_id, pid=p.pid)


def cancel(store: RunStore, run_id: str) -> None:
    run = store.get(run_id)
    if run and run["status"] == "queued":
        store.set(run_id, status="cancelled", finished=time.time())
    else:
        store.set(run_id, cancel=1)  # the worker stops at its next step, keeping its last checkpoint
    store.event(run_id, "cancel", "cancel requested")


def resume(store: RunStore, run_id: str) -> None:
    """Queue an interrupted, cancelled or failed run to continue from its last checkpoint."""
    run = store.get(run_id)
    if run is None:
        raise UserError(f"There is no run {run_id!r}.")
    if run["status"] in ("queued", "starting", "running"):
        raise UserError(f"Run {run_id} is {run['status']}; only a stopped run can be resumed.")
    device = "cuda" if str(run.get("device", "")).startswith("cuda") else run.get("device") or "cpu"
    store.set(run_id, status="queued", device=device, cancel=0, resume=1, error=None, queued_at=time.time(),
              progress={})
    store.event(run_id, "resume", "queued to resume")
    schedule(store)


def execute(store: RunStore, run_id: str, resume_run: bool = False, sink=None) -> dict:
    """Run a queued run in this process: fit, then record the outcome. Used by worker and CLI."""
    from core.train.engine import fit
    run = store.get(run_id)
    cfg = TrainConfig.from_dict(run["config"])
    # `cancel` is not reset here: a Cancel clicked while the worker was starting must still count
    store.set(run_id, status="running", pid=os.getpid(), started=run.get("started") or time.time(),
              heartbeat=time.time())
    store.event(run_id, "started", f"pid {os.getpid()}")
    sink = sink or StoreSink(store, run_id)
    try:
        summary = fit(cfg, store.run_dir(run_id), sink, resume=resume_run or bool(run.get("resume")))
    except Cancelled:
        sink.flush() if hasattr(sink, "flush") else None
        store.set(run_id, status="cancelled", finished=time.time())
        store.event(run_id, "cancelled", "stopped at a step; last checkpoint kept")
        return {"run_id": run_id, "status": "cancelled"}
    except UserError as e:
        return _failed(store, run_id, str(e))
    except Exception as e:  # noqa: BLE001 - record anything, keep the traceback in the log
        traceback.print_exc()
        return _failed(store, run_id, f"{type(e).__name__}: {e}")
    store.set(run_id, status="done", finished=time.time(), summary=summary, resume=0)
    store.event(run_id, "done", "")
    return {"run_id": run_id, "status": "done", **summary}


def _failed(store, run_id, message):
    store.set(run_id, status="failed", finished=time.time(), error=message)
    store.event(run_id, "failed", message)
    return {"run_id": run_id, "status": "failed", "error": message}
