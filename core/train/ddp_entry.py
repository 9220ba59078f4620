"""A run on several processes, started from its `train` job (--nproc N).

`launch` (the job, in the worker or the CLI's process) starts torchrun and waits for it:
    python -m core.train.ddp_entry torchrun --standalone --nproc_per_node N -m core.train.ddp_entry RUN_ID ...
(`_torchrun` runs torch.distributed.run's own main, quiet: a failed process is reported by its own
report and one sentence, not by torchrun's traceback). Every process torchrun starts runs `main`:
rank 0 fits into that very job (core.runs.tasks.fit_job: progress, heartbeat, epochs, events, as
for any run), the others follow it (core.train.engine.fit with nothing of their own). Each process
leaves a report (done, cancelled, pruned, or failed with its error's last line) that `launch`
turns into the job's outcome: the summary, Cancelled, Pruned or one sentence.

A cancel (the job's flag) is seen by rank 0 within a few steps and every process stops at the
same step; if they have not stopped after GRACE_S (preparing data, evaluating), torchrun is told to
stop them (SIGTERM; it kills what is left after 30 s). Ctrl-C and SIGTERM of the job's process do
the same at once.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

GRACE_S = 30.0          # seconds a cancelled run has to stop by itself before torchrun is told to stop it
STOP_WAIT_S = 45.0      # torchrun stops its processes: SIGTERM, SIGKILL after 30 s


# ------------------------------------------------------------------ the job's side

def launch(ctx, cfg) -> dict:
    """Run the job's run on cfg.nproc processes with torchrun on this machine; its summary."""
    from core.paths import REPO
    reports = Path(tempfile.mkdtemp(prefix="landmarks-ddp-"))
    cmd = [sys.executable, "-m", "core.train.ddp_entry", "torchrun", "--standalone", "--nproc_per_node",
           str(cfg.nproc), "-m", "core.train.ddp_entry", ctx.run.id, "--runs", str(ctx.store.root),
           "--reports", str(reports)]
    if ctx.sink is not None:
        cmd.append("--bar")              # the CLI: rank 0 draws the progress bar on this terminal
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.nproc)))   # the cores, shared
    try:
        p = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdin=subprocess.DEVNULL)
        try:
            stopped = _wait(p, ctx)
        except BaseException:            # Ctrl-C, or SIGTERM turned into one: the processes stop first
            _stop(p)
            raise
        return _outcome(reports, p.returncode, cfg.nproc, stopped)
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


def _outcome(reports: Path, code: int, n: int, stopped: bool) -> dict:
    from core.errors import Cancelled, Pruned, UserError
    got = {}
    for f in reports.glob("rank*.json"):
        try:
            got[int(f.stem[4:])] = json.loads(f.read_text())
        except (OSError, ValueError):
            pass
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


# ------------------------------------------------------------------ every process torchrun starts

def _interrupt(*_):
    raise KeyboardInterrupt()


def _torchrun(argv: list[str]) -> int:
    """torchrun's main in this process. Its own log lines and its traceback when a process fails are
    left out: every process leaves a report (--reports), and for one that could not (killed), the
    first failure torchrun saw goes into torchrun.json there."""
    import logging
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as run
    from core.train.distributed import watch_parent
    watch_parent()                       # the job's process killed: SIGTERM, which torchrun passes on
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("torch.distributed") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.CRITICAL)
    try:
        run(argv)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        reports = Path(argv[argv.index("--reports") + 1])
        signal_name = failure.signal_name() if failure.exitcode < 0 else ""
        (reports / "torchrun.json").write_text(json.dumps(
            {"rank": rank, "exitcode": failure.exitcode, "signal": signal_name}))
        return 1
    except SignalException:              # stopped (the job's Ctrl-C, SIGTERM or cancel): it stopped its processes
        return 130
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["torchrun"]:
        return _torchrun(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m core.train.ddp_entry")
    ap.add_argument("run_id")
    ap.add_argument("--runs", required=True)
    ap.add_argument("--reports", required=True, help="folder for each process's report (rank<N>.json)")
    ap.add_argument("--bar", action="store_true", help="rank 0 draws a progress bar on stderr")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)        # torchrun stopping us: a report, not a traceback
    rank = int(os.environ.get("RANK", "0"))
    report: dict = {"status": "interrupted"}
    try:
        report = _run(a)
    except KeyboardInterrupt:
        report = {"status": "interrupted"}
    except BaseException as e:  # noqa: BLE001 - every failure becomes this process's report
        report = _failure(e)
    finally:
        out = Path(a.reports) / f"rank{rank}.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, default=float))
        os.replace(tmp, out)
    return 0 if report["status"] in ("done", "cancelled", "pruned") else 1


def _run(a) -> dict:
    from core.errors import Cancelled, Pruned
    from core.train import distributed
    ddp = distributed.setup()
    try:
        if ddp.is_main:
            from core.runs.jobs import Context
            from core.runs.store import RunStore
            from core.runs.tasks import fit_job
            from core.train.sinks import TqdmSink
            store = RunStore(a.runs)
            job = store.job(a.run_id)
            if job is None:
                from core.errors import UserError
                raise UserError(f"There is no run {a.run_id!r} in {store.root}.")
            summary = fit_job(Context(store, job, sink=TqdmSink() if a.bar else None))
            report = {"status": "done", "summary": summary}
        else:
            from core.train.engine import fit
            fit(None, None, ddp=ddp)
            report = {"status": "done"}
    except Pruned as e:
        return {"status": "pruned", "pruned_at": e.epoch, "error": str(e)}
    except Cancelled:
        return {"status": "cancelled"}
    ddp.close()
    return report


def _failure(e: BaseException) -> dict:
    from core.errors import UserError
    from core.paths import DISK_FULL
    if isinstance(e, UserError):
        return {"status": "failed", "error": str(e), "user": True}
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return {"status": "failed", "error": f"The disk is full ({e.filename or 'writing'}); free space, then resume.",
                "user": True}
    traceback.print_exc()
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return {"status": "failed", "error": f"{type(e).__name__}: {lines[-1].strip() if lines else ''}".rstrip(": ")}


if __name__ == "__main__":
    sys.exit(main())
