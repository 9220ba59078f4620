"""Commands that inspect a run's data set: inspect (label issues, near-duplicates, leaks; issue 22)."""
from __future__ import annotations

import sys

from core.cli.common import _run_here, _runs_and_json


def add_inspect(sub) -> None:
    from core.serve.inspect import FOLDS, TOP        # numpy and pandas only: --help stays fast
    p = sub.add_parser("inspect", help="rank every image of a run's split by how likely its label is wrong; "
                                       "near-duplicates and train/holdout leaks")
    p.add_argument("run_id")
    p.add_argument("--folds", type=int, default=FOLDS, help=f"out-of-fold splits of the linear probe (default {FOLDS})")
    p.add_argument("--top", type=int, default=TOP, help=f"rows of each list shown (default {TOP}); "
                                                        "the run folder's inspect.json has them all")
    _runs_and_json(p)
    p.set_defaults(fn=cmd_inspect)


def cmd_inspect(a) -> dict:
    def progress(p):
        total = p.get("total")
        line = p["stage"] + (f" {p['done']}/{total}" if total else "…")
        print(f"\r{line}\033[K", end="\n" if not total or p["done"] == total else "", file=sys.stderr, flush=True)
    out = _run_here(a, "inspect", {"folds": a.folds, "top": a.top}, run_id=a.run_id, on_progress=progress)
    if out.get("note"):
        print(out["note"], file=sys.stderr)
    result = {k: out[k] for k in ("run_id", "label_issues", "duplicates", "leaks")}
    if a.json:
        return result
    print(f"features: {out['features']}")
    print(f"label issues (score = how likely the given label is wrong), top {len(result['label_issues'])}:")
    for r in result["label_issues"]:
        print(f"  {r['score']:.3f}  {r['image']}  {r['given_name']} → {r['suggested_name']}")
    print(f"near-duplicates, top {len(result['duplicates'])}:")
    for d in result["duplicates"]:
        print(f"  {d['similarity']:.3f}  {d['a']} ({d['splits'][0]})  {d['b']} ({d['splits'][1]})")
    print(out["leak_sentence"])
    return {}
