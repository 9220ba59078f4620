"""The model card written beside every export (`RUN.md`, issue 24): what the model was trained on,
its holdout figures (mean ± sd over its seed group when it has one), its five weakest classes, the
input it expects, and the record (config, and provenance when the run has one).

Takes a run object (core.runs.store.Run or anything with its reads); never imports the run store."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.files import atomic_write

WEAKEST = 5                       # classes listed as the model's weak spots
METRICS = (("acc", "accuracy"), ("top5", "top-5 accuracy"), ("gap", "GAP"), ("balanced_acc", "balanced accuracy"),
           ("macro_f1", "macro-F1"))


def group_of(cfg: dict) -> str | None:
    """A run's seed group (`train --seeds`): the first run's id, in the config or its extra notes."""
    return cfg.get("group") or (cfg.get("extra") or {}).get("group") or None


def provenance(run) -> dict | None:
    """The run's provenance record (provenance.json in its folder), or None for a run made before it existed."""
    f = getattr(run, "provenance_file", None) or Path(run.dir) / "provenance.json"
    try:
        return json.loads(Path(f).read_text())
    except (OSError, ValueError):
        return None


def card_path(export_path, run_id: str) -> Path:
    """RUN.md beside the exported file (named after the run: its ONNX and TorchScript files share it)."""
    return Path(export_path).parent / f"{run_id}.md"


def write_card(run, result: dict) -> Path:
    """Write the model card of `run` beside its export (`result`: export_run's answer)."""
    path = card_path(result["path"], run.id)
    atomic_write(path, model_card(run, result))
    return path


def model_card(run, result: dict) -> str:
    cfg = run.read_config()
    evals = run.read_evals()
    ho = evals.get("holdout") or {}
    inp = result["input"]
    lines = [f"# Model card: {run.id}", "",
             f"{cfg.get('model')} (initial weights: {cfg.get('weights')}; recipe {cfg.get('recipe')}), exported as "
             f"{result['format']}: `{Path(result['path']).name}` (sha256 `{result['sha256']}`), checked against "
             f"PyTorch on {result['checked_on']} (largest logit difference {result['max_abs_diff']:.1e}).", "",
             "## Trained on", ""]
    names = [str(n) for n in result.get("names") or ho.get("names") or ()]
    lines += [f"- data set: `{cfg.get('data')}`", f"- {len(names)} classes: " + ", ".join(names[:20])
              + (" …" if len(names) > 20 else ""),
              "- images: " + ", ".join(f"{(evals.get(s) or {}).get('n', '?')} {s}" for s in ("train", "val", "holdout")),
              f"- {cfg.get('epochs')} epochs at {cfg.get('image_size')} px, batch size {cfg.get('batch_size')}, "
              f"lr {cfg.get('lr')} ({cfg.get('optimizer')}), seed {cfg.get('seed')}", ""]
    lines += _figures(run, cfg, ho) + _weakest(ho)
    lines += ["## Intended input", "",
              f"RGB photos, {inp['about']}; values in [{inp['range'][0]}, {inp['range'][1]}], layout {inp['layout']}, "
              f"{inp['dtype']}; normalisation: {inp['normalisation']}. Output: {result['classes']} logits (no softmax), "
              "in the order of the class list above. Photos of other landmarks than these classes get one of them "
              "anyway: the model has no 'none of these' answer.", ""]
    prov = provenance(run)
    lines += ["## The record", "", "Provenance:" if prov is not None else
              "No provenance record (the run was made before runs kept one); its config:", "",
              "```json", json.dumps(prov if prov is not None else cfg, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def _figures(run, cfg: dict, ho: dict) -> list[str]:
    lines = ["## Holdout figures", ""]
    if not ho:
        return lines + ["The run has no holdout evaluation.", ""]
    group = _group_holdouts(run, group_of(cfg))
    lines += ["| metric | this run | seed group: mean ± sd (n) |" if group else "| metric | this run |",
              "| --- | --- | --- |" if group else "| --- | --- |"]
    for key, label in METRICS:
        row = f"| {label} | {_num(ho.get(key))} |"
        if group:
            v = np.array([g[key] for g in group if g.get(key) is not None], dtype=float)
            row += f" {v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else float('nan'):.4f} ({len(v)}) |" if len(v) else " — |"
        lines.append(row)
    share = f"{cfg['holdout']:.0%}" if isinstance(cfg.get("holdout"), (int, float)) else "a share"
    return lines + ["", f"On {ho.get('n', '?')} holdout images ({share} of the chosen classes' images, set aside "
                    "before training)."
                    + (f" Seed group {group_of(cfg)}: the runs trained with other seeds on the same split." if group else ""),
                    ""]


def _group_holdouts(run, group: str | None) -> list[dict]:
    """The holdout evaluations of every run of the seed group (this one included), through the run's store."""
    store = getattr(run, "store", None)
    if not group or store is None:
        return []
    out = []
    for row in store.list_rows():
        other = store.run(row["run_id"])
        if group_of(other.read_config()) == group:
            ev = other.read_evals().get("holdout")
            if ev:
                out.append(ev)
    return out


def _weakest(ho: dict) -> list[str]:
    acc = [(v, i) for i, v in enumerate(ho.get("per_class") or ()) if v is not None]
    if not acc:
        return []
    names, support = ho.get("names") or ho.get("labels") or [], ho.get("support") or []
    lines = [f"## Weak spots: the {min(WEAKEST, len(acc))} weakest classes on the holdout split", "",
             "| class | holdout accuracy | holdout images |", "| --- | --- | --- |"]
    for v, i in sorted(acc)[:WEAKEST]:
        lines.append(f"| {names[i] if i < len(names) else i} | {v:.3f} | {support[i] if i < len(support) else '?'} |")
    return lines + [""]


def _num(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"
