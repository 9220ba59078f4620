"""Benchmark: the few-shot row of issue 23, what a user with a small set has: 10 training photos per
class, tested on all the other photos of the class.

    python bench/fewshot.py [DATA] [--shots 10] [--distractor-classes 4] [--model efficientnet_lite0]
        [--image-size 64] [--epochs 3] [--batch-size 32] [--lr 0.001] [--seed 0]
        [--full-json PATH] [--json PATH]

The classes are those of bench/recognition.py's all-photos rows (the K least frequent classes of DATA
held back, here only left out). Per class `--shots` photos (seeded) are linked into a temporary
folder; `train --holdout 0 --val 0.2` on it keeps 2 of the 10 for validation (early stopping and the
checkpoint's choice) and trains on 8; every other photo of the class is a test photo. Three methods:

- softmax: the finetune recipe's softmax head, the network's own answer on the test photos;
- pretrained kNN: no training, the ImageNet backbone's pooled features (core.serve.features, via
  core.serve.embeddings.forward), the test photo's 10 nearest of the few-shot photos vote
  (core.serve.embeddings.knn_evaluation, the product's vote);
- ArcFace + kNN: the `--head arcface` run's 512-d embeddings, the same vote.

kNN references are all `--shots` photos of a class (a vote needs no validation photos). Each
accuracy is set against the same method's accuracy with all photos: softmax and ArcFace + kNN from
bench/recognition.py's rows (`--full-json`, its --json output; default: the 3-epoch figures of
docs/BENCHMARKS.md, 3 or 6 epochs), pretrained kNN measured here on the all-photos rows' own split (seed, 20%
holdout, 20% val: train photos vote, holdout photos are the queries).

The figures in docs/BENCHMARKS.md:
    OMP_NUM_THREADS=1 python bench/fewshot.py ../shared/datasets/monuments44
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recognition import ROOT, cli, held_out_classes  # noqa: E402 - bench/recognition.py's helpers

sys.path.insert(0, str(ROOT))

# All-photos accuracies of docs/BENCHMARKS.md's recognition table (monuments44, 40 classes), by epochs.
FULL_DEFAULT = {3: {"softmax": 0.927, "arcface_knn": 0.890}, 6: {"softmax": 0.951, "arcface_knn": 0.927}}


def few_shot_split(data: Path, classes: int, shots: int, seed: int) -> pd.DataFrame:
    """The photos of the `classes` most frequent classes (train's own choice), `shots` per class
    (seeded) marked "train", the rest "holdout"; `target` = the class's index in sorted label order."""
    from core.data.readers import load_index
    from core.data.splits import choose
    s = choose(load_index(data).samples, classes, 0, seed).reset_index(drop=True)
    s["label"] = s["label"].astype(str)
    rank = s.sample(frac=1, random_state=seed).groupby("label").cumcount()
    s["split"] = np.where(rank.reindex(s.index) < shots, "train", "holdout")
    s["target"] = pd.Index(sorted(s["label"].unique())).get_indexer(s["label"])
    return s


def link_folder(rows: pd.DataFrame, out: Path) -> None:
    """Symbolic links to the few-shot photos, one folder per class (the photos stay where they are)."""
    for path, label in zip(rows["path"], rows["label"]):
        (out / label).mkdir(parents=True, exist_ok=True)
        os.symlink(Path(path).resolve(), out / label / Path(path).name)


def vectors(model, paths: list, size: int) -> np.ndarray:
    """Unit-length head inputs and the network's answer of every photo (all must be readable)."""
    from core.serve.embeddings import forward
    vecs, pred, _, ok = forward(model, paths, size)
    if not ok.all():
        raise SystemExit(f"{(~ok).sum()} photos could not be read")
    return vecs, pred


def knn_acc(frame: pd.DataFrame, vecs: np.ndarray, n_classes: int) -> float:
    """The product's kNN vote (10 nearest "train" rows) over the "holdout" rows: its accuracy."""
    from core.serve.embeddings import Embeddings, knn_evaluation
    m, _ = knn_evaluation(Embeddings(frame.reset_index(drop=True), vecs), "holdout", n_classes)
    return float(m["acc"])


def train(fewshot: Path, a, head: str, n_classes: int) -> str:
    r = cli("train", "--data", fewshot, "--classes", n_classes, "--model", a.model, "--weights", "imagenet", "--epochs", a.epochs,
            "--batch-size", a.batch_size, "--lr", a.lr, "--image-size", a.image_size, "--holdout", 0,
            "--val", 0.2, "--seed", a.seed, "--head", head)
    return r["run_id"]


def run_model(run_id: str):
    from core.runs.store import RunStore
    from core.serve.predictor import load_predictor
    return load_predictor(RunStore().run(run_id))


def pretrained_rows(data: Path, split: pd.DataFrame, a, n_classes: int) -> dict:
    """kNN on the ImageNet backbone's features: few-shot, and on the all-photos rows' own split."""
    from core.data.splits import split as draw
    from core.train.models import build_model
    t0 = time.time()
    model = build_model(a.model, n_classes, "imagenet")
    vecs, _ = vectors(model, split["path"].tolist(), a.image_size)
    few = knn_acc(split, vecs, n_classes)
    full = draw(split[["path", "label", "target"]], 0.2, 0.2, a.seed)     # the recognition runs' split
    full = full[full["split"] != "val"]                                   # they vote with train only
    full_acc = knn_acc(full, vecs[full.index.to_numpy()], n_classes)
    return {"acc": few, "full_acc": full_acc, "seconds": time.time() - t0}


def trained_row(fewshot: Path, split: pd.DataFrame, a, head: str, n_classes: int, full: float) -> dict:
    """A run trained on the few-shot folder; softmax: its own answer, arcface: kNN over its embeddings."""
    t0 = time.time()
    run_id = train(fewshot, a, head, n_classes)
    seconds = time.time() - t0
    pred = run_model(run_id)
    if list(pred.labels) != sorted(split["label"].unique()):     # targets as few_shot_split numbers them
        raise SystemExit(f"run {run_id} trained on {len(pred.labels)} classes, not the {n_classes} of the split")
    test = split["split"].to_numpy() == "holdout"
    if head == "softmax":
        _, answer = vectors(pred.model, split["path"][test].tolist(), a.image_size)
        labels = np.asarray(pred.labels)[answer]
        acc = float(np.mean(labels == split["label"][test].to_numpy()))
    else:
        vecs, _ = vectors(pred.model, split["path"].tolist(), a.image_size)
        acc = knn_acc(split, vecs, n_classes)
    return {"run_id": run_id, "acc": acc, "full_acc": full, "seconds": seconds}


def table(rows: dict, shots: int, n_test: int) -> str:
    lines = [f"| method | acc, {shots} photos/class | acc, all photos | ratio | s (train; pretrained: embed all) |",
             "|---|---|---|---|---|"]
    names = {"softmax": "fine-tuned softmax", "pretrained_knn": "kNN on pretrained embeddings",
             "arcface_knn": "ArcFace + kNN"}
    for key, r in rows.items():
        lines.append(f"| {names[key]} | {r['acc']:.3f} | {r['full_acc']:.3f} | {r['acc'] / r['full_acc']:.2f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines) + f"\n({n_test} test photos)"


def full_figures(path: str | None, epochs: int) -> dict:
    if not path:
        if epochs not in FULL_DEFAULT:
            raise SystemExit(f"No all-photos figures for {epochs} epochs; give bench/recognition.py's --json as --full-json")
        return dict(FULL_DEFAULT[epochs])
    res = json.loads(Path(path).read_text())["results"]
    return {"softmax": res["softmax"]["scores"]["plain"]["acc"], "arcface_knn": res["arcface"]["scores"]["knn"]["acc"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--distractor-classes", type=int, default=4, help="classes left out, as bench/recognition.py")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-json", default=None, metavar="PATH", help="bench/recognition.py --json output")
    p.add_argument("--json", default=None, metavar="PATH")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fewshot-"))
    os.environ["LANDMARKS_HOME"] = str(tmp / "home")
    data = Path(a.data).expanduser().resolve()
    n_classes, _ = held_out_classes(data, a.distractor_classes)
    split = few_shot_split(data, n_classes, a.shots, a.seed)
    fewshot = tmp / "fewshot"
    link_folder(split[split["split"] == "train"], fewshot)
    n_test = int((split["split"] == "holdout").sum())
    print(f"{data}: {n_classes} classes, {a.shots} photos each in {fewshot}, {n_test} test photos", file=sys.stderr)
    full = full_figures(a.full_json, a.epochs)
    rows = {"softmax": trained_row(fewshot, split, a, "softmax", n_classes, full["softmax"]),
            "pretrained_knn": pretrained_rows(data, split, a, n_classes),
            "arcface_knn": trained_row(fewshot, split, a, "arcface", n_classes, full["arcface_knn"])}
    print(table(rows, a.shots, n_test))
    if a.json:
        Path(a.json).write_text(json.dumps({"data": str(data), "classes": n_classes, "test": n_test,
                                            "args": vars(a), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
