"""Classification metrics: accuracy, top-k, the confusion matrix as its non-zero cells, per-class
accuracy, balanced accuracy, macro-F1 and GAP.

Everything here grows with the images, never with classes² (issue 20: a dense C×C matrix is 100 M
cells per split at 10,000 classes and 6.6 billion at GLDv2-clean's 81,313). An evaluation keeps
per image only what the metrics need (`Outputs`: prediction, confidence, top-5, the true class's
probability), and the confusion matrix as its non-zero cells (`Confusion`: at most one per image).
Per-class counts are `np.bincount`s of length C.

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

from dataclasses import astuple, dataclass

import numpy as np

TOP_K = 5                  # the top-k kept per image (top-5 accuracy, the predictions file)
CELL_COLUMNS = ("true", "pred", "count")     # a confusion cell: true class, predicted class, images


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


# ------------------------------------------------------------------ per-image outputs

@dataclass
class Outputs:
    """What an evaluation keeps per image (O(images), never images × classes): the true class,
    the predicted class and its probability, the TOP_K best classes (best first) and the true
    class's probability (for the loss)."""
    target: np.ndarray         # int64 (n,)
    pred: np.ndarray           # int64 (n,)
    conf: np.ndarray           # float64 (n,)
    top: np.ndarray            # int64 (n, min(TOP_K, C))
    p_true: np.ndarray         # float64 (n,)

    @classmethod
    def from_scores(cls, y_true, scores, k: int = TOP_K) -> "Outputs":
        """One batch (or a whole split) of class scores reduced to what the metrics need."""
        y = np.asarray(y_true, dtype=np.int64)
        s = np.asarray(scores, dtype=np.float64)
        if len(y) == 0:
            return cls.empty()
        k = min(k, s.shape[1])
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable"), 1)
        pred = s.argmax(axis=1)
        return cls(y, pred.astype(np.int64), s[np.arange(len(y)), pred], top.astype(np.int64),
                   s[np.arange(len(y)), y])

    @classmethod
    def empty(cls) -> "Outputs":
        z = np.zeros(0)
        return cls(z.astype(np.int64), z.astype(np.int64), z, np.zeros((0, 0), np.int64), z)

    @classmethod
    def concat(cls, parts: list["Outputs"]) -> "Outputs":
        parts = [p for p in parts if len(p)]
        return cls(*(np.concatenate(a) for a in zip(*map(astuple, parts)))) if parts else cls.empty()

    def map(self, fn) -> "Outputs | None":
        """Every array through `fn` (e.g. gathering each process's rows); None if fn gives None."""
        arrays = [fn(a) for a in astuple(self)]
        return None if any(a is None for a in arrays) else Outputs(*arrays)

    def __len__(self) -> int:
        return len(self.target)


# ------------------------------------------------------------------ confusion as cells

