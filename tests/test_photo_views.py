"""From a figure to its photos on the Evaluate page (issue 22): the confusion cell's and the class's
photos, the map of a run's embeddings at 20,000 points, and the detail view's neighbours."""
from pathlib import Path

import numpy as np
import pandas as pd

from dashboard import photo_views

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
EVALUATE = "../pages/evaluate.py"


def _open(**state):
    """The Evaluate page rendered once with this session state (one script run)."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(EVALUATE)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _grid(at) -> list[str]:
    """The file names of the grid's photos, in order (each tile's Open button)."""
    return [b.label for b in at.button if b.key.startswith("eval_open_")]


def _preds(run_id, split):
    from core.runs.store import RunStore
    return pd.read_parquet(RunStore().run(run_id).predictions_file(split))


# ------------------------------------------------------------------ pure

def test_a_clicked_cell_is_its_true_and_predicted_class_and_other_has_no_pair():
    shown = [7, 2, 5, -1]                                   # axis positions -> classes; (other) last
    assert photo_views.cell_of([{"x": 1, "y": 0, "curve_number": 1}], shown) == (7, 2)   # y: true, x: predicted
    assert photo_views.cell_of([{"x": 3, "y": 2}], shown) is None
    assert photo_views.cell_of([], shown) is None
    from dashboard import charts
    fig = photo_views.clickable(charts.confusion_figure(np.arange(9).reshape(3, 3), ["a", "b", "c"]), 3)
    cells = fig.data[1]                                     # one clickable marker per cell, same hover text
    assert list(zip(cells.x, cells.y))[5] == (2, 1) and cells.customdata[5][:3].tolist() == ["b", "c", 5]


def test_class_photos_are_its_mistakes_most_confident_first_then_its_right_answers_least_sure_first():
    preds = pd.DataFrame({"path": list("abcdefg"), "target": [1, 1, 1, 0, 1, 1, 2], "pred": [1, 0, 1, 0, 2, 1, 1],
                          "conf": [0.9, 0.6, 0.5, 0.99, 0.8, 0.7, 0.95]})
    assert photo_views.class_photos(preds, 1)["path"].tolist() == ["e", "b", "c", "f", "a"]
    assert photo_views.pair_photos(preds, 1, 0)["path"].tolist() == ["b"]


# ------------------------------------------------------------------ the page

def test_confusion_cell_and_class_show_exactly_their_photos(use_trained_home):
    home, (run_id, _) = use_trained_home
    preds = _preds(run_id, "val")
    wrong = preds[preds["pred"] != preds["target"]]
    t, p = wrong.groupby(["target", "pred"]).size().idxmax()
    at = _open(eval_run=run_id, eval_split="val", **{photo_views.SHOWN: dict(
        run=run_id, split="val", kind="pair", true=int(t), pred=int(p))})
    want = preds[(preds["target"] == t) & (preds["pred"] == p)].sort_values("conf", ascending=False)
    assert _grid(at) == [Path(x).name for x in want["path"]] and len(want) >= 1
    at.session_state[photo_views.SHOWN] = dict(run=run_id, split="val", kind="class", **{"class": int(t)})
    at.run()
    mine = preds[preds["target"] == t]
    order = [Path(x).name for x in photo_views.class_photos(preds, int(t))["path"]]
    assert _grid(at) == order and len(order) == len(mine)
    mistakes = set(Path(x).name for x in mine[mine["pred"] != t]["path"])
    assert set(order[:len(mistakes)]) == mistakes          # the mistakes come first
