"""Distractors: a folder of photos that show none of a run's landmarks, scored with the run's
holdout as the Google Landmark Recognition challenge scores its queries (issue 23).

The folder's images are split in two by a fixed hash of their path relative to the folder (the
same photo always lands in the same half, whatever else the folder holds): `tune` may join
validation to fit calibration and a rejection threshold, `query` joins the holdout as queries
labelled "no landmark". Files that are the run's own photos (the same path, or the same bytes)
are left out and counted. Near-duplicates (the same photo re-encoded or resized) are not found
here: that needs the embeddings the error-analysis issue brings.

Takes a run object (duck-typed: `.id`, `.split_file`, `.checkpoint`, `.config()`,
`.class_names()`) and never imports core.runs.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.data.readers import IMAGE_EXTS
from core.errors import UserError
from core.files import sha256_of
from core.train import metrics

BATCH = 64                 # images per forward pass when scoring distractors


@dataclass(frozen=True)
class Distractors:
    """A distractor folder read and split: absolute paths, sorted."""
    root: Path
    tune: list[Path]
    query: list[Path]
    left_out: list[Path] = field(default_factory=list)     # the run's own photos (same path or bytes)


def half(relative: str) -> str:
    """'tune' or 'query' for a path relative to the distractor folder: the first bit of its
    SHA-256 (a fixed hash, unlike Python's salted hash())."""
    return "tune" if hashlib.sha256(relative.encode()).digest()[0] < 128 else "query"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files under `folder` (any depth), sorted; one sentence when there are none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"The distractor folder {root} does not exist or is not a folder.")
    try:
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    except OSError as e:
        raise UserError(f"The distractor folder {root} cannot be read ({e.strerror or e}).") from None
    if not found:
        raise UserError(f"The distractor folder {root} holds no .jpg, .jpeg, .png or .webp image.")
    return found


def overlapping(paths: list[Path], run_paths: list[str]) -> list[Path]:
    """The distractors that are one of the run's photos: the same file (resolved path), or the
    same bytes. Only run photos whose size equals a distractor's are hashed."""
    mine = {os.path.realpath(p) for p in run_paths}
    same = [p for p in paths if os.path.realpath(p) in mine]
    rest = [p for p in paths if os.path.realpath(p) not in mine]
    sizes = {}
    for p in rest:
        try:
            sizes.setdefault(p.stat().st_size, []).append(p)
        except OSError:
            continue
    run_hashes = set()
    for q in mine:
        try:
            if os.path.getsize(q) in sizes:
                run_hashes.add(sha256_of(Path(q)))
        except OSError:
            continue
    run_hashes.discard(None)
    same += [p for group in sizes.values() for p in group if sha256_of(p) in run_hashes]
    return sorted(same)


def run_photos(run) -> list[str]:
    """The photos the run was trained, validated and tested on (its split.csv)."""
    if not run.split_file.exists():
        return []
    from core.data.splits import load_manifest
    return load_manifest(run.split_file)["path"].astype(str).tolist()


def load(folder: str | os.PathLike, run) -> Distractors:
    """The distractor folder for `run`: its images less the run's own photos, split in two."""
    paths = list_images(folder)
    root = Path(folder).expanduser()
    left_out = overlapping(paths, run_photos(run))
    drop = set(left_out)
    kept = [p for p in paths if p not in drop]
    if not kept:
        raise UserError(f"All {len(paths)} images of the distractor folder {root} are photos of run {run.id}'s "
                        "data set; choose photos that show none of its landmarks.")
    halves = {"tune": [], "query": []}
    for p in kept:
        halves[half(p.relative_to(root).as_posix())].append(p)
    return Distractors(root, halves["tune"], halves["query"], left_out)


def score(predictor, paths: list[Path], progress=None) -> tuple[np.ndarray, np.ndarray, int]:
    """(predicted class, confidence) of each readable image, and how many could not be read;
    `progress(done, total)` after each batch (images tried)."""
    preds, confs, bad, batch = [], [], 0, []

    def flush():
        if batch:
            p = predictor.probs(torch.cat(batch))
            preds.append(p.argmax(1))
            confs.append(p.max(1))
            batch.clear()
    for path in paths:
        try:
            batch.append(predictor.tensor(path))
        except (UserError, OSError, ValueError):
            bad += 1
            continue
        if len(batch) == BATCH:
            flush()
            if progress:
                progress(sum(len(p) for p in preds) + bad, len(paths))
    flush()
    if progress:
        progress(len(paths), len(paths))
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0), bad
    return np.concatenate(preds).astype(np.int64), np.concatenate(confs).astype(np.float64), bad


