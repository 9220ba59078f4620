"""Runs page (AppTest): table, selected run's curves and final metrics, cancel / resume /
delete through the page's buttons, a failed run's error and log tail, a dead worker."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.runs.store import ACTIVE, RunStore
from tests.conftest import tiny_config

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def open_runs() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("../pages/runs.py")  # relative to dashboard/, before the first run: skips the default page
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def table_ids(at) -> list[str]:
    return at.dataframe[0].value["run_id"].tolist()


def pick(at, run_id: str) -> AppTest:
    at.selectbox(key="runs_pick").set_value(run_id).run()
    assert not at.exception, at.exception
    return at


def metric(at, label: str) -> str:
    """A metric's value by its label without the image count ('Holdout accuracy (on 12 images)')."""
    return next(m.value for m in at.metric if m.label.split(" (on ")[0] == label)


def button(at, key: str):
    return at.button(key=key)


def test_empty_home_shows_friendly_info():
    at = open_runs()
    assert "No runs yet" in texts(at, "info")
    assert not at.dataframe


def test_table_lists_runs_and_selected_run_shows_curves_and_final_metrics(use_trained_home):
    _, (a, b) = use_trained_home
    store = RunStore()
    at = open_runs()
    assert set(table_ids(at)) == {a, b}
    # one validation accuracy (issue 21): the last epoch's, the checkpoint's, as the final evaluation reports it
    assert at.dataframe[0].value.set_index("run_id").loc[a, "val_last"] == f"{store.get(a)['summary']['val_acc']:.3f}"
    assert at.selectbox(key="runs_pick").value == b  # newest run, none active
    assert len(at.get("plotly_chart")) == 4  # accuracy and loss per epoch, loss per step, learning rate
    pick(at, a)
    assert metric(at, "Holdout accuracy") == f"{store.get(a)['summary']['holdout_acc']:.3f}"
    assert metric(at, "Holdout GAP") == f"{store.get(a)['summary']['holdout_gap']:.3f}"
    at.run()  # the selection survives reruns
    assert at.selectbox(key="runs_pick").value == a


def test_resume_a_cancelled_run_continues_without_duplicate_epochs(use_trained_home, monkeypatch):
    from tests.conftest import jobs_here
    here = jobs_here(monkeypatch, defer=True)            # the job the page starts runs here, once checked
    _, (_, b) = use_trained_home
    store = RunStore()
    epochs = store.epochs(b)["epoch"].tolist()
    store.set(b, status="cancelled")
    at = open_runs()
    assert at.dataframe[0].value.set_index("run_id").loc[b, "status_label"] == "⏹️ cancelled"
    button(at, "runs_resume").click().run()
    assert not at.exception, at.exception
    assert store.get(b)["status"] in ACTIVE
    assert "runs_cancel" in [w.key for w in at.button]
    assert here.run() == 1
    run = store.get(b)          # all epochs are done: the job only re-evaluates
    assert run["status"] == "done", run["error"]
    assert store.epochs(b)["epoch"].tolist() == epochs
    at.run()
    assert metric(at, "Holdout accuracy") == f"{run['summary']['holdout_acc']:.3f}"


def test_cancel_queued_run_and_delete_refuses_a_running_one(use_trained_home, demo_root):
    store = RunStore()
    busy = store.create(tiny_config(demo_root), status="running")  # holds the CPU slot: a live pid
    store.set(busy, pid=os.getpid(), heartbeat=time.time())
    waiting = store.create(tiny_config(demo_root, classes=3), status="queued")
    at = open_runs()
    assert at.selectbox(key="runs_pick").value == waiting  # the newest active run
    assert store.get(waiting)["status"] == "queued"
    button(at, "runs_cancel").click().run()
    assert store.get(waiting)["status"] == "cancelled"
    pick(at, busy)
    at.checkbox(key=f"runs_confirm_{busy}").check().run()
    button(at, "runs_delete").click().run()
    assert "still running" in texts(at, "error")
    assert store.get(busy) is not None


