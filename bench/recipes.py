"""Benchmark: the training recipes side by side on one data set (core.train.recipes).

    python bench/recipes.py DATA [--model efficientnet_lite0] [--weights imagenet] [--image-size 160]
        [--epochs 3] [--seeds 0,1,2] [--recipes finetune,poster] [--frozen] [--frozen-epochs 2]
        [--classes 0] [--holdout 0.2] [--batch-size 32] [--lr 0.001] [--json [PATH]]

DATA is any folder the workbench reads (class per folder, GLDv2, ...). For every seed each recipe
trains on the same split (the split is a function of the seed), in turn, in this process, through
the engine's own `fit`; with --frozen each recipe also trains with frozen features for
--frozen-epochs. Printed per variant: holdout accuracy and GAP (mean ± sd over the seeds), holdout
accuracy with test-time flip averaging (the same trained model evaluated again, image and mirror
image averaged), seconds per training epoch and the whole run's wall time. Nothing is kept: each
run lives in a temporary folder.

Example (the figures in docs/BENCHMARKS.md):
    python bench/recipes.py ../shared/datasets/monuments44 --image-size 64 --frozen
    python -m core demo-data /tmp/demo
    python bench/recipes.py /tmp/demo --model resnet18 --weights none --classes 12 --image-size 64
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Sink:
    """Keeps the epoch rows; prints one line per epoch on stderr."""

    def __init__(self, label: str):
        self.label, self.epochs = label, []

    def emit(self, kind: str, row: dict) -> None:
        if kind == "epoch":
            self.epochs.append(row)
            print(f"  {self.label} epoch {row['epoch']}: train acc {row['train_acc']:.3f}, val acc "
                  f"{row['val_acc']:.3f}, {row['seconds']:.1f} s", file=sys.stderr, flush=True)

    def should_stop(self) -> bool:
        return False


def run_one(a, recipe: str, seed: int, freeze: bool) -> dict:
    """Train one configuration in a temporary run folder; its holdout figures and timings."""
    import torch
    from core.runs.store import RunFolder
    from core.train import engine
    from core.train.config import TrainConfig
    from core.train.models import build_model
    cfg = TrainConfig(data=str(Path(a.data).expanduser().resolve()), model=a.model, weights=a.weights,
                      classes=a.classes, epochs=a.frozen_epochs if freeze else a.epochs, batch_size=a.batch_size,
                      lr=a.lr, image_size=a.image_size, holdout=a.holdout, val=a.val, seed=seed, recipe=recipe,
                      freeze=freeze, device=a.device).validate()
    label = f"{recipe}{' frozen' if freeze else ''} seed {seed}"
    with tempfile.TemporaryDirectory() as d:
        folder, sink = RunFolder(d), _Sink(label)
        t0 = time.perf_counter()
        out = engine.fit(cfg, folder, sink)
        wall = time.perf_counter() - t0
        # the same trained model, evaluated again with test-time flip averaging
        device = engine.select_device(cfg.device)
        data = engine.load_data(cfg, folder)
        model = build_model(cfg.model, len(data.labels), "none").to(device)
        if engine.channels_last(cfg, device):
            model = model.to(memory_format=torch.channels_last)
        engine.load_checkpoint(folder.checkpoint, model)
        holdout = engine._loader(cfg, data, "holdout", False, device)
        tta, _, _ = engine.evaluate(model, holdout, cfg, device, len(data.labels), tta=True)
        n = int((data.manifest["split"] == "holdout").sum())
    secs = [e["seconds"] for e in sink.epochs]
    row = {"recipe": recipe, "frozen": freeze, "seed": seed, "epochs": cfg.epochs, "holdout_n": n,
           "holdout_acc": out["holdout_acc"], "holdout_gap": out["holdout_gap"], "holdout_acc_tta": tta["acc"],
           "val_acc": out["val_acc"], "train_acc": out["train_acc"], "epoch_s": secs,
           "s_per_epoch": statistics.mean(secs) if secs else None, "wall_s": wall}
    print(f"{label}: holdout {row['holdout_acc']:.3f} (flip-averaged {row['holdout_acc_tta']:.3f}), "
          f"GAP {row['holdout_gap']:.3f}, {row['s_per_epoch']:.1f} s/epoch", file=sys.stderr, flush=True)
    return row


def summarize(rows: list[dict]) -> list[dict]:
    """One row per (recipe, frozen): mean and sd over the seeds."""
    def ms(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return None, None
        return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0
    out = []
    for key in dict.fromkeys((r["recipe"], r["frozen"]) for r in rows):
        rs = [r for r in rows if (r["recipe"], r["frozen"]) == key]
        s = {"recipe": key[0], "frozen": key[1], "epochs": rs[0]["epochs"], "seeds": [r["seed"] for r in rs],
             "holdout_n": rs[0]["holdout_n"]}
        for k in ("holdout_acc", "holdout_gap", "holdout_acc_tta", "s_per_epoch", "wall_s"):
            s[k], s[k + "_sd"] = ms([r[k] for r in rs])
        out.append(s)
    return out


def table(summary: list[dict]) -> str:
    def f(m, sd, digits=3):
        return "—" if m is None else f"{m:.{digits}f} ± {sd:.{digits}f}"
    lines = ["| recipe | epochs | holdout acc | holdout GAP | holdout acc, flip-averaged | s / epoch | run (s) |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        name = s["recipe"] + (" (frozen features)" if s["frozen"] else "")
        lines.append(f"| {name} | {s['epochs']} | {f(s['holdout_acc'], s['holdout_acc_sd'])} | "
                     f"{f(s['holdout_gap'], s['holdout_gap_sd'])} | "
                     f"{f(s['holdout_acc_tta'], s['holdout_acc_tta_sd'])} | "
                     f"{f(s['s_per_epoch'], s['s_per_epoch_sd'], 1)} | {f(s['wall_s'], s['wall_s_sd'], 0)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet", help="imagenet | none | PATH")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", default="0,1,2", help="comma list; each seed is its own split and initialisation")
    ap.add_argument("--recipes", default="finetune,poster")
    ap.add_argument("--frozen", action="store_true", help="also train each recipe with frozen features")
    ap.add_argument("--frozen-epochs", type=int, default=2)
    ap.add_argument("--classes", type=int, default=0, help="the N most frequent classes; 0 = all")
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--val", type=float, default=0.2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                    help="write the results as JSON to PATH (or as the last stdout line without PATH)")
    a = ap.parse_args(argv)
    from core.errors import UserError
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    variants = [(r, False) for r in recipes] + ([(r, True) for r in recipes] if a.frozen else [])
    rows = []
    try:
        for seed in seeds:                       # interleaved: machine noise hits every recipe alike
            for recipe, frozen in variants:
                rows.append(run_one(a, recipe, seed, frozen))
    except UserError as e:
        print(e, file=sys.stderr)
        return 2
    summary = summarize(rows)
    print(f"{a.data}: {a.model} ({a.weights}), {a.image_size} px, batch {a.batch_size}, lr {a.lr:g}, holdout "
          f"{a.holdout:g} (n = {rows[0]['holdout_n']}), seeds {','.join(map(str, seeds))}")
    print(table(summary))
    result = {"data": a.data, "model": a.model, "weights": a.weights, "image_size": a.image_size,
              "batch_size": a.batch_size, "lr": a.lr, "holdout": a.holdout, "seeds": seeds,
              "summary": summary, "runs": rows}
    if a.json == "-":
        print(json.dumps(result))
    elif a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