def queries(folder: str | os.PathLike, run) -> Distractors:
    """load(), refused in one sentence when no image falls in the query half."""
    d = load(folder, run)
    if not d.query:
        raise UserError(f"None of the {len(d.tune)} images of the distractor folder {d.root} falls in the query "
                        "half (the other half tunes thresholds); add a few more photos.")
    return d


def report(d: Distractors, known: tuple, d_pred, d_conf, bad: int) -> dict:
    """The one scoring of both classifiers: `known` = (target, pred, conf) of the holdout's images,
    (d_pred, d_conf) the answers on the readable query-half images (`bad`: how many could not be
    read), scored by metrics.with_distractors, with the folder's counts."""
    if not len(d_pred):
        raise UserError(f"None of the {len(d.query)} query images of the distractor folder {d.root} can be read "
                        "as an image.")
    out = metrics.with_distractors(*known, d_pred, d_conf)
    out.update(folder=str(d.root), distractors_tune=len(d.tune), distractors_unreadable=int(bad),
               distractors_left_out=len(d.left_out))
    return out


def evaluate(run, predictor, predictions, folder: str | os.PathLike, progress=None) -> dict:
    """The run's holdout (`predictions`: its per-image frame with target, pred, conf) plus the
    query half of the distractor folder, scored by metrics.with_distractors; `progress(done, total)`
    counts the query images scored."""
    d = queries(folder, run)
    pred, conf, bad = score(predictor, d.query, progress)
    known = tuple(predictions[c].to_numpy() for c in ("target", "pred", "conf"))
    return report(d, known, pred, conf, bad)


def evaluate_knn(run, emb, model, size: int, folder: str | os.PathLike, penalty: float | None = None,
                 k: int | None = None, progress=None) -> dict:
    """The kNN classifier (core.serve.embeddings) scored as `evaluate` scores the network: the
    run's stored holdout vectors and the query half of the folder, embedded with the run's `model`
    at `size` px (one forward each, decoded one by one: they are not the run's photos and never
    enter its prepared store), each classified by Embeddings.classify (confidence = the predicted
    class's best similarity). `penalty` W: every query's confidence (known and distractor alike)
    minus W x its similarity to the nearest photo of the folder's TUNE half (embeddings.penalise),
    so no photo is both a penalty reference and a query."""
    from core.serve import embeddings, features
    k = k or embeddings.K_CLASSIFY
    d = queries(folder, run)
    reference = None
    if penalty is not None:
        if not d.tune:
            raise UserError(f"None of the {len(d.query)} images of the distractor folder {d.root} falls in the tune "
                            "half, which the distractor penalty compares queries with; add a few more photos.")
        reference, ok = features.embed_images(model, d.tune, size)
        if not ok.any():
            raise UserError(f"None of the {len(d.tune)} tune-half images of the distractor folder {d.root} can be "
                            "read as an image, and the distractor penalty needs at least one.")
    rows = np.flatnonzero(emb.frame["split"].astype(str).to_numpy() == "holdout")
    if not len(rows):
        raise UserError("The run's embeddings hold no holdout photo to score with the distractors.")
    vecs, ok = features.embed_images(model, d.query, size, progress)
    known, found = emb.classify(rows, k), emb.classify(vecs, k) if len(vecs) else None
    conf, d_conf = known.conf, found.conf if found is not None else np.zeros(0)
    if reference is not None:
        conf = embeddings.penalise(conf, emb.vectors[rows], reference, penalty)
        d_conf = embeddings.penalise(d_conf, vecs, reference, penalty) if len(vecs) else d_conf
    target = emb.frame["target"].to_numpy().astype(np.int64)[rows]
    d_pred = found.pred if found is not None else np.zeros(0, np.int64)
    out = report(d, (target, known.pred, conf), d_pred, d_conf, int((~ok).sum()))
    if reference is not None:
        out.update(distractor_penalty=float(penalty), distractors_reference=int(len(reference)))
    return out
