"""Inspect a run's data set: label issues, near-duplicates and leaks (issue 22).

`inspect(run, folds=5)` looks at EVERY image of the run's split (train, val and holdout) and returns

* label issues: each image's score (1 − Cleanlab's label quality: how likely its given label is
  wrong, in [0, 1]), whether Cleanlab's `find_label_issues` flags it, and the suggested label;
  every image ranked, score descending;
* near-duplicates: pairs whose features have cosine similarity >= `THRESHOLD`, with their splits;
  a pair with two labels is a label issue too (its rows carry `conflict`: the other image);
* leaks: holdout photos with a near-copy in train/val, and the run's holdout accuracy
  (predictions_holdout.parquet) with and without them.

Out-of-sample probabilities. Cleanlab needs, for every image, class probabilities from a model
that did not see that image's label. The run's own fine-tuned weights have seen the training
labels (they would vouch for a wrong label they memorised), and K-fold cross-validation of the
network would cost K trainings. Instead the images are embedded ONCE with the run's architecture
carrying its ImageNet weights (labels never seen; core.serve.features, the head's input), and a
linear probe (scikit-learn LogisticRegression on standardised features) is fitted out of fold
(StratifiedKFold, K = `folds`): one forward pass plus K small convex fits, seconds for thousands
of images. When the architecture has no ImageNet weights here (offline, or small_cnn, which has
none) the stand-in that training falls back to (`STAND_IN`, whose weights ship with pip) embeds
instead, and `features` in the result says so. Classes with fewer images than folds: K drops to
the smallest class (at least 2); an image whose class has a single image has no out-of-fold view
of its class and is counted in `single_image_classes`.

Near-duplicates are found on a tiny-image descriptor (Torralba et al. 2008, "80 million tiny
images"): the photo as the model sees it (core.serve.features.image_tensor) averaged down to
`TINY` x `TINY` RGB, each channel's mean removed, unit length. bench/label_noise.py measured why
not the ImageNet head features: on monuments44 at 64 px, planted copies (JPEG q=80, resized ±5 %)
fall as low as cosine 0.77 there (27 % reach 0.95) while distinct neighbours reach 0.97; on the
tiny descriptor every planted copy is >= 0.994, and the pairs just above `THRESHOLD` (0.95) are
still the same photo slightly shifted or re-cropped (docs/BENCHMARKS.md). A faiss inner-product
index (cosine) is searched for each image's `NEIGHBOURS` nearest; pairs at or above the threshold
are kept.

Takes a run object (duck-typed: `.id`, `.split_file`, `.classes_file`, `.checkpoint`,
`.config()`, `.class_names()`, `.predictions(split)`) and never imports core.runs.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# numpy, pandas and the libraries are imported inside the functions: the CLI reads FOLDS and TOP
# when it builds its parser, and `python -m core --help` imports no heavy library (tests/test_layers.py)

FOLDS = 5                  # out-of-fold splits of the linear probe
TOP = 100                  # rows of each list on the command line's JSON line
THRESHOLD = 0.95           # tiny-descriptor cosine from which two photos count as near-duplicates
TINY = 16                  # px, side of the tiny-image descriptor
NEIGHBOURS = 10            # nearest neighbours searched per image for duplicates
PROBE_C = 1.0              # inverse L2 strength of the linear probe (standardised features)
SEED = 0                   # fold assignment and the 'none' weights' initialisation
STAND_IN = "efficientnet_lite0"   # ImageNet weights that ship with pip (core.train.config.DEFAULT_MODEL)
STAGES = ("reading the split", "embedding the photos", "fitting the probe out of fold",
          "ranking label issues", "finding near-duplicates")


# ------------------------------------------------------------------ inputs

def split_frame(run) -> tuple[pd.DataFrame, list[str], dict]:
    """The run's split (path, label, target, split) and its class labels and names."""
    import pandas as pd
    if not run.checkpoint.exists():
        raise UserError(f"Run {run.id} has no checkpoint yet, so it has no finished split to inspect; "
                        "wait for its first epoch to finish.")
    try:
        m = pd.read_csv(run.split_file, dtype={"path": str, "label": str, "split": str})
        labels = [str(x) for x in pd.read_json(run.classes_file)["label"]]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"Run {run.id} has no readable split.csv or classes.json ({type(e).__name__}); "
                        "its folder is damaged.") from None
    if len(labels) < 2 or m["label"].nunique() < 2:
        raise UserError(f"Run {run.id} has {min(len(labels), m['label'].nunique())} class; label issues and "
                        "duplicates need a run of at least 2 classes.")
    return m.reset_index(drop=True), labels, run.class_names()