def test_delete_needs_confirmation(use_trained_home):
    _, (a, b) = use_trained_home
    store = RunStore()
    at = pick(open_runs(), a)
    button(at, "runs_delete").click().run()
    assert "nothing was deleted" in texts(at, "warning")
    assert store.get(a) is not None and store.run(a).dir.exists()
    at.checkbox(key=f"runs_confirm_{a}").check().run()
    button(at, "runs_delete").click().run()
    assert not at.exception, at.exception
    assert store.get(a) is None and not store.run(a).dir.exists()
    assert table_ids(at) == [b]
    assert at.selectbox(key="runs_pick").value == b


def test_failed_run_shows_error_and_log_tail(use_trained_home):
    _, (a, _) = use_trained_home
    store = RunStore()
    store.set(a, status="failed", error="Boom: something")
    (store.run(a).dir / "log.txt").write_text("\n".join(f"log line {i}" for i in range(100)))
    at = pick(open_runs(), a)
    assert "Boom: something" in texts(at, "error")
    log = texts(at, "code")
    assert "log line 99" in log and "log line 60" in log and "log line 59" not in log
    assert "runs_resume" in [w.key for w in at.button]  # it has a checkpoint


def test_dead_worker_shows_as_interrupted(use_trained_home):
    _, (a, _) = use_trained_home
    store = RunStore()
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    store.set(a, status="running", pid=p.pid, heartbeat=time.time() - 60)
    at = pick(open_runs(), a)
    assert store.get(a)["status"] == "interrupted"
    assert "⚠️ interrupted" in at.dataframe[0].value.set_index("run_id").loc[a, "status_label"]
    assert "Resume" in texts(at, "warning")
    assert "runs_resume" in [w.key for w in at.button]


@pytest.fixture(autouse=True)
def _no_stray_workers():
    yield
    for run in RunStore().list():  # a test that failed half-way must not leave a worker running
        if run["status"] in ("starting", "running") and run["pid"] and run["pid"] != os.getpid():
            try:
                os.kill(int(run["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_evaluate_button_opens_evaluate_on_the_selected_run(use_trained_home):
    _, (a, b) = use_trained_home
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120).run()
    at.switch_page("../pages/evaluate.py").run()
    other = b if at.selectbox(key="eval_run").value == a else a   # not the page's default (best) run
    at = AppTest.from_file(str(app), default_timeout=120).run()
    at.switch_page("../pages/runs.py").run()
    pick(at, other)
    at.button(key=f"runs_evaluate_{other}").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="eval_run").value == other
    assert any(m.label.startswith("Accuracy") for m in at.metric)


def test_name_notes_and_train_again_like_this(use_trained_home):
    _, (a, b) = use_trained_home
    at = open_runs()
    pick(at, b)
    at.text_input(key=f"runs_name_{b}").input("three classes")       # form fields: sent with the submit
    at.text_area(key=f"runs_notes_{b}").input("smaller head, 2 epochs")
    at.button[[x.label for x in at.button].index("Save name and notes")].click().run()
    assert not at.exception, at.exception
    run = RunStore().get(b)
    assert run["name"] == "three classes" and run["notes"] == "smaller head, 2 epochs"
    assert "three classes ·" in at.selectbox(key="runs_pick").format_func(b)
    cfg = run["config"]
    at.button(key="runs_again").click().run()                      # the Train form holds b's whole config
    assert not at.exception, at.exception
    ss = at.session_state
    assert ss["train_model"] == cfg["model"] and ss["train_classes"] == cfg["classes"] == 3
    assert ss["train_epochs"] == cfg["epochs"] and ss["train_size"] == cfg["image_size"]
    assert ss["train_weights"] == "none" and ss["train_lr"] == cfg["lr"]
    assert any("configuration of the run you chose" in str(i.value) for i in at.info)
    assert at.number_input(key="train_classes").value == 3


def test_runs_page_offers_the_model_download(use_trained_home):
    _, (a, b) = use_trained_home
    at = open_runs()
    pick(at, a)
    assert any(e.label.startswith("Download the model") for e in at.expander)


def test_a_run_on_every_class_shows_how_many(demo_root):
    from core.runs.jobs import run_job
    from dashboard.common import classes_text
    store = RunStore()
    run_id = store.create(tiny_config(demo_root, classes=0, epochs=1), status="running")
    assert classes_text(store.get(run_id)) == "all"                 # not started: the count is not known yet
    assert run_job(store, run_id)["status"] == "done"
    run = store.get(run_id)
    assert run["classes"] == 0 and run["classes_all"] == 4 and classes_text(run) == "all 4"
    at = open_runs()
    assert at.dataframe[0].value.set_index("run_id").loc[run_id, "classes"] == "4"       # one form: the count
    assert "all 4 classes" in at.selectbox(key="runs_pick").format_func(run_id)
    assert "0 classes" not in texts(at, "markdown")


# ------------------------------------------------------------------ loss curves: log scale, smoothing, colours

def _spec(at, i: int) -> dict:
    import json
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def _arr(v):
    """A plotly array from a figure spec (plotly sends numeric arrays base64-packed)."""
    import base64

    import numpy as np
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v, dtype=float)


