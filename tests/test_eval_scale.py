"""Evaluation at any class count (issue 20): the confusion matrix kept as its non-zero cells,
per-class figures and top confusions computed from the predictions, nothing C×C anywhere; a run
folder written before issue 20 (a dense matrix in evals.json) still loads."""
import json
import math
import tracemalloc

import numpy as np
import pytest

from core.cli import main
from core.train import metrics
from core.train.metrics import Confusion, Outputs

# hand-checked case: 4 classes, class 3 never seen
Y_TRUE = [0, 0, 1, 1, 1, 2]
Y_PRED = [0, 1, 1, 1, 0, 2]
CELLS = [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 2], [2, 2, 1]]


def _outputs(y_true, y_pred, n_classes: int) -> Outputs:
    """Per-image outputs as the engine keeps them, generated (no model): confidence 0.9, the
    prediction first in the top-5, the true class's probability 0.9 when right, 0.01 when wrong."""
    y, p = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    top = np.stack([(p + i) % n_classes for i in range(min(5, n_classes))], axis=1)
    return Outputs(y, p, np.full(len(y), 0.9), top, np.where(y == p, 0.9, 0.01))


def test_cells_and_per_class_figures_by_hand():
    m, conf = metrics.evaluation(_outputs(Y_TRUE, Y_PRED, 4), 4)
    assert conf.cells() == CELLS
    assert m["support"] == [2, 3, 1, 0]
    assert m["per_class"][:3] == pytest.approx([1 / 2, 2 / 3, 1.0]) and m["per_class"][3] is None
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["balanced_acc"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)       # class 3: no image, left out
    # F1 = 2TP/(2TP+FP+FN): class 0: 2/(2+1+1); class 1: 4/(4+1+1); class 2: 1; class 3: neither, left out
    assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["loss"] == pytest.approx(-(4 * math.log(0.9) + 2 * math.log(0.01)) / 6)
    assert "confusion" not in m                                            # the cells go to a file
    assert conf.mistakes().cells() == [[0, 1, 1], [1, 0, 1]]              # largest first, then class order
    # the top-k view: class 1 and "(other)" = {0, 2, 3}; (other) → (other) holds only mistakes among
    # them (none: 0 → 0 and 2 → 2 are right answers, left out)
    assert conf.dense([1]).tolist() == [[2, 1], [1, 0]]
    assert metrics.confusion_matrix(Y_TRUE, Y_PRED, 4).tolist() == [[1, 1, 0, 0], [1, 2, 0, 0],
                                                                     [0, 0, 1, 0], [0, 0, 0, 0]]


def test_cells_round_trip_and_the_old_dense_form_converts_to_the_same():
    dense = metrics.confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert Confusion.from_dense(dense).cells() == CELLS
    new = Confusion.from_labels(Y_TRUE, Y_PRED, 4)
    assert Confusion.from_cells(new.frame(), 4).cells() == Confusion.from_cells(CELLS, 4).cells() == CELLS
    assert metrics.balanced_accuracy(dense) == metrics.balanced_accuracy(new)     # old runs' numbers unchanged
    assert metrics.macro_f1(dense) == metrics.macro_f1(new)


def test_15000_classes_from_generated_predictions_allocate_nothing_class_squared(tmp_path):
    """45,000 predictions over 15,000 classes: metrics, the cells file, and what the pages compute
    (per-class table, most-confused pairs and classes, the top-k matrix, the cells CSV) stay far
    below one C×C array (C² int64 = 1.8 GB); their peak is a few MB."""
    from core.runs.folder import RunFolder
    from dashboard import charts
    c = 15_000
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(c), 3)
    pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, c, len(y)))
    out = _outputs(y, pred, c)
    folder = RunFolder(tmp_path)
    tracemalloc.start()
    try:
        m, conf = metrics.evaluation(out, c)
        folder.write_confusion("val", conf)
        back = folder.read_confusion("val", m)
        ev = {**m, "labels": [str(100_000 + i) for i in range(c)], "names": [f"place {i}" for i in range(c)],
              "cells": back}
        table = charts.per_class_frame(ev)
        pairs = charts.confusion_pairs(ev, charts.PAIRS_SHOWN)
        shown, names = charts.reduce_confusion(back, charts.most_confused(back, 30), ev["names"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    csv = charts.confusion_csv(ev)                 # (a frame of the cells; slow under tracemalloc)
    assert peak < c * c * 8 / 100, f"peak {peak / 1e6:.0f} MB"
    # the numbers: every image in exactly one cell, the diagonal is the right answers
    wrong = pred != y
    assert back.cells() == conf.cells() and conf.total() == len(y)
    assert len(conf.count) == len(np.unique(y * c + pred))
    assert table["correct"].sum() == (~wrong).sum() and table["support"].eq(3).all()
    assert m["acc"] == pytest.approx(1 - wrong.mean())
    assert np.allclose(table["acc"], np.bincount(y[~wrong], minlength=c) / 3)
    top_pair = np.unique(y[wrong] * c + pred[wrong], return_counts=True)[1].max()
    assert pairs["images"].iloc[0] == top_pair and pairs["images"].is_monotonic_decreasing
    assert shown.shape == (31, 31) and names[-1] == charts.OTHER
    assert shown.sum() == wrong.sum() + table.set_index("name").loc[names[:-1], "correct"].sum()
    assert csv.count(b"\n") == len(conf.count) + 1


def test_eval_json_gives_confusion_cells_for_new_and_old_run_folders(tmp_path, capsys):
    from core.runs.store import RunStore
    from tests.conftest import tiny_config
    store = RunStore()
    m, conf = metrics.evaluation(_outputs(Y_TRUE, Y_PRED, 4), 4)
    labels = {"labels": ["7", "8", "9", "10"], "names": ["a", "b", "c", "d"]}
    new = store.create(tiny_config(tmp_path), status="done")
    store.run(new).write_confusion("holdout", conf)
    store.log_eval(new, "holdout", {**m, **labels})
    old = store.create(tiny_config(tmp_path), status="done")           # evaluated before issue 20
    dense = metrics.confusion_matrix(Y_TRUE, Y_PRED, 4).tolist()
    store.log_eval(old, "holdout", {k: v for k, v in m.items() if k not in ("balanced_acc", "macro_f1")}
                   | labels | {"confusion": dense})
    for run_id in (new, old):
        store.set(run_id, summary={"holdout_acc": m["acc"]}, finished=1.0)
        assert main(["eval", run_id, "--json"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["confusion_cells"] == CELLS and "confusion" not in out
        assert out["balanced_acc"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
        assert [r["support"] for r in out["per_class"]] == [2, 3, 1, 0]
    assert "confusion" not in json.loads(store.run(new).evals_file.read_text())["holdout"]