def feature_model(name: str, n: int, weights: str = "imagenet"):
    """(model, note): the architecture `name` with its ImageNet weights (never the run's own), or
    the stand-in where they cannot be had offline. `weights="none"`: seeded random init (tests)."""
    import torch

    from core.train.models import REGISTRY, build_model, imagenet_available
    if weights == "none":
        torch.manual_seed(SEED)
        return build_model(name, n, "none"), f"{name}, random initialisation (seed {SEED})"
    ok, why = imagenet_available(name)
    if ok:
        return build_model(name, n, "imagenet"), f"{name} ImageNet features"
    if REGISTRY[STAND_IN].imagenet is None or not imagenet_available(STAND_IN)[0]:
        raise UserError(f"No ImageNet weights to embed the photos with: {why}")
    return (build_model(STAND_IN, n, "imagenet"),
            f"{STAND_IN} ImageNet features (stand-in: {why.rstrip('.')})")


def embed_split(run, m: pd.DataFrame, weights: str = "imagenet", progress=None) -> tuple[np.ndarray, np.ndarray, str]:
    """(unit-length features of the readable images, readable mask over `m`, note on the features)."""
    from core.serve.features import embed_images
    cfg = run.config()
    model, note = feature_model(cfg.model, max(2, m["target"].nunique()), weights)
    feats, ok = embed_images(model, m["path"].tolist(), int(cfg.image_size), progress=progress)
    return feats, ok, note


def tiny_descriptors(paths, ok) -> np.ndarray:
    """(n_readable, 3 * TINY * TINY) unit-length tiny images of the readable `paths` (mask `ok`)."""
    import torch
    import torch.nn.functional as F

    from core.serve.features import image_tensor
    out = []
    for p, good in zip(paths, ok):
        if good:
            try:
                t = F.adaptive_avg_pool2d(image_tensor(p, 4 * TINY), TINY)
            except (UserError, OSError, ValueError):      # vanished between the two reads: a blank row
                t = torch.zeros(1, 3, TINY, TINY)
            out.append(t - t.mean(dim=(2, 3), keepdim=True))
    if not out:
        return torch.zeros(0, 3 * TINY * TINY).numpy()
    return F.normalize(torch.cat(out).flatten(1), dim=1).numpy()


# ------------------------------------------------------------------ label issues