def _tensorboard_ema(values, weight):
    """TensorBoard's smoothing written out: a debiased exponential moving average."""
    out, last, num = [], 0.0, 0
    for v in values:
        last, num = last * weight + (1 - weight) * v, num + 1
        out.append(last / (1 - weight ** num))
    return out


def test_loss_curves_log_toggle_smoothing_and_distinct_colours(use_trained_home):
    _, (a, b) = use_trained_home
    loss = RunStore().steps(b)["loss"].tolist()
    at = open_runs()
    acc, ep_loss, steps = (_spec(at, i) for i in range(3))
    assert ep_loss["layout"]["yaxis"]["type"] == "linear" and steps["layout"]["yaxis"]["type"] == "linear"
    for fig in (acc, ep_loss):                                # train solid, val dashed, in other hues
        train, val = fig["data"]
        assert train["line"]["color"] != val["line"]["color"]
        assert val["line"]["dash"] == "dash" and train["line"].get("dash") in (None, "solid")
    raw, smoothed = steps["data"]                             # raw faint and thin, smoothed bold, other colour
    assert raw["line"]["color"] != smoothed["line"]["color"] and raw["opacity"] < 1
    assert raw["line"]["width"] < smoothed["line"]["width"]
    assert at.slider(key="runs_smoothing").value == pytest.approx(0.9)
    assert _arr(smoothed["y"]) == pytest.approx(_tensorboard_ema(loss, 0.9))
    assert _arr(raw["y"]) == pytest.approx(loss)

    at.toggle(key="runs_log_loss").set_value(True).run()
    assert not at.exception, at.exception
    assert _spec(at, 1)["layout"]["yaxis"]["type"] == "log" and _spec(at, 2)["layout"]["yaxis"]["type"] == "log"
    assert _spec(at, 0)["layout"]["yaxis"]["type"] == "linear"          # accuracy stays linear

    at.slider(key="runs_smoothing").set_value(0.5).run()
    assert not at.exception, at.exception
    y = _arr(_spec(at, 2)["data"][1]["y"])
    assert y == pytest.approx(_tensorboard_ema(loss, 0.5)) and y != pytest.approx(_tensorboard_ema(loss, 0.9))
    at.slider(key="runs_smoothing").set_value(0.0).run()
    (only,) = _spec(at, 2)["data"]                            # no smoothing: the raw loss alone, bold
    assert _arr(only["y"]) == pytest.approx(loss)
    pick(at, a)                                               # the choices hold for another run
    assert at.toggle(key="runs_log_loss").value and at.slider(key="runs_smoothing").value == 0.0
    assert _spec(at, 1)["layout"]["yaxis"]["type"] == "log"
