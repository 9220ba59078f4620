"""Every process of a run on several processes (--nproc N): what torchrun starts.

The job's side (core.runs.launcher.launch_torchrun, in the worker or the CLI's process) starts torchrun:
    python -m core.runs.ddp torchrun --standalone --nproc_per_node N -m core.runs.ddp RUN_ID ...
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
import signal
import sys
import traceback
from pathlib import Path

from core.errors import Cancelled, Pruned, UserError
from core.files import atomic_write
from core.runs.jobs import Context, failure



# ------------------------------------------------------------------ every process torchrun starts

def _interrupt(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # once: a second stop must not break off the report
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
    ap = argparse.ArgumentParser(prog="python -m core.runs.ddp")
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
        # torchrun's stop (SIGTERM) arriving while the report is written would leave a traceback on the
        # terminal and no report: the report is written first, then a stop ends us quietly
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            atomic_write(Path(a.reports) / f"rank{rank}.json", json.dumps(report, default=float))
        except OSError:
            pass                         # the launch was removed (its job gave up): nobody reads it
        signal.signal(signal.SIGTERM, signal.SIG_DFL)   # reported: torchrun stopping us now ends us quietly
    return 0 if report["status"] in ("done", "cancelled", "pruned") else 1


def _run(a) -> dict:
    from core.train import distributed
    ddp = distributed.setup()
    try:
        if ddp.is_main:
            from core.runs.store import RunStore
            from core.runs.tasks import fit_job
            from core.train.sinks import TqdmSink
            store = RunStore(a.runs)
            job = store.job(a.run_id)
            if job is None:
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
    """This process's report of its failure; the traceback goes into the report (the run's log gets
    it from there), not onto the terminal: a peer killed makes every other process fail too."""
    message, user = failure(e)
    report = {"status": "failed", "error": message, "user": user}
    if not user:
        report["traceback"] = traceback.format_exc()
    return report


if __name__ == "__main__":
    sys.exit(main())
