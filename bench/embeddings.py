"""The embedding store at scale (issues 22 and 23): everything `compute` does after the network
(the 2-D map, writing the pair), loading it back, building the faiss index, and the neighbour
query the issue times ("a neighbour query answers in <= 50 ms on the CPU"), on N synthetic unit
vectors of D dimensions in C clusters (a stand-in for a run's photos: no network, no images).

    python bench/embeddings.py [--n 20000] [--dim 512] [--classes 200] [--queries 200] [--map auto|pca|tsne]

Prints one line per stage with its wall time; the query line gives the median and 95th percentile
of single-photo queries (k=8 nearest training photos, as the Evaluate and Classify pages ask) and
of the kNN classifier's vote (k=10).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.serve import embeddings  # noqa: E402


def synthetic(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Unit vectors around C random centres, and their rows (80% train, 20% holdout)."""
    rng = np.random.default_rng(seed)
    target = rng.integers(classes, size=n)
    v = rng.standard_normal((classes, dim))[target] + 0.8 * rng.standard_normal((n, dim))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    split = np.where(rng.random(n) < 0.8, "train", "holdout")
    rows = pd.DataFrame({"path": [f"img/{i:06d}.jpg" for i in range(n)], "split": split, "target": target,
                         "label": target.astype(str), "name": [f"class {t}" for t in target],
                         "pred": target, "conf": np.float32(0.9), "correct": True})
    return v, rows


def timed(label: str, fn):
    t = time.perf_counter()
    out = fn()
    print(f"{label:<34} {time.perf_counter() - t:8.3f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--map", choices=["auto", "pca", "tsne"], default="auto",
                    help="auto: as compute() chooses (t-SNE up to embeddings.TSNE_MAX points)")
    a = ap.parse_args()
    if a.map == "pca":
        embeddings.TSNE_MAX = 0
    elif a.map == "tsne":
        embeddings.TSNE_MAX = max(a.n, embeddings.TSNE_MAX)
    print(f"{a.n} vectors of {a.dim} dimensions in {a.classes} clusters")
    vectors, rows = synthetic(a.n, a.dim, a.classes)
    xy, how = timed(f"map ({'t-SNE' if a.n <= embeddings.TSNE_MAX else 'PCA'})", lambda: embeddings.layout(vectors))
    rows["x"], rows["y"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        run = SimpleNamespace(id="bench", embeddings_file=Path(d) / "embeddings.npy",
                              embedding_rows_file=Path(d) / "embeddings.parquet", checkpoint=Path(d) / "none.pt")
        meta = {"run_id": "bench", "n": a.n, "dim": a.dim, "map": how, "checkpoint_mtime": 0.0, "missing": 0}
        timed("write vectors + rows", lambda: embeddings.write(run, vectors, rows, meta))
        e = timed("load (read, hash check, float32)", lambda: embeddings.load(run))
    timed("faiss index of the train rows", lambda: e._index(("train",)))
    rng = np.random.default_rng(1)
    picks = rng.choice(np.flatnonzero(rows["split"] == "holdout"), a.queries, replace=False)
    for label, fn in (("neighbours (k=8)", lambda i: e.neighbours([i])),
                      ("kNN vote (k=10)", lambda i: e.classify([i])),
                      ("search alone (k=8)", lambda i: e.search([i], 8))):
        ms = []
        for i in picks:
            t = time.perf_counter()
            fn(int(i))
            ms.append((time.perf_counter() - t) * 1000)
        print(f"{label + ', one photo':<34} median {np.median(ms):6.2f} ms, p95 {np.percentile(ms, 95):6.2f} ms "
              f"({a.queries} queries)")
    m, _ = embeddings.knn_evaluation(e, "holdout", a.classes)
    print(f"kNN holdout accuracy (planted clusters): {m['acc']:.3f} over {m['n']} photos")
    timed("kNN evaluation of the holdout", lambda: embeddings.knn_evaluation(e, "holdout", a.classes))


if __name__ == "__main__":
    main()
