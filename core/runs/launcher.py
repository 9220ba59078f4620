"""The one process launcher: a job's worker (`python -m core.runs.worker JOB`) and a run's torchrun
(`python -m core.runs.ddp torchrun ...`, core.runs.ddp) start here, with one way of building their
environment. `launch_torchrun` is a run's job side on several processes: it starts torchrun, waits
(forwarding a cancel: the processes stop at one step within GRACE_S, else torchrun is told to stop
them), and turns the processes' reports (in the run folder's ddp/) into the job's outcome."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.errors import Cancelled, Pruned, UserError
from core.files import append
from core.paths import REPO

GRACE_S = 30.0          # seconds a cancelled run has to stop by itself before torchrun is told to stop it
STOP_WAIT_S = 45.0      # torchrun stops its processes: SIGTERM, SIGKILL after 30 s


def child_env(cuda_devices: str | None = None, threads: int | None = None) -> dict:
    """This process's environment, with the repository importable, the GPUs a child may see
    (CUDA_VISIBLE_DEVICES, relative to ours) and, if given, its share of the CPU threads."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cuda_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_devices
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(max(1, threads)))
    return env


def visible_devices(slot: str | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for a worker on `slot` (one GPU or several, comma-separated),
    relative to what this process may see."""
    if not slot or not slot.startswith("cuda:"):
        return None
    mine = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    ids = [int(part.split(":")[1]) for part in slot.split(",")]
    return ",".join(mine[i] if i < len(mine) else str(i) for i in ids)


def start(module: str, args: list[str], env: dict, log=None, new_session: bool = False) -> subprocess.Popen:
    """`python -m module args...` from the repository root; output to `log` (an open file) if given."""
    out = {"stdout": log, "stderr": subprocess.STDOUT} if log is not None else {}
    return subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.DEVNULL, cwd=str(REPO),
                            env=env, start_new_session=new_session, **out)


def spawn_worker(job_id: str, runs_root, log_path, slot: str | None = None) -> int:
    """A job's worker in its own session (page reruns, closed tabs and app restarts never kill it)."""
    with open(log_path, "ab") as log:    # the child keeps its own handle
        p = start("core.runs.worker", [job_id, "--runs", str(runs_root)], child_env(visible_devices(slot)),
                  log=log, new_session=True)
    return p.pid


# ------------------------------------------------------------------ the job's side

def launch_torchrun(ctx, cfg) -> dict:
    """Run the job's run on cfg.nproc processes with torchrun on this machine; its summary."""
    reports = ctx.run.ddp_dir            # in the run folder: a killed launch leaves nothing in /tmp
    shutil.rmtree(reports, ignore_errors=True)      # what an earlier launch of this run left
    reports.mkdir(parents=True)
    args = ["torchrun", "--standalone", "--nproc_per_node", str(cfg.nproc), "-m", "core.runs.ddp", ctx.run.id,
            "--runs", str(ctx.store.root), "--reports", str(reports)]
    if ctx.sink is not None:
        args.append("--bar")             # the CLI: rank 0 draws the progress bar on this terminal
    try:
        p = start("core.runs.ddp", args, child_env(threads=(os.cpu_count() or 1) // cfg.nproc))  # the cores, shared
        try:
            stopped = _wait(p, ctx)
        except BaseException:            # Ctrl-C, or SIGTERM turned into one: the processes stop first
            _stop(p)
            raise
        return _outcome(reports, p.returncode, cfg.nproc, stopped, ctx.run.log_file)
    finally:
        shutil.rmtree(reports, ignore_errors=True)


def _wait(p: subprocess.Popen, ctx) -> bool:
    """Wait for torchrun; True when the job was cancelled meanwhile."""
    asked = None
    while True:
        try:
            p.wait(timeout=0.5)
            return asked is not None
        except subprocess.TimeoutExpired:
            pass
        if asked is None and ctx.should_stop():
            asked = time.monotonic()
        elif asked is not None and time.monotonic() - asked > GRACE_S:
            _stop(p)
            return True


def _stop(p: subprocess.Popen) -> None:
    """torchrun forwards SIGTERM to its processes and waits for them."""
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        p.kill()                         # its processes notice their parent is gone and leave
        p.wait()


def _outcome(reports: Path, code: int, n: int, stopped: bool, log: Path | None = None) -> dict:
    got = {}
    for f in reports.glob("rank*.json"):
        try:
            got[int(f.stem[4:])] = json.loads(f.read_text())
        except (OSError, ValueError):
            pass
    if log is not None:                  # the processes' tracebacks go to the run's log, not the terminal
        for rank, r in sorted(got.items()):
            if r.get("traceback"):
                append(log, f"process {rank} of {n}:\n{r['traceback']}")
    main = got.get(0, {})
    if main.get("status") == "done" and code == 0:
        return main["summary"]
    if main.get("status") == "pruned":
        raise Pruned(int(main["pruned_at"]), main["error"])
    if stopped or main.get("status") == "cancelled":
        raise Cancelled()
    failed = sorted((not r.get("user"), rank, r["error"]) for rank, r in got.items() if r.get("status") == "failed")
    if failed and not failed[0][0]:      # a sentence of the user's kind (bad input, data unreadable on one machine)
        raise UserError(failed[0][2])
    first = _first_failure(reports)      # torchrun's root cause: a process killed leaves no report of its own
    if first and got.get(first["rank"], {}).get("status") != "failed":
        how = f"killed by {first['signal']}" if first.get("signal") else f"exit status {first['exitcode']}"
        raise UserError(f"Process {first['rank']} of {n} stopped without a report ({how}); the run's log has its "
                        "output.")
    if failed:
        _, rank, error = failed[0]
        raise UserError(f"Process {rank} of {n} failed: {error}")
    raise UserError(f"The {n} training processes stopped without a report (torchrun exit status {code}); "
                    "the run's log has their output.")


def _first_failure(reports: Path) -> dict | None:
    try:
        return json.loads((reports / "torchrun.json").read_text())
    except (OSError, ValueError):
        return None
