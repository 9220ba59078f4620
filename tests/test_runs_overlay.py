"""Runs page, what TensorBoard / W&B users look for (issue 21): several runs' curves overlaid with
their names in the legends, a learning-rate curve beside loss and accuracy, and a runs table that
a search box and a status filter narrow ("N of M runs shown")."""
import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.runs.store import RunStore
from dashboard import charts
from dashboard.common import run_names

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def spec(at, i: int) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def arr(v) -> np.ndarray:
    """A plotly array from a figure spec (numeric arrays arrive base64-packed)."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v, dtype=float)


def rerun(at) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def test_overlay_runs_lr_curve_and_table_filter(use_trained_home):
    _, (a, b) = use_trained_home
    store = RunStore()
    store.set(a, name="baseline")
    store.set(b, status="cancelled")
    names = run_names(store.list())
    ep = {r: store.epochs(r) for r in (a, b)}
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("../pages/runs.py")
    rerun(at)

    # the overlay starts as the selected run alone: its train/val curves, and its learning rate per epoch
    assert at.selectbox(key="runs_pick").value == b and at.multiselect(key="runs_overlay").value == [b]
    (lr,) = spec(at, 3)["data"]
    assert lr["name"] == names[b] and arr(lr["y"]) == pytest.approx(ep[b]["lr"].to_numpy())
    assert spec(at, 3)["layout"]["title"]["text"] == "Learning rate per epoch"

    # two runs overlaid: one colour and one legend entry (its name) per run on every chart
    at.multiselect(key="runs_overlay").select(a)
    rerun(at)
    acc, loss, steps, lr = (spec(at, i) for i in range(4))
    assert [t["name"] for t in acc["data"]] == [names[b], "baseline"]
    for r, t in zip((b, a), acc["data"]):
        assert arr(t["y"]) == pytest.approx(ep[r]["val_acc"].to_numpy())
    assert len({t["line"]["color"] for t in acc["data"]}) == 2
    assert [(t["name"], t["line"]["dash"], t["showlegend"]) for t in loss["data"]] == [
        (names[b], "dash", True), (names[b], "solid", False), ("baseline", "dash", True), ("baseline", "solid", False)]
    assert arr(loss["data"][3]["y"]) == pytest.approx(ep[a]["train_loss"].to_numpy())
    assert [t["name"] for t in steps["data"] if t.get("showlegend", True)] == [names[b], "baseline"]
    assert [len(arr(t["y"])) for t in lr["data"]] == [len(ep[b]), len(ep[a])]
    at.selectbox(key="runs_pick").set_value(a)       # the user's overlay stays when another run is selected
    rerun(at)
    assert at.multiselect(key="runs_overlay").value == [b, a]
    assert [t["name"] for t in spec(at, 0)["data"]] == ["baseline", names[b]]   # the selected run first

    # the table: a search (any case, name / run id / model / data set) and a status filter
    def shown() -> tuple[list, str]:
        return at.dataframe[0].value["run_id"].tolist(), next(c.value for c in at.caption if "runs shown" in c.value)
    assert shown() == ([b, a], "2 of 2 runs shown")
    at.text_input(key="runs_search").input("BASEline")
    rerun(at)
    assert shown() == ([a], "1 of 2 runs shown")
    at.text_input(key="runs_search").input(b[-6:])
    rerun(at)
    assert shown() == ([b], "1 of 2 runs shown")
    at.text_input(key="runs_search").input("")
    at.multiselect(key="runs_status").select("cancelled")
    rerun(at)
    assert shown() == ([b], "1 of 2 runs shown")
    at.multiselect(key="runs_status").unselect("cancelled").select("failed")
    rerun(at)
    assert shown() == ([], "0 of 2 runs shown")
    assert at.selectbox(key="runs_pick").value == a                  # the filter never moves the selection


def test_filter_runs_matches_every_word_in_name_id_model_or_data_set():
    df = pd.DataFrame({"run_id": ["r-aaaa", "r-bbbb", "r-cccc"], "name": ["baseline", "", None],
                       "model": ["resnet18", "small_cnn", "resnet18"], "dataset": ["gldv2", "demo", "Paris6k"],
                       "status": ["done", "failed", "running"]})
    ids = lambda *a: charts.filter_runs(df, *a)["run_id"].tolist()   # noqa: E731
    assert ids() == ["r-aaaa", "r-bbbb", "r-cccc"]
    assert ids("resnet paris") == ["r-cccc"]                 # every word, each in any of the fields
    assert ids("BBBB") == ["r-bbbb"] and ids("demo") == ["r-bbbb"] and ids("Base") == ["r-aaaa"]
    assert ids("", ["done", "running"]) == ["r-aaaa", "r-cccc"]
    assert ids("resnet", ["failed"]) == [] and ids("nothing-like-it") == []


def test_overlay_figure_log_axis_keeps_accuracy_linear():
    ep = pd.DataFrame({"epoch": [1, 2], "val_acc": [0.2, 0.4], "val_loss": [1.0, 0.5], "train_loss": [1.2, 0.6],
                       "lr": [1e-3, 1e-4]})
    assert charts.overlay_figure({"x": ep}, "loss", log=True).layout.yaxis.type == "log"
    assert charts.overlay_figure({"x": ep}, "lr", log=True).layout.yaxis.type == "log"
    assert charts.overlay_figure({"x": ep}, "val_acc", log=True).layout.yaxis.type == "linear"
    no_lr = charts.overlay_figure({"x": ep.assign(lr=None), "y": ep}, "lr")
    assert [t.name for t in no_lr.data] == ["y"]             # a run that recorded no learning rate draws nothing
