"""From a figure to its photos on the Evaluate page (issue 22): the confusion cell's and the class's
photos, the map of a run's embeddings at 20,000 points, and the detail view's neighbours."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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

def test_a_confusion_cell_shows_exactly_the_photos_of_that_pair_most_confident_first(use_trained_home):
    home, (run_id, _) = use_trained_home
    preds = _preds(run_id, "val")
    wrong = preds[preds["pred"] != preds["target"]]
    t, p = wrong.groupby(["target", "pred"]).size().idxmax()
    at = _open(eval_run=run_id, eval_split="val", **{photo_views.SHOWN: dict(
        run=run_id, split="val", kind="pair", true=int(t), pred=int(p))})
    want = preds[(preds["target"] == t) & (preds["pred"] == p)].sort_values("conf", ascending=False)
    assert _grid(at) == [Path(x).name for x in want["path"]] and len(want) >= 1
    assert any("predicted as" in m.value for m in at.markdown)


# ------------------------------------------------------------------ the map and the neighbours

MAP_ROWS = 20_000


def _write_embeddings(run_id, twin_of: str) -> tuple[str, str]:
    """The run's embedding files written directly (no model): its split.csv's photos, padded with
    made-up training rows to MAP_ROWS, random unit vectors; one training photo of another class gets
    the vector of `twin_of`; computed (says their metadata) on an earlier checkpoint. Returns (the
    twin's path, its label)."""
    from core.data.splits import load_manifest
    from core.runs.store import RunStore
    from core.serve import embeddings
    run = RunStore().run(run_id)
    m = load_manifest(run.split_file)[["path", "split", "target", "label"]]
    pad = MAP_ROWS - len(m)
    fake = pd.DataFrame({"path": [f"/made/up/{i}.jpg" for i in range(pad)], "split": "train",
                         "target": np.arange(pad) % 4, "label": (np.arange(pad) % 4).astype(str)})
    rows = pd.concat([m, fake], ignore_index=True)
    rng = np.random.default_rng(0)
    rows["name"] = "class " + rows["label"].astype(str)
    rows["pred"] = rows["target"].to_numpy()
    rows["conf"] = rng.random(MAP_ROWS).astype(np.float32)
    rows["correct"] = True
    rows["x"], rows["y"] = rng.normal(size=(2, MAP_ROWS)).astype(np.float32)
    v = rng.normal(size=(MAP_ROWS, 16)).astype(np.float32)
    i = int(np.flatnonzero(rows["path"] == twin_of)[0])
    twin = int(np.flatnonzero((rows["split"] == "train") & (rows["target"] != rows["target"][i]))[0])
    v[twin] = v[i]
    embeddings.write(run, v / np.linalg.norm(v, axis=1, keepdims=True), rows,
                     {"run_id": run_id, "n": MAP_ROWS, "dim": 16, "map": "tsne", "missing": 0,
                      "checkpoint_mtime": run.checkpoint.stat().st_mtime - 60})
    return rows["path"][twin], str(rows["label"][twin])


def _length(array) -> int:
    """Points in a plotly JSON array (plotly writes numpy arrays as base64 typed arrays)."""
    import base64
    if isinstance(array, dict):
        return len(base64.b64decode(array["bdata"])) // np.dtype(array["dtype"]).itemsize
    return len(array)


def test_a_class_lists_its_mistakes_first_the_map_draws_20000_points_and_a_photo_lists_its_neighbours(use_trained_home):
    import json
    home, (run_id, _) = use_trained_home
    preds = _preds(run_id, "val")
    photo = preds[preds["pred"] != preds["target"]].iloc[0]                    # a mistake, opened from the map
    twin, twin_label = _write_embeddings(run_id, photo["path"])
    opened = dict(run=run_id, split="val", path=photo["path"], target=int(photo["target"]), pred=int(photo["pred"]),
                  conf=float(photo["conf"]), **{"from": "map"})
    cls = int(photo["target"])
    at = _open(eval_run=run_id, eval_split="val", eval_photo_maps=False, **{photo_views.OPEN: opened},
               **{photo_views.SHOWN: dict(run=run_id, split="val", kind="class", **{"class": cls})})
    # the class's grid: mistakes first
    mine = preds[preds["target"] == cls]
    order = [Path(x).name for x in photo_views.class_photos(preds, cls)["path"]]
    assert _grid(at) == order and len(order) == len(mine)
    mistakes = set(Path(x).name for x in mine[mine["pred"] != cls]["path"])
    assert mistakes and set(order[:len(mistakes)]) == mistakes
    (fig,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith("eval_map")
              or "eval_map" in c.proto.id]
    traces = fig["data"]
    assert [t["type"] for t in traces] == ["scattergl"] * 4                     # one trace per class
    assert sum(_length(t["x"]) for t in traces) == MAP_ROWS
    assert any("earlier checkpoint" in w.value for w in at.warning)            # stale: said, and a recompute offered
    assert at.button(key="eval_embed").label == "Recompute embeddings"
    (near,) = [d.value for d in at.dataframe if "similarity" in d.value.columns]
    assert len(near) == photo_views.NEIGHBOURS and near["path"].iloc[0] == twin
    assert near["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-3) and near["similarity"].is_monotonic_decreasing
    assert near["label"].iloc[0] == twin_label and near["differs"].iloc[0].startswith("⚠️")
    assert (near["differs"] != "").sum() == (near["label"].astype(str) != str(photo["target"])).sum()


def test_map_groups_at_20000_points_top_classes_coloured_the_rest_one_grey_trace():
    from dashboard import embedding_map
    rng = np.random.default_rng(1)
    target = np.minimum(rng.geometric(0.08, MAP_ROWS) - 1, 29)               # 30 classes, skewed sizes
    frame = pd.DataFrame({"path": [f"/p/{i}.jpg" for i in range(MAP_ROWS)], "target": target, "pred": target,
                          "label": target.astype(str), "name": [f"c{t}" for t in target], "split": "train",
                          "conf": rng.random(MAP_ROWS), "correct": rng.random(MAP_ROWS) < 0.9,
                          "x": rng.normal(size=MAP_ROWS), "y": rng.normal(size=MAP_ROWS)})
    groups = embedding_map.class_groups(frame)
    sizes = np.bincount(target, minlength=30)
    top = np.argsort(-sizes, kind="stable")[:embedding_map.TOP_CLASSES]
    assert [g[0] for g in groups[:-1]] == [f"c{t}" for t in top]            # the 20 largest, largest first
    assert groups[-1][1] == embedding_map.REST_COLOR and len(groups[-1][2]) == sizes.sum() - sizes[top].sum()
    assert sorted(np.concatenate([g[2] for g in groups]).tolist()) == list(range(MAP_ROWS))   # each point once
    small = frame.head(2000)
    fig = embedding_map.map_figure(small, "correct", [f"c{i}" for i in range(30)])
    assert [t.name for t in fig.data] == ["right", "wrong"] and len(fig.data[1].x) == (~small["correct"]).sum()
    assert fig.data[1].customdata[0][0] == np.flatnonzero(~small["correct"])[0]   # a click finds its row
    assert embedding_map.clicked_row([{"customdata": fig.data[1].customdata[3].tolist()}]) == \
        np.flatnonzero(~small["correct"])[3]


def test_a_vanished_photo_is_a_grey_missing_tile(tmp_path):
    from PIL import Image
    real = tmp_path / "a.jpg"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(real)
    img, found = photo_views.tile(str(real))
    assert found and max(img.shape[:2]) == photo_views.THUMB_PX and np.abs(img[40, 40].astype(int) - (200, 30, 30)).max() <= 6
    real.unlink()
    img, found = photo_views.tile(str(real))
    assert not found and (img == photo_views.MISSING_GREY).all()
