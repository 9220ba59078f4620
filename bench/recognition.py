"""Benchmark: softmax against the ArcFace head (issue 23) as the recognition challenge scores them:
accuracy on known landmarks, GAP, and GAP with distractors (photos of no training landmark).

    python bench/recognition.py [DATA] [--distractor-classes K] [--heads softmax,arcface]
        [--model efficientnet_lite0] [--weights imagenet] [--image-size 64] [--epochs 3]
        [--batch-size 32] [--lr 0.001] [--holdout 0.2] [--seed 0] [--json PATH]

DATA is any folder the workbench reads; without it a demo set is generated (core.data.demo,
12 classes). Distractors are a held-back set of real classes: the K least frequent classes of
DATA never train (every run trains on the N-K most frequent, `--classes N-K`), and their photos,
linked (not copied) into a temporary folder, are the distractor folder. Every head trains with
the same settings and budget through the CLI's own `train`, then is scored by `eval --distractors`
(half of the distractors join the 20% holdout as "no landmark" queries), and again after
`eval --calibrate` (temperature and threshold fitted on validation plus the other half). When
core.serve.embeddings and `eval --classifier knn` exist, each run is also scored by nearest
neighbours over its training photos' embeddings, with the same distractors, and again with the
distractor penalty (`--distractor-penalty`: similarity to the tune half subtracted). Everything lives in a temporary LANDMARKS_HOME.

The figures in docs/BENCHMARKS.md:
    python bench/recognition.py ../shared/datasets/monuments44 --distractor-classes 4
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = ("acc", "gap", "gap_with_distractors")


def cli(*args) -> dict:
    """core.cli.main in this process with --json: the JSON object it prints last."""
    from core.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args] + ["--json"])
    lines = out.getvalue().strip().splitlines()
    if code != 0 or not lines:
        raise SystemExit(f"{' '.join(map(str, args[:2]))} failed (exit {code})")
    return json.loads(lines[-1])


def held_out_classes(data: Path, k: int) -> tuple[int, list[str]]:
    """(classes to train on, the K labels held back as distractors): the K least frequent, chosen
    with the same rule `train --classes` uses, so no held-back class ever trains."""
    from core.data.readers import load_index
    from core.data.splits import top_classes
    counts = load_index(data).counts()
    if not 0 < k <= len(counts) - 2:
        raise SystemExit(f"--distractor-classes must be between 1 and {len(counts) - 2} for {data}")
    trained = set(top_classes(counts, len(counts) - k))
    return len(counts) - k, [str(l) for l in counts.index if str(l) not in trained]


def distractor_folder(data: Path, labels: list[str], out: Path) -> int:
    """Symbolic links to every photo of the held-back classes (the photos stay where they are)."""
    from core.data.readers import load_index
    s = load_index(data).samples
    s = s[s["label"].astype(str).isin(labels)]
    out.mkdir(parents=True, exist_ok=True)
    for i, (path, label) in enumerate(zip(s["path"], s["label"].astype(str))):
        os.symlink(Path(path).resolve(), out / f"{i:05d}_{label.replace('/', '_')}{Path(path).suffix}")
    return len(s)


def knn_available() -> bool:
    try:
        import core.serve.embeddings  # noqa: F401 - the "embed" helper's kNN classifier
    except ImportError:
        return False
    return True


def score(run_id: str, distractors: Path, knn: bool) -> dict:
    rows = {}
    r = cli("eval", run_id, "--distractors", distractors)
    rows["plain"] = {k: r.get(k) for k in COLUMNS} | {"distractors": r.get("distractors")}
    rows.update(knn_rows(run_id, knn, distractors))
    r = cli("eval", run_id, "--distractors", distractors, "--calibrate")
    rows["calibrated"] = {k: r.get(k) for k in COLUMNS} | {"ece_before": r.get("ece_before"),
                                                           "ece_after": r.get("ece_after")}
    return rows


def knn_rows(run_id: str, knn: bool, distractors: Path) -> dict:
    """kNN over the run's training embeddings (`eval --classifier knn --distractors`), and again with
    the distractor penalty (`--distractor-penalty`, weight 1: each query's similarity minus its
    similarity to the nearest photo of the distractors' tune half). Similarities, not probabilities:
    a stored calibration does not change them."""
    if not knn:
        return {}
    try:
        cli("embed", run_id)
        r = cli("eval", run_id, "--classifier", "knn", "--distractors", distractors)
        p = cli("eval", run_id, "--classifier", "knn", "--distractors", distractors, "--distractor-penalty")
    except SystemExit as e:              # embeddings there, `embed` / `eval --classifier` not (yet)
        print(f"kNN row left out: {e}", file=sys.stderr)
        return {}
    return {"knn": {k: r.get(k) for k in COLUMNS} | {"distractors": r.get("distractors")},
            "knn_penalty": {k: p.get(k) for k in COLUMNS} | {"distractors": p.get("distractors"),
                                                              "distractors_reference": p.get("distractors_reference")}}


def table(results: dict) -> str:
    lines = ["| head | classifier | acc (known) | GAP | GAP with distractors | ECE | train s |",
             "|---|---|---|---|---|---|---|"]
    for head, res in results.items():
        for kind, row in res["scores"].items():
            ece = {"plain": res["scores"]["calibrated"].get("ece_before"),
                   "calibrated": res["scores"]["calibrated"].get("ece_after")}.get(kind)
            cells = " | ".join("—" if v is None else f"{v:.3f}" for v in [*(row.get(k) for k in COLUMNS), ece])
            label = {"plain": "softmax over its logits", "calibrated": "+ temperature (eval --calibrate)",
                     "knn": "kNN over training embeddings",
                     "knn_penalty": "kNN + distractor penalty (w = 1)"}[kind]
            lines.append(f"| {head} | {label} | {cells} | {res['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default=None)
    p.add_argument("--distractor-classes", type=int, default=None, help="default: 4 (2 on the demo set)")
    p.add_argument("--heads", default="softmax,arcface")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--rescore", default=None, metavar="JSON",
                   help="score the runs of an earlier --json again (e.g. once kNN exists) instead of training")
    a = p.parse_args()
    if a.rescore:
        return rescore(Path(a.rescore), a.json)
    tmp = Path(tempfile.mkdtemp(prefix="bench-recognition-"))
    os.environ["LANDMARKS_HOME"] = str(tmp / "home")
    if a.data is None:
        from core.data.demo import generate
        data = tmp / "demo"
        generate(data, classes=12, images=600, size=64, seed=0)
    else:
        data = Path(a.data).expanduser().resolve()
    n_train, held = held_out_classes(data, a.distractor_classes or (4 if a.data else 2))
    dist = tmp / "distractors"
    n_dist = distractor_folder(data, held, dist)
    print(f"{data}: training on {n_train} classes; {len(held)} held back as {n_dist} distractor photos "
          f"({', '.join(held)})", file=sys.stderr)
    knn, results = knn_available(), {}
    for head in a.heads.split(","):
        t0 = time.time()
        r = cli("train", "--data", data, "--model", a.model, "--weights", a.weights, "--classes", n_train,
                "--epochs", a.epochs, "--batch-size", a.batch_size, "--lr", a.lr, "--image-size", a.image_size,
                "--holdout", a.holdout, "--seed", a.seed, "--head", head)
        results[head] = {"run_id": r["run_id"], "seconds": time.time() - t0, "scores": score(r["run_id"], dist, knn)}
        print(json.dumps({head: results[head]}), file=sys.stderr, flush=True)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps({"data": str(data), "held_out": held, "distractors": n_dist,
                                            "home": str(tmp / "home"), "distractor_folder": str(dist),
                                            "args": vars(a), "results": results}, indent=1))


def rescore(path: Path, out: str | None) -> None:
    saved = json.loads(path.read_text())
    os.environ["LANDMARKS_HOME"] = saved["home"]
    knn = knn_available()
    for res in saved["results"].values():     # only the kNN row: a stored calibration would change the others
        res["scores"].update(knn_rows(res["run_id"], knn, Path(saved["distractor_folder"])))
    print(table(saved["results"]))
    if out:
        Path(out).write_text(json.dumps(saved, indent=1))


if __name__ == "__main__":
    main()
