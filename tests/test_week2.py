"""Issue 21, a user's second week (AppTest, no training): the Runs page keeps the user's selection
while a sweep queues trials; one validation accuracy (the last epoch's); run names travel (Compare,
Evaluate, "Train again" records its parent); the download panel keeps its result and its form; the
Train form comes back from the URL."""
import os
import shutil
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.runs.store import RunStore
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")


def open_page(name: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(f"../pages/{name}")
    at.run()
    assert not at.exception, at.exception
    return at


def done_run(store, data, name=None, epochs=(0.5, 0.25), **kw) -> str:
    """A finished run without training: its epoch rows and the final evaluation's summary."""
    run_id = store.create(tiny_config(data, **kw), status="done")
    for e, acc in enumerate(epochs, 1):
        store.log_epoch(run_id, {"epoch": e, "val_acc": acc, "train_acc": 0.9})
    store.set(run_id, name=name, summary={"val_acc": epochs[-1], "train_acc": 0.9, "holdout_acc": 0.4},
              finished=time.time())
    return run_id


def test_runs_selection_stays_while_a_sweep_queues_and_one_val_acc_and_parent_link(demo_root):
    store = RunStore()
    parent = done_run(store, demo_root, name="baseline")          # best epoch 0.5, last (the checkpoint) 0.25
    child = done_run(store, demo_root, epochs=(0.3,), extra={"parent": parent})
    busy = store.create(tiny_config(demo_root, classes=3), status="running")   # holds the CPU slot: a live pid
    store.set(busy, pid=os.getpid(), heartbeat=time.time())
    at = open_page("runs.py")
    table = at.dataframe[0].value.set_index("run_id")
    assert table.loc[parent, "val_last"] == "0.250" and table.loc[child, "val_last"] == "0.300"
    assert table.loc[busy, "classes"] == "3" and table.loc[parent, "classes"] == "4"
    assert at.selectbox(key="runs_pick").value == busy             # nothing chosen yet: the active run
    at.selectbox(key="runs_pick").set_value(child).run()          # the user picks a run
    links = {p.proto.label: p.proto.page for p in at.get("page_link")}
    assert "Trained again from baseline" in links
    trial = store.create(tiny_config(demo_root, classes=2), status="queued")   # a sweep queues its next trial
    at.run()                                                        # the full rerun a finished trial causes
    assert at.selectbox(key="runs_pick").value == child and at.query_params["run"] == child
    mine = store.create(tiny_config(demo_root, classes=2), status="queued")    # launched on the Train page:
    at.session_state["train_last_run"] = mine                                  # shown, once
    at.run()
    assert at.selectbox(key="runs_pick").value == mine
    at.button(key="runs_again").click().run()                       # Train again records the parent
    assert at.session_state["train_parent"] == mine
    store.set(busy, status="cancelled")


def test_run_names_travel_short_unique_labels():
    from dashboard.common import run_names
    runs = [{"run_id": "20260101-000000-small_cnn-aaaa1234", "model": "small_cnn", "name": "baseline"},
            {"run_id": "20260101-000001-small_cnn-bbbb1234", "model": "small_cnn", "name": None},
            {"run_id": "20260101-000002-small_cnn-cccc5678", "model": "small_cnn", "name": ""},
            {"run_id": "20260101-000003-resnet18-dddd0000", "model": "resnet18", "name": "twin"},
            {"run_id": "20260101-000004-resnet18-eeee0001", "model": "resnet18", "name": "twin"}]
    names = run_names(runs)
    assert names == {runs[0]["run_id"]: "baseline",
                     runs[1]["run_id"]: "small_cnn · 1234", runs[2]["run_id"]: "small_cnn · 5678",
                     runs[3]["run_id"]: "twin · 0000", runs[4]["run_id"]: "twin · 0001"}
    runs[2]["run_id"] = "20260101-000002-small_cnn-cc001234"     # the same last 4 digits: 6 tell them apart
    names = run_names(runs)
    assert names[runs[1]["run_id"]] == "small_cnn · bb1234" and names[runs[2]["run_id"]] == "small_cnn · 001234"
    assert names[runs[0]["run_id"]] == "baseline"


def test_evaluate_and_compare_show_run_names(demo_root):
    store = RunStore()
    a = done_run(store, demo_root, name="baseline")
    b = done_run(store, demo_root)
    for r in (a, b):                     # the final evaluation's holdout numbers, as the worker writes them
        store.log_eval(r, "holdout", {"n": 12, "acc": 0.4, "labels": ["a", "b", "c", "d"]})
    at = open_page("evaluate.py")
    table = at.dataframe[0].value.set_index("run_id")
    assert table.loc[a, "label"] == "baseline" and table.loc[b, "label"] == f"small_cnn · {b[-4:]}"
    assert at.dataframe[0].proto.placeholder == "—"


def test_download_panel_keeps_its_result_open_and_its_form_filled(home):
    store = RunStore()

    def script():
        from dashboard.download_panel import download_panel
        download_panel()
    at = AppTest.from_function(script, default_timeout=30).run()
    assert not at.exception, at.exception
    at.text_input(key="download_csv").set_value("/data/gld/train.csv")
    at.number_input(key="download_top").set_value(7).run()
    out = str(home / "datasets" / "g")
    job_id = store.add_job("download", {"csv": "/data/gld/train.csv", "out": out, "top": 7})
    store.set_job(job_id, status="running", pid=os.getpid(), heartbeat=time.time(), progress={"done": 1, "total": 9})
    at.run()                                                        # running: progress, the form is not drawn
    assert at.expander[0].proto.expanded and "download_csv" not in [w.key for w in at.text_input]
    store.set_job(job_id, status="done", finished=time.time(),
                  result={"on_disk": 9, "listed": 9, "classes": 7, "fetched": 9, "seconds": 3})
    at.run()                                                        # ended: open on its result, form as typed
    assert not at.exception, at.exception
    assert at.session_state["download_open"] is True and at.expander[0].proto.expanded
    assert any("9 of 9 images of the top 7 classes" in s.value for s in at.success)
    assert at.text_input(key="download_csv").value == "/data/gld/train.csv"
    assert at.number_input(key="download_top").value == 7


def test_train_form_comes_back_from_the_url_and_records_the_parent(home, demo_root, monkeypatch):
    shutil.copytree(demo_root, home / "datasets" / "demo")
    store = RunStore()
    parent = done_run(store, demo_root, name="baseline")
    launched = []
    monkeypatch.setattr("core.runs.jobs.launch", lambda cfg, s: launched.append(cfg) or "queued-run")
    # what the browser's address holds after a reload (a select box: its option as shown)
    at = open_page("train.py", train_lr="0.0123", train_epochs="7", train_optimizer="SGD (momentum 0.9)", train_aug_vflip="true")
    assert at.number_input(key="train_lr").value == pytest.approx(0.0123)
    assert at.number_input(key="train_epochs").value == 7 and at.selectbox(key="train_optimizer").value == "sgd"
    assert at.checkbox(key="train_aug_vflip").value is True
    at.session_state["train_parent"] = parent                      # as "Train again like this" leaves it
    at.radio(key="train_weights").set_value("none")
    at.number_input(key="train_classes").set_value(3)
    at.button(key="train_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (cfg,) = launched
    assert cfg.extra == {"parent": parent} and cfg.lr == pytest.approx(0.0123) and cfg.epochs == 7
