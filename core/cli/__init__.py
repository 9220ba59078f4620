"""Command line: python -m core {demo-data,stats,train,runs,eval,predict,class-model,export,embed,download,sweep,
reproduce,report,dataset,inspect}.

With --json the last line on stdout is one JSON object; progress goes to stderr.
Bad input prints one sentence to stderr and exits with status 2.

One module per command group (data, training, inference, sweeps); each command is one `add_<command>(sub)`
that registers its subcommand with `set_defaults(fn=cmd_<command>)`. COMMANDS below is the table of them,
in the order `python -m core --help` lists them. A new command: its two functions in its group, one line here.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from core.cli import data, inference, inspection, report, sweeps, training
from core.cli.inference import _explain_methods  # noqa: F401 - tests check the --explain names through it
from core.errors import UserError

COMMANDS = (data.add_demo_data, data.add_stats, training.add_train, training.add_runs, training.add_eval,
            inference.add_predict, inference.add_class_model, data.add_download, inference.add_export,
            inference.add_embed, sweeps.add_sweep, sweeps.add_reproduce, report.add_report, data.add_dataset,
            inspection.add_inspect)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core", description="Landmark recognition workbench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for add in COMMANDS:
        add(sub)
    return ap


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
        print(getattr(a, "interrupted", "interrupted; the last checkpoint is kept (resume with --resume RUN_ID)"),
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if out:
        _out(out, a.json)
    return 0
