"""Commands on a trained run's model: predict (with --explain), class-model, export."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.common import _abs, _run_here, _runs_and_json
from core.errors import UserError


class _MethodsHelp(argparse.HelpFormatter):
    """Fills %(methods)s in a help text with the attribution registry's names when the help is shown,
    not when the parser is built: the registry imports torch, which `python -m core --help` must not.
    (_get_help_string is the hook argparse's own ArgumentDefaultsHelpFormatter overrides.)"""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        if text and "%(methods)s" in text:
            from core.explain import METHODS
            text = text.replace("%(methods)s", ", ".join(METHODS))
        return text


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a run's model", formatter_class=_MethodsHelp)
    p.add_argument("--run", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--explain", default=None, metavar="METHOD[,METHOD...]",
                   help="attribution maps to write as PNGs, comma-separated, from: %(methods)s")
    p.add_argument("--out", default=None)
    _runs_and_json(p)
    p.set_defaults(fn=cmd_predict)


def add_class_model(sub) -> None:
    p = sub.add_parser("class-model", help="image that maximises a class score (Simonyan et al. 2014)")
    p.add_argument("--run", required=True)
    p.add_argument("--class", dest="cls", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--size", type=int, default=0)
    _runs_and_json(p)
    p.set_defaults(fn=cmd_class_model)


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's model as ONNX or TorchScript, checked against PyTorch")
    p.add_argument("run_id")
    p.add_argument("--format", default="onnx", metavar="onnx|torchscript",
                   help="onnx (onnxruntime, any language) or torchscript (LibTorch); default onnx")
    p.add_argument("--out", default=None, metavar="FILE", help="default: the run's exports folder")
    _runs_and_json(p)
    p.set_defaults(fn=cmd_export)


def cmd_predict(a) -> dict:
    from core.runs.store import RunStore
    from core.serve.predictor import load_predictor
    methods = _explain_methods(a.explain)   # an unknown name: one sentence before the model loads
    pred = load_predictor(RunStore(a.runs).require(a.run))
    results = []
    for path in a.images:
        try:
            x = pred.tensor(path)
        except (UserError, OSError, ValueError) as e:
            results.append({"image": path, "error": str(e) or type(e).__name__})
            continue
        item = {"image": path, **pred.answer(x, a.top)}     # calibrated, and rejected below the threshold
        if methods:
            item["explanations"] = _explain(pred, x, path, methods, a.out)
        results.append(item)
        if not a.json:
            print(path)
            if item["rejected"]:
                print(f"  {pred.rejection_text()} (best guesses below the threshold {item['threshold']:.3f}):")
            for t in item["top"]:
                print(f"  {t['prob']:.3f}  {t['name']}")
    if all("error" in r for r in results):
        raise UserError(results[0]["error"])
    return {"run_id": a.run, "calibrated": bool(pred.calibration), "results": results}


def _explain_methods(names: str | None) -> list[str]:
    """`--explain a,b` -> registered method names (core.explain.METHODS); UserError names the known ones."""
    if not names:
        return []
    from core.explain import get_method
    return [get_method(m.strip()).name for m in names.split(",") if m.strip()]


def _explain(pred, x, path, methods: list[str], out_dir) -> list:
    from core.explain import explain_to_png
    return [explain_to_png(pred, x, path, m, Path(out_dir or ".")) for m in methods]


def cmd_class_model(a) -> dict:
    """One class's model image through the class_models job kind (the Class model page's), into --out;
    the page's progress line on stderr."""
    from core.runs.tasks import class_models_line

    def progress(p):
        end = "\n" if p.get("done") == p.get("total") else ""
        print(f"\r{class_models_line(p)}\033[K", end=end, file=sys.stderr, flush=True)
    out = _run_here(a, "class_models", {"classes": [a.cls], "steps": a.steps, "size": a.size,
                                        "out": _abs(a.out)}, run_id=a.run, on_progress=progress)
    return {"run_id": a.run, **out["results"][0]}


def cmd_export(a) -> dict:
    from core.runs.store import RunStore
    from core.serve.export import export_run, normalise_format
    fmt = normalise_format(a.format)
    run = RunStore(a.runs).require(a.run_id)
    print(f"exporting run {a.run_id} as {fmt} and checking it against PyTorch…", file=sys.stderr)
    out = export_run(run, fmt, a.out)
    if not a.json:
        print(f"{'reused' if out['cached'] else 'wrote'} {out['path']} ({out['bytes'] / 1e6:.1f} MB, "
              f"{out['classes']} classes, input {out['input']['size']} px RGB in [0, 1]); largest difference from "
              f"PyTorch {out['max_abs_diff']:.1e} on {out['checked_on']}, top-1 agrees on {out['top1_agree']:.0%}")
        print(f"class names and preprocessing: inside the file and in {out['sidecar']}")
        return {}
    return out