@dataclass(frozen=True)
class Confusion:
    """A confusion matrix stored as its non-zero cells (rows of `true`, `pred`, `count`, sorted by
    true then predicted class) over `n_classes` classes: at most one cell per image."""
    true: np.ndarray
    pred: np.ndarray
    count: np.ndarray
    n_classes: int

    @classmethod
    def from_labels(cls, y_true, y_pred, n_classes: int) -> "Confusion":
        """Counts of each (true, predicted) pair: np.unique over int64 codes true*C + pred."""
        t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
        codes, counts = np.unique(t * n_classes + p, return_counts=True)
        return cls(codes // n_classes, codes % n_classes, counts.astype(np.int64), int(n_classes))

    @classmethod
    def from_cells(cls, cells, n_classes: int) -> "Confusion":
        """From [[true, pred, count], ...] or a frame with CELL_COLUMNS (the parquet file)."""
        if hasattr(cells, "columns"):
            arr = np.stack([cells[c].to_numpy(np.int64) for c in CELL_COLUMNS], axis=1) if len(cells) else None
        else:
            arr = np.asarray(cells, dtype=np.int64).reshape(-1, 3) if len(cells) else None
        arr = np.zeros((0, 3), np.int64) if arr is None else arr
        n = max(int(n_classes), int(arr[:, :2].max(initial=-1)) + 1)
        return cls(arr[:, 0], arr[:, 1], arr[:, 2], n)

    @classmethod
    def from_dense(cls, cm) -> "Confusion":
        """A dense matrix, as runs evaluated before issue 20 stored it in evals.json (the one
        place the old format is converted)."""
        cm = np.asarray(cm, dtype=np.int64)
        t, p = np.nonzero(cm)
        return cls(t.astype(np.int64), p.astype(np.int64), cm[t, p], len(cm))

    def frame(self):
        import pandas as pd
        return pd.DataFrame({"true": self.true, "pred": self.pred, "count": self.count})

    def cells(self) -> list[list[int]]:
        """[[true, predicted, count], ...], the non-zero cells (the `eval --json` form)."""
        return np.stack([self.true, self.pred, self.count], axis=1).tolist()

    def total(self) -> int:
        return int(self.count.sum())

    def _bincount(self, idx, mask=None) -> np.ndarray:
        w = self.count if mask is None else self.count[mask]
        idx = idx if mask is None else idx[mask]
        return np.bincount(idx, weights=w, minlength=self.n_classes).astype(np.int64)

    def support(self) -> np.ndarray:
        """Images per true class (row sums)."""
        return self._bincount(self.true)

    def predicted(self) -> np.ndarray:
        """Images predicted as each class (column sums)."""
        return self._bincount(self.pred)

    def correct(self) -> np.ndarray:
        """The diagonal: images of each class predicted right."""
        return self._bincount(self.true, self.true == self.pred)

    def off_diagonal_mass(self) -> np.ndarray:
        """Per class: mistakes made on it plus mistakes predicting it."""
        wrong = self.true != self.pred
        return self._bincount(self.true, wrong) + self._bincount(self.pred, wrong)

    def mistakes(self, k: int | None = None) -> "Confusion":
        """The off-diagonal cells, largest first (ties: true, then predicted class order)."""
        wrong = np.flatnonzero(self.true != self.pred)
        order = wrong[np.argsort(-self.count[wrong], kind="stable")][:k]
        return Confusion(self.true[order], self.pred[order], self.count[order], self.n_classes)

    def dense(self, keep, other: bool = True) -> np.ndarray:
        """A small dense matrix over the classes `keep` (indices, in that order), plus, with
        `other`, one last row and column that sum every other class. The (other, other) cell
        holds only the mistakes among those classes, never their right answers: that diagonal
        would drown the colour scale of the classes shown (issue 20)."""
        keep = np.asarray(keep, dtype=np.int64)
        k = len(keep)
        group = np.full(self.n_classes, k, dtype=np.int64)       # class -> row; k is "(other)"
        group[keep] = np.arange(k)
        gt, gp = group[self.true], group[self.pred]
        mask = ~((gt == k) & (gp == k) & (self.true == self.pred))
        size = k + 1
        out = np.bincount(gt[mask] * size + gp[mask], weights=self.count[mask], minlength=size * size)
        out = out.astype(np.int64).reshape(size, size)
        return out if other else out[:k, :k]


def _counts(cm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(support, correct, predicted) per class of a Confusion or of a dense matrix (old runs)."""
    if isinstance(cm, Confusion):
        return cm.support(), cm.correct(), cm.predicted()
    cm = np.asarray(cm, dtype=np.int64)
    return cm.sum(axis=1), np.diag(cm).copy(), cm.sum(axis=0)


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Dense, rows true classes, columns predicted: for a handful of classes only (evaluation
    keeps a Confusion)."""
    c = Confusion.from_labels(y_true, y_pred, n_classes)
    return c.dense(np.arange(n_classes), other=False)


def per_class_accuracy(cm) -> np.ndarray:
    """Recall per true class; NaN where a class has no samples."""
    support, correct, _ = _counts(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, correct / np.maximum(support, 1), np.nan)


def balanced_accuracy(cm) -> float:
    """Mean recall over the classes that have at least one true sample; NaN when none has."""
    support, correct, _ = _counts(cm)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((correct[present] / support[present]).mean())


def f1_per_class(cm) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN) per class (0 where a class has no TP); NaN where it has neither
    true samples nor predictions."""
    support, correct, predicted = _counts(cm)
    tp = correct.astype(np.float64)
    denom = 2 * tp + (predicted - tp) + (support - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def macro_f1(cm) -> float:
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


NO_LANDMARK = -1           # the true label of a query that shows none of the known landmarks
CURVE_POINTS = 101         # at most this many points of a precision-coverage curve are kept


def precision_coverage(y_true, y_pred, confidence, points: int = CURVE_POINTS) -> list[dict]:
    """Answer only the queries whose confidence is at least a threshold: `coverage` is the share
    answered, `precision` the share of those answers that are right (an answer on a no-landmark
    query, y_true < 0, is always wrong). One point per distinct confidence, highest first (ties
    are answered together); thinned to at most `points`, keeping the last (everything answered)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    conf = np.asarray(confidence, dtype=np.float64)
    n = len(conf)
    if n == 0:
        return []
    order = np.argsort(-conf, kind="stable")
    c = conf[order]
    rel = (y_pred[order] == y_true[order]) & (y_true[order] >= 0)
    answered = np.arange(1, n + 1)
    precision = np.cumsum(rel) / answered
    ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True])          # the last index of each tie group
    if len(ends) > points:
        ends = ends[np.unique(np.linspace(0, len(ends) - 1, points).round().astype(int))]
    return [{"confidence": float(c[i]), "coverage": float(answered[i] / n), "precision": float(precision[i])}
            for i in ends]