def out_of_fold_probs(feats: np.ndarray, y: np.ndarray, folds: int = FOLDS, seed: int = SEED) -> np.ndarray:
    """(n, C) probabilities of each image from a linear probe that never saw it. `y` in 0..C-1,
    every class present. K = min(folds, smallest class), at least 2."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    k = max(2, min(int(folds), int(np.bincount(y).min())))
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=300))
    with warnings.catch_warnings():        # a class smaller than K; lbfgs stopping at max_iter
        warnings.simplefilter("ignore")
        return cross_val_predict(probe, feats, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                                 method="predict_proba")


def rank_labels(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score = 1 − label quality, Cleanlab's issue flag, suggested class) of each image."""
    import numpy as np
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    quality = get_label_quality_scores(y, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flagged = find_label_issues(y, probs, n_jobs=1)    # its default forks a process pool per call
    return np.clip(1.0 - quality, 0.0, 1.0), np.asarray(flagged, bool), probs.argmax(1)


# ------------------------------------------------------------------ near-duplicates

def near_pairs(feats: np.ndarray, threshold: float = THRESHOLD, k: int = NEIGHBOURS) -> list[tuple[int, int, float]]:
    """(i, j, cosine) with i < j for every pair among each image's k nearest at or above
    `threshold`, similarity descending (faiss exact inner-product search on unit vectors)."""
    import numpy as np
    import faiss
    n = len(feats)
    if n < 2:
        return []
    x = np.ascontiguousarray(feats, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sims, ids = index.search(x, min(k + 1, n))
    pairs = {}
    for i, (row_s, row_i) in enumerate(zip(sims, ids)):
        for s, j in zip(row_s, row_i):
            if j >= 0 and j != i and s >= threshold:
                a, b = (i, int(j)) if i < j else (int(j), i)
                pairs[(a, b)] = max(pairs.get((a, b), -1.0), float(min(s, 1.0)))
    return sorted(((a, b, s) for (a, b), s in pairs.items()), key=lambda p: (-p[2], p[0], p[1]))


def leaks(dups: list[dict], holdout: pd.DataFrame | None) -> dict:
    """Holdout photos with a near-copy in train/val, and the holdout accuracy with and without them."""
    leaked = {d["a"] if d["splits"][0] == "holdout" else d["b"] for d in dups
              if sorted(d["splits"]) in (["holdout", "train"], ["holdout", "val"])}
    pairs = sum(1 for d in dups if sorted(d["splits"]) in (["holdout", "train"], ["holdout", "val"]))
    out = {"pairs": pairs, "holdout_images": len(leaked), "holdout_acc": None, "holdout_acc_without_leaks": None}
    if holdout is not None and len(holdout):
        right = holdout["pred"].to_numpy() == holdout["target"].to_numpy()
        keep = ~holdout["image"].isin(leaked).to_numpy()
        out["holdout_acc"] = float(right.mean())
        out["holdout_acc_without_leaks"] = float(right[keep].mean()) if keep.any() else None
    return out


# ------------------------------------------------------------------ the whole inspection

def relative(path: str, root: Path) -> str:
    """A photo's path relative to the data set root (as it is when outside it)."""
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def inspect(run, folds: int = FOLDS, weights: str = "imagenet", threshold: float = THRESHOLD,
            progress=None, should_stop=None) -> dict:
    """Everything (not capped): {"run_id", "features", "folds", "images", "missing", "missing_examples",
    "single_image_classes", "threshold", "label_issues" (every image, score descending),
    "duplicates", "leaks", "seconds"}. `progress(stage=..., done=..., total=...)`;
    `should_stop()` -> True raises core.errors.Cancelled between stages."""
    import numpy as np
    from core.errors import Cancelled
    t0 = time.time()
    if int(folds) < 2:
        raise UserError(f"--folds must be at least 2; got {folds}.")

    def report(stage, done=0, total=0):
        if should_stop is not None and should_stop():
            raise Cancelled()
        if progress is not None:
            progress(stage=stage, done=done, total=total)
    report(STAGES[0])
    m, labels, names = split_frame(run)
    root = Path(run.config().data).expanduser().resolve()
    feats, ok, note = embed_split(run, m, weights, progress=lambda d, t: report(STAGES[1], d, t))
    tiny = tiny_descriptors(m["path"], ok)
    missing = m[~ok]
    m = m[ok].reset_index(drop=True)
    if m["label"].nunique() < 2:
        raise UserError(f"Only {len(m)} photo(s) of run {run.id} can still be read ({len(missing)} vanished or "
                        "became unreadable): fewer than 2 classes are left to inspect.")
    present, y = np.unique(m["target"].to_numpy(), return_inverse=True)
    report(STAGES[2])
    probs = out_of_fold_probs(feats, y, folds)
    report(STAGES[3])
    score, flagged, suggested = rank_labels(probs, y)
    m["image"] = [relative(p, root) for p in m["path"]]
    report(STAGES[4])
    dups = [{"a": m["image"][i], "b": m["image"][j], "similarity": round(s, 6),
             "splits": [m["split"][i], m["split"][j]], "labels": [m["label"][i], m["label"][j]]}
            for i, j, s in near_pairs(tiny, threshold)]
    conflict = {}
    for d in dups:
        if d["labels"][0] != d["labels"][1]:
            conflict.setdefault(d["a"], d["b"])
            conflict.setdefault(d["b"], d["a"])
    sug = [labels[present[s]] for s in suggested]
    order = sorted(range(len(m)), key=lambda i: (-score[i], m["image"][i]))
    issues = [{"image": m["image"][i], "given": m["label"][i], "given_name": names.get(m["label"][i], m["label"][i]),
               "suggested": sug[i], "suggested_name": names.get(sug[i], sug[i]), "score": round(float(score[i]), 6),
               "flagged": bool(flagged[i]), "split": m["split"][i], "conflict": conflict.get(m["image"][i])}
              for i in order]
    holdout = run.predictions("holdout")
    if holdout is not None:
        holdout = holdout.assign(image=[relative(p, root) for p in holdout["path"]])
    singles = int((np.bincount(y) < 2).sum())
    return {"run_id": run.id, "features": note, "folds": max(2, min(int(folds), int(np.bincount(y).min()))),
            "images": len(m), "missing": len(missing), "missing_examples": [relative(p, root) for p in missing["path"][:5]],
            "single_image_classes": singles, "threshold": threshold,
            "label_issues": issues, "duplicates": dups, "leaks": leaks(dups, holdout),
            "seconds": round(time.time() - t0, 3)}


ISSUE_KEYS = ("image", "given", "given_name", "suggested", "suggested_name", "score")
DUPLICATE_KEYS = ("a", "b", "similarity", "splits")
LEAK_KEYS = ("pairs", "holdout_acc", "holdout_acc_without_leaks")


def summary(result: dict, top: int = TOP) -> dict:
    """The command line's JSON object (issue 22): each list capped at `top`, exactly its keys."""
    if int(top) < 1:
        raise UserError(f"--top must be at least 1; got {top}.")
    return {"run_id": result["run_id"],
            "label_issues": [{k: r[k] for k in ISSUE_KEYS} for r in result["label_issues"][:top]],
            "duplicates": [{k: d[k] for k in DUPLICATE_KEYS} for d in result["duplicates"][:top]],
            "leaks": {k: result["leaks"][k] for k in LEAK_KEYS}}


def missing_sentence(result: dict) -> str | None:
    """One sentence naming the photos that vanished since training, or None."""
    n = result.get("missing") or 0
    if not n:
        return None
    ex = ", ".join(result.get("missing_examples") or [])
    return (f"{n} photo(s) of the run's split are missing or unreadable now and were left out "
            f"(e.g. {ex}); the other {result['images']} were inspected.")


def leak_sentence(leak: dict) -> str:
    """"N holdout photos have a near-copy in training; holdout accuracy X without them (Y with)"."""
    n = leak.get("holdout_images", leak.get("pairs", 0))
    if not n:
        return "No holdout photo has a near-copy in training or validation."
    a, b = leak.get("holdout_acc_without_leaks"), leak.get("holdout_acc")
    acc = (f"; holdout accuracy {a:.1%} without them ({b:.1%} with)" if a is not None and b is not None else "")
    return f"{n} holdout photo(s) have a near-copy in training or validation{acc}."


__all__ = ["inspect", "summary", "near_pairs", "out_of_fold_probs", "rank_labels", "leaks", "leak_sentence",
           "missing_sentence", "FOLDS", "TOP", "THRESHOLD"]
