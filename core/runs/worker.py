"""Worker process: `python -m core.runs.worker RUN_ID [--runs DIR]`. Never imports Streamlit;
writes only to the run store. When done it starts the next queued run."""
from __future__ import annotations

import argparse
import signal
import sys

from core.runs.jobs import execute, schedule
from core.runs.store import RunStore


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.runs.worker")
    ap.add_argument("run_id")
    ap.add_argument("--runs", default=None)
    args = ap.parse_args(argv)
    store = RunStore(args.runs)
    # SIGTERM becomes a normal exception so the run is marked, not left "running"
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        result = execute(store, args.run_id)
    except KeyboardInterrupt:
        store.set(args.run_id, status="interrupted")
        store.event(args.run_id, "interrupted", "worker received a termination signal")
        return 1
    finally:
        schedule(store)
    print(f"run {args.run_id}: {result['status']}", flush=True)
    return 0 if result["status"] in ("done", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
