"""Commands on a trained run's model: predict (with --explain, --classifier), class-model, export, embed."""
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
    p.add_argument("--classifier", choices=["softmax", "knn"], default="softmax",
                   help="softmax: the network's answer; knn: the 10 nearest training photos vote, with their "
                        "similarity as confidence (needs python -m core embed RUN first)")
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


def add_embed(sub) -> None:
    p = sub.add_parser("embed", help="embed a run's photos (the features its head reads) for neighbours, the map "
                                     "and the kNN classifier")
    p.add_argument("run_id")
    _runs_and_json(p)
    p.set_defaults(fn=cmd_embed)


def cmd_embed(a) -> dict:
    """The embed job kind (the Evaluate page's) in this process; progress on stderr."""
    def progress(p):
        end = "\n" if p.get("done") == p.get("total") else ""
        print(f"\rembedding {p.get('done')}/{p.get('total')} photos\033[K", end=end, file=sys.stderr, flush=True)
    out = _run_here(a, "embed", {}, run_id=a.run_id, on_progress=progress)
    if out["missing"]:
        print(f"{out['missing']} photo(s) of run {a.run_id} can no longer be read and were left out (e.g. "
              f"{', '.join(out['missing_examples'][:3])}).", file=sys.stderr)
    if not a.json:
        print(f"embedded {out['n']} photos of run {a.run_id} ({out['dim']} dimensions, map: {out['map']}, "
              f"search: {out['index']}) in {out['seconds']:.1f} s")
        return {}
    return {k: out[k] for k in ("run_id", "n", "dim", "missing", "missing_examples", "seconds", "map", "index")}


def cmd_predict(a) -> dict:
    from core.runs.store import RunStore
    from core.serve.predictor import load_predictor
    methods = _explain_methods(a.explain)   # an unknown name: one sentence before the model loads
    run = RunStore(a.runs).require(a.run)
    emb = _knn_store(run) if a.classifier == "knn" else None
    pred = load_predictor(run)
    results = []
    for path in a.images:
        try:
            x = pred.tensor(path)
        except (UserError, OSError, ValueError) as e:
            results.append({"image": path, "error": str(e) or type(e).__name__})
            continue
        if emb is not None:
            item = _predict_knn(emb, pred, x, path, a)
        else:
            item = {"image": path, **pred.answer(x, a.top)}     # calibrated, and rejected below the threshold
        if methods:
            item["explanations"] = _explain(pred, x, path, methods, a.out)
        results.append(item)
        if not a.json and emb is None:
            print(path)
            if item["rejected"]:
                print(f"  {pred.rejection_text()} (best guesses below the threshold {item['threshold']:.3f}):")
            for t in item["top"]:
                print(f"  {t['prob']:.3f}  {t['name']}")
    if all("error" in r for r in results):
        raise UserError(results[0]["error"])
    if emb is not None:
        return {"run_id": a.run, "classifier": "knn", "results": results}
    return {"run_id": a.run, "calibrated": bool(pred.calibration), "results": results}


def _knn_store(run):
    """The run's embeddings for --classifier knn (predict and eval), or one sentence saying how to get them."""
    from core.serve import embeddings
    emb = embeddings.require(run)
    if embeddings.stale(run):
        print(f"warning: run {run.id}'s embeddings were computed on an older checkpoint; python -m core embed "
              f"{run.id} brings them up to date.", file=sys.stderr)
    return emb


def _predict_knn(emb, pred, x, path, a) -> dict:
    """predict --classifier knn: one image's kNN answer (core.serve.embeddings.answer)."""
    from core.serve.embeddings import answer
    out = answer(emb, pred, x, top=a.top)
    if not a.json:
        print(path)
        for t in out["top"]:
            print(f"  {t['similarity']:.3f}  {t['name']}")
        best = out["neighbours"][0] if out["neighbours"] else None
        if best:
            print(f"  nearest training photo: {best['path']} ({best['name']}, similarity {best['similarity']:.3f})")
    return {"image": path, **out}


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
