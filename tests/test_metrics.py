import math

import numpy as np
import pytest

from core.train import metrics


def test_gap_hand_computed_all_correct_is_one():
    assert metrics.gap([0, 1, 2], [0, 1, 2], [0.9, 0.5, 0.1]) == pytest.approx(1.0)


def test_gap_hand_computed_mixed():
    # ranked by confidence: correct, wrong, correct -> P = 1, 1/2, 2/3; rel = 1, 0, 1
    # GAP = (1*1 + 2/3*1) / 3 queries with a landmark = 5/9
    y_true = [0, 1, 2]
    y_pred = [0, 0, 2]
    conf = [0.9, 0.8, 0.7]
    assert metrics.gap(y_true, y_pred, conf) == pytest.approx(5 / 9)


def test_gap_rewards_confident_correct_predictions():
    # same predictions, but the wrong one ranked first: P = 0, 1/2, 2/3 -> (1/2 + 2/3)/3 = 7/18
    assert metrics.gap([0, 1, 2], [0, 0, 2], [0.8, 0.9, 0.7]) == pytest.approx(7 / 18)


def test_gap_non_landmark_queries_only_hurt_precision():
    # query 2 has no landmark (-1): M = 2; ranked: wrong(non-landmark), correct, correct
    # P = 0, 1/2, 2/3 -> (1/2 + 2/3) / 2 = 7/12
    assert metrics.gap([-1, 0, 1], [3, 0, 1], [0.99, 0.5, 0.4]) == pytest.approx(7 / 12)


def test_gap_empty_is_nan():
    assert math.isnan(metrics.gap([], [], []))


def test_confusion_and_per_class():
    cm = metrics.confusion_matrix([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 2], 4)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    pc = metrics.per_class_accuracy(cm)
    assert pc[0] == pytest.approx(0.5) and pc[1] == pytest.approx(2 / 3) and pc[2] == 1.0
    assert math.isnan(pc[3])


def test_topk():
    scores = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    assert metrics.topk_accuracy([0, 0, 0], scores, k=1) == pytest.approx(1 / 3)
    assert metrics.topk_accuracy([0, 0, 0], scores, k=2) == pytest.approx(1 / 3)
    assert metrics.topk_accuracy([2, 0, 0], scores, k=2) == pytest.approx(2 / 3)
    assert metrics.topk_accuracy([0, 0, 0], scores, k=5) == pytest.approx(1.0)


def test_summarize():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    s = metrics.summarize([0, 1, 1], scores, 2)
    assert s["acc"] == pytest.approx(2 / 3)
    assert "confusion" not in s                       # the cells go to a file beside (issue 20)
    _, cells = metrics.evaluation(metrics.Outputs.from_scores([0, 1, 1], scores), 2)
    assert cells.cells() == [[0, 0, 1], [1, 0, 1], [1, 1, 1]]
    assert s["support"] == [1, 2]
    # ranked: 0.9 correct, 0.8 correct, 0.6 wrong -> (1 + 1) / 3
    assert s["gap"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------ class-imbalance metrics

def _by_formula(y_true, y_pred):
    """Balanced accuracy and macro-F1 straight from their definitions, one class at a time
    (recall over classes with a true sample; F1 over classes that are true or predicted)."""
    y_true, y_pred = list(y_true), list(y_pred)
    recalls, f1s = [], []
    for c in sorted(set(y_true) | set(y_pred)):
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred))
        if tp + fn:
            recalls.append(tp / (tp + fn))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(recalls) / len(recalls), sum(f1s) / len(f1s)


def test_balanced_accuracy_and_macro_f1_by_hand():
    # true 0 0 0 0 1 1 2 / pred 0 0 0 1 1 0 1 -> confusion [[3,1,0],[1,1,0],[0,1,0]]
    cm = metrics.confusion_matrix([0, 0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 0, 1], 3)
    # recalls 3/4, 1/2, 0 -> 5/12 (plain accuracy would be 4/7)
    assert metrics.balanced_accuracy(cm) == pytest.approx(5 / 12)
    # F1 = 2TP/(2TP+FP+FN): class 0: 6/(6+1+1) = 3/4; class 1: 2/(2+2+1) = 2/5; class 2: 0
    assert metrics.f1_per_class(cm).tolist() == pytest.approx([0.75, 0.4, 0.0])
    assert metrics.macro_f1(cm) == pytest.approx((0.75 + 0.4 + 0.0) / 3)


def test_imbalance_metrics_leave_out_absent_classes_like_sklearn():
    # 4 classes; class 2 neither true nor predicted (left out of both), class 3 predicted once but
    # never true (left out of balanced accuracy, F1 = 0 in macro-F1)
    cm = metrics.confusion_matrix([0, 0, 1, 1], [0, 3, 1, 1], 4)
    assert metrics.balanced_accuracy(cm) == pytest.approx((1 / 2 + 1) / 2)
    assert metrics.macro_f1(cm) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert math.isnan(metrics.balanced_accuracy(np.zeros((3, 3)))) and math.isnan(metrics.macro_f1(np.zeros((3, 3))))


def test_imbalance_metrics_match_their_formulas_on_random_labels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 7))
        y_true = rng.choice(k, size=int(rng.integers(5, 60)), p=rng.dirichlet(np.ones(k)))
        y_pred = np.where(rng.random(len(y_true)) < 0.6, y_true, rng.integers(0, k, len(y_true)))
        cm = metrics.confusion_matrix(y_true, y_pred, k)
        bal, f1 = _by_formula(y_true, y_pred)
        assert metrics.balanced_accuracy(cm) == pytest.approx(bal)
        assert metrics.macro_f1(cm) == pytest.approx(f1)


def test_summarize_reports_balanced_accuracy_and_macro_f1_beside_accuracy():
    # 4 of class 0 all right, 1 of class 1 wrong: accuracy 0.8 hides that class 1 is never found
    scores = np.array([[0.9, 0.1]] * 5)
    s = metrics.summarize([0, 0, 0, 0, 1], scores, 2)
    assert {"n", "acc", "top5", "gap", "per_class", "support"} <= set(s)   # old keys kept (confusion: a file)
    assert s["acc"] == pytest.approx(0.8)
    assert s["balanced_acc"] == pytest.approx(0.5)
    assert s["macro_f1"] == pytest.approx((8 / 9 + 0) / 2)        # class 0: 2*4/(8+1+0)
    perfect = metrics.summarize([0, 1, 2], np.eye(3), 3)
    assert perfect["balanced_acc"] == perfect["macro_f1"] == 1.0
