"""Classification metrics: accuracy, top-k, per-class accuracy, confusion matrix, balanced
accuracy, macro-F1 and GAP.

Balanced accuracy is the mean recall over the classes present in the true labels (sklearn's
balanced_accuracy_score); macro-F1 the unweighted mean of F1 = 2 TP / (2 TP + FP + FN) over the
classes that occur as a true label or as a prediction (sklearn's f1_score(average="macro"): a
class predicted but absent scores 0, one neither true nor predicted is left out).

GAP is the Google Landmark Recognition challenge metric (Kaggle 2018): one prediction and one
confidence per query, ranked by confidence over all queries,
    GAP = (1/M) * sum_i P(i) * rel(i)
where P(i) is the precision over the first i ranked predictions, rel(i) is 1 when prediction i
is correct, and M is the number of queries that have a landmark (queries without one, marked
with a negative true label, still count as ranked predictions that are never relevant).
"""
from __future__ import annotations

import numpy as np


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def topk_accuracy(y_true, scores, k: int = 5) -> float:
    """Share of rows whose true class is among the k highest scores."""
    scores = np.asarray(scores)
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per true class; NaN where a class has no samples."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes that have at least one true sample; NaN when none has."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN) per class (0 where a class has no TP); NaN where it has neither
    true samples nor predictions."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that are a true label or a prediction at least once; NaN when none is."""
    f1 = f1_per_class(cm)
    return float(np.nanmean(f1)) if (~np.isnan(f1)).any() else float("nan")


def gap(y_true, y_pred, confidence) -> float:
    """Global Average Precision (see module docstring). y_true < 0 means 'no landmark'."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    conf = np.asarray(confidence, dtype=np.float64)
    m = int((y_true >= 0).sum())
    if m == 0:
        return float("nan")
    order = np.argsort(-conf, kind="stable")
    rel = (y_pred[order] == y_true[order]) & (y_true[order] >= 0)
    precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((precision * rel).sum() / m)


def summarize(y_true, scores, n_classes: int) -> dict:
    """All metrics of one split from true labels and class scores (probabilities)."""
    scores = np.asarray(scores, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = scores.argmax(axis=1) if len(scores) else np.zeros(0, dtype=np.int64)
    conf = scores.max(axis=1) if len(scores) else np.zeros(0)
    cm = confusion_matrix(y_true, pred, n_classes)
    return {
        "n": int(len(y_true)),
        "acc": accuracy(y_true, pred),
        "top5": topk_accuracy(y_true, scores, 5),
        "gap": gap(y_true, pred, conf),
        "balanced_acc": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "per_class": [None if np.isnan(v) else float(v) for v in per_class_accuracy(cm)],
        "support": cm.sum(axis=1).tolist(),
        "confusion": cm.tolist(),
    }
