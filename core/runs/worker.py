"""Worker process: `python -m core.runs.worker JOB_ID [--runs DIR]`. Never imports Streamlit;
writes only to the run store. When its job ends it starts the next queued ones."""
from __future__ import annotations

import argparse
import signal
import sys

import core.runs.tasks  # noqa: F401 - the job kinds register themselves
from core.runs.jobs import run_job, schedule
from core.runs.store import RunStore


def _interrupt(*_):
    raise KeyboardInterrupt()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.runs.worker")
    ap.add_argument("job_id")
    ap.add_argument("--runs", default=None)
    args = ap.parse_args(argv)
    store = RunStore(args.runs)
    signal.signal(signal.SIGTERM, _interrupt)   # SIGTERM: the job is marked interrupted, not left "running"
    try:
        result = run_job(store, args.job_id)
    except KeyboardInterrupt:
        return 1
    finally:
        schedule(store)
    print(f"job {args.job_id}: {result['status']}", flush=True)
    return 0 if result["status"] in ("done", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