def with_distractors(y_true, y_pred, confidence, d_pred, d_conf) -> dict:
    """Known-landmark queries (y_true >= 0) plus distractor queries (photos of no known landmark,
    their predictions `d_pred` with confidences `d_conf`) scored as the Google Landmark
    Recognition challenge does (Kaggle 2020, Evaluation; Weyand et al., CVPR 2020): GAP over all
    predictions ranked by confidence, M = the known-landmark queries, a distractor answer always
    wrong. `gap` and `acc_known` stay over the known landmarks alone."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    conf = np.asarray(confidence, dtype=np.float64)
    d_pred = np.asarray(d_pred, dtype=np.int64)
    t = np.concatenate([y_true, np.full(len(d_pred), NO_LANDMARK, np.int64)])
    p = np.concatenate([y_pred, d_pred])
    c = np.concatenate([conf, np.asarray(d_conf, dtype=np.float64)])
    return {"gap": gap(y_true, y_pred, conf), "gap_with_distractors": gap(t, p, c),
            "acc_known": accuracy(y_true, y_pred), "known": int(len(y_true)), "distractors": int(len(d_pred)),
            "coverage_curve": precision_coverage(t, p, c)}


def evaluation(out: Outputs, n_classes: int) -> tuple[dict, Confusion]:
    """All metrics of one split from its per-image outputs, and its confusion cells."""
    conf = Confusion.from_labels(out.target, out.pred, n_classes)
    top5 = float((out.top == out.target[:, None]).any(axis=1).mean()) if len(out) else float("nan")
    loss = float(-np.log(np.clip(out.p_true, 1e-12, None)).mean()) if len(out) else float("nan")
    return {
        "n": int(len(out)),
        "acc": accuracy(out.target, out.pred),
        "top5": top5,
        "gap": gap(out.target, out.pred, out.conf),
        "balanced_acc": balanced_accuracy(conf),
        "macro_f1": macro_f1(conf),
        "loss": loss,
        "per_class": [None if np.isnan(v) else float(v) for v in per_class_accuracy(conf)],
        "support": conf.support().tolist(),
    }, conf


def summarize(y_true, scores, n_classes: int) -> dict:
    """All metrics of one split from true labels and class scores (probabilities); the confusion
    cells are evaluation()'s second value."""
    return evaluation(Outputs.from_scores(y_true, scores), n_classes)[0]
