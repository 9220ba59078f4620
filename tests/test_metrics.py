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
    assert s["confusion"] == [[1, 0], [1, 1]]
    assert s["support"] == [1, 2]
    # ranked: 0.9 correct, 0.8 correct, 0.6 wrong -> (1 + 1) / 3
    assert s["gap"] == pytest.approx(2 / 3)
