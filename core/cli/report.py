"""`python -m core report`: the poster regenerated from chosen runs as one self-contained HTML file
(the `report` job kind, core.runs.tasks; the builder is core.report)."""
from __future__ import annotations

import sys

from core.cli.common import _abs, _run_here


def add_report(sub) -> None:
    p = sub.add_parser("report", help="the poster's figures and holdout table from your runs, as one HTML file")
    p.add_argument("--runs", dest="run_ids", nargs="+", required=True, metavar="RUN", help="the runs to report on")
    p.add_argument("--data", default=None, help="the data set of Fig. 1 (default: the runs' own)")
    p.add_argument("--photos", nargs="+", default=None, metavar="FILE",
                   help="photos of Figs. 5–6 (default: the first correct holdout photo of each of the first classes)")
    p.add_argument("--class-models", action="store_true", help="draw Fig. 7's missing class model images first")
    p.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--store", dest="runs", default=None, help="the run store's folder (default: LANDMARKS_HOME/runs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_report)


def cmd_report(a) -> dict:
    args = {"runs": list(a.run_ids), "out": _abs(a.out), "data": _abs(a.data) if a.data else None,
            "photos": [_abs(p) for p in a.photos or ()], "class_models": bool(a.class_models)}

    def progress(f):
        if not a.json and f.get("stage"):
            print(f"report: {f['stage']}…", file=sys.stderr)
    out = _run_here(a, "report", args, on_progress=progress)
    for note in out.get("notes") or ():
        print(f"note: {note}", file=sys.stderr)
    return {k: out[k] for k in ("path", "bytes", "seconds", "runs", "data_sets", "notes")}
