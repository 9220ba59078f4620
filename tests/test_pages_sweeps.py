"""Sweeps page (AppTest): a study built without training (Optuna trials asked and told by hand:
complete, pruned, failed, waiting) shows its status, best, charts, importance, trial table and
links; the launch forms turn bad input into one sentence; the poster's preset; a 120-trial study
renders quickly; a reproduce-kind study shows the poster's table beside this run's numbers."""
import json
import random
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.runs import jobs, reproduce, sweeps
from core.runs.store import RunStore
from tests.conftest import tiny_config

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
SPACE = ["lr=0.01,0.001", "optimizer=adam,sgd", "batch_size=16,32"]


def open_sweeps(sweep: str | None = None, tab: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("../pages/sweeps.py")
    if sweep:
        at.query_params["sweep"] = sweep
    if tab:
        at.session_state["sweeps_tab"] = tab
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def chart_specs(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def links(at) -> dict[str, str]:
    return {link.proto.label: link.proto.query_string for link in at.page_link}


def play(name: str, outcomes: list[tuple]) -> None:
    """Take the sweep's waiting trials in order and end each as told:
    (state, value, curve {epoch: val_acc}, user attrs)."""
    from optuna.trial import TrialState as TS
    study = sweeps.load(name)
    space = study.user_attrs["space"]
    for state, value, curve, attrs in outcomes:
        trial = study.ask()                       # pops the next enqueued grid configuration
        for n, values in space.items():
            trial.suggest_categorical(n, values)  # returns the configuration's fixed value
        for epoch, acc in curve.items():
            trial.report(acc, epoch)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if state == "complete":
            study.tell(trial, value)
        else:
            study.tell(trial, state={"pruned": TS.PRUNED, "failed": TS.FAIL}[state])


@pytest.fixture
def fig2(demo_root):
    """A grid of 8 configurations: 5 complete, 1 pruned after epoch 2, 1 failed, 1 waiting."""
    sweeps.create("fig2", tiny_config(demo_root), sweeps.parse_space(SPACE), "grid", prune=True)
    play("fig2", [
        ("complete", 0.70, {1: 0.5, 2: 0.6, 3: 0.70}, {"run_id": "run-a"}),
        ("complete", 0.55, {1: 0.4, 2: 0.5, 3: 0.55}, {"run_id": "run-b"}),
        ("complete", 0.90, {1: 0.6, 2: 0.8, 3: 0.90}, {"run_id": "run-c"}),
        ("pruned", None, {1: 0.2, 2: 0.25}, {"run_id": "run-d", "pruned_at": 2}),
        ("failed", None, {1: 0.3}, {"run_id": "run-e", "error": "out of memory"}),
        ("complete", 0.60, {1: 0.3, 2: 0.5, 3: 0.60}, {"run_id": "run-f"}),
        ("complete", 0.40, {1: 0.2, 2: 0.3, 3: 0.40}, {"run_id": "run-g"}),
    ])
    return "fig2"


def test_results_show_status_best_charts_table_and_links(fig2):
    at = open_sweeps(fig2)
    assert at.selectbox(key="sweeps_pick").value == "fig2"
    status = texts(at, "markdown")
    assert "**7/8** ended" in status and "✅ 5 complete" in status and "✂️ 1 pruned" in status
    assert "❌ 1 failed" in status and "⏳ 1 waiting" in status
    assert "No driver is working on this sweep" in texts(at, "warning")   # one waiting, nothing drives it
    best = texts(at, "success")
    assert "Best: trial #2" in best and "0.900" in best and "lr=0.01, optimizer=sgd, batch_size=16" in best
    specs = chart_specs(at)
    assert len(specs) == 5        # bars, heatmap, importance, parallel coordinates, curves
    bars = specs[0]["data"]
    hovers = [h for t in bars for h in (t.get("hovertext") or [])]
    assert any("pruned after epoch 2" in h for h in hovers)
    assert any("out of memory" in h for h in hovers)
    assert any(t.get("marker", {}).get("pattern", {}).get("shape") for t in bars)   # hatching
    curves = specs[4]["data"]
    assert {t["name"].split(" (")[0].split(" ")[-1] for t in curves} >= {"complete", "pruned", "failed", "best"}
    assert next(t for t in curves if "pruned" in t["name"])["line"]["dash"] == "dash"
    assert "importance" in json.dumps(specs[2]["layout"])
    table = at.dataframe[0].value
    assert len(table) == 8 and set(table["run_id"].dropna()) == {f"run-{c}" for c in "abcdefg"}
    assert table.iloc[0]["run_id"] == "run-c" and table.iloc[0]["state"].startswith("★")
    assert links(at)["Open the best in Evaluate"] == "run=run-c"
    at.selectbox(key="sweeps_open").set_value(0).run()     # trial #0 (run-a): compare with the best
    assert links(at)["Compare with the best"] == "runs=run-c%2Crun-a"
    at.selectbox(key="sweeps_color").set_value("optimizer").run()
    assert {t["name"] for t in chart_specs(at)[0]["data"]} >= {"optimizer=adam", "optimizer=sgd", "❌ failed"}
    assert not at.exception


def test_importance_needs_three_finished_trials(demo_root):
    sweeps.create("two", tiny_config(demo_root), sweeps.parse_space(["lr=0.01,0.001"]), "grid")
    play("two", [("complete", 0.5, {1: 0.5}, {"run_id": "r1"}), ("complete", 0.6, {1: 0.6}, {"run_id": "r2"})])
    at = open_sweeps("two")
    assert "cannot tell which parameter mattered yet" in texts(at, "caption")
    assert "heatmap needs two searched parameters" in texts(at, "caption")
    assert "🏁 finished" in texts(at, "caption")


def test_train_best_again_and_continue_and_cancel(fig2, monkeypatch):
    launched, submitted = [], []
    real_launch = jobs.launch
    monkeypatch.setattr(jobs, "launch", lambda cfg, store: launched.append(cfg) or real_launch(cfg, store, start=False))
    monkeypatch.setattr(jobs, "submit", lambda store, kind, args, **kw: submitted.append((kind, args)) or "job-1")
    at = open_sweeps(fig2)
    at.button(key="sweeps_retrain").click().run()
    assert not at.exception, at.exception
    (cfg,) = launched
    assert (cfg.lr, cfg.optimizer, cfg.batch_size, cfg.holdout) == (0.01, "sgd", 16, 0.05)
    run_id = RunStore().list()[0]["run_id"]
    assert run_id in texts(at, "info")
    assert links(at)["Follow it on the Runs page"] == f"run={run_id}"

    at.button(key="sweeps_continue").click().run()        # one configuration still waits
    assert submitted == [("sweep", {"name": "fig2", "storage": None})]
    assert "continues" in texts(at, "success")
    at.button(key="sweeps_cancel").click().run()
    assert sweeps.info("fig2")["cancelled"]
    assert "cancelled" in texts(at, "caption")


def test_launch_form_bad_grid_line_shows_one_sentence(home, demo_root):
    shutil.copytree(demo_root, home / "datasets" / "demo")
    at = open_sweeps()                   # no sweep yet: the New sweep tab opens
    assert "No sweeps yet" not in texts(at, "info") and at.text_area(key="sw_grid")
    for bad, says in (("lr=fast", "'fast' is not a valid value for lr"),
                      ("learning=0.1", "'learning' cannot be searched"),
                      ("lr 0.1", "is not NAME=V1,V2"),
                      ("", "Type at least one line")):
        at.text_area(key="sw_grid").set_value(bad)
        at.button(key="sw_launch").click().run()
        assert not at.exception, at.exception
        assert len(at.error) == 1 and says in at.error[0].value, (bad, texts(at, "error"))
        assert at.error[0].value.count(". ") == 0          # one sentence
    assert sweeps.names() == []


def test_poster_grid_preset_fills_the_grid(home, demo_root):
    shutil.copytree(demo_root, home / "datasets" / "demo")
    at = open_sweeps(tab="New sweep")
    at.button(key="sw_poster_grid").click().run()
    assert at.text_area(key="sw_grid").value.splitlines() == [
        "lr=0.01,0.005,0.001", "optimizer=adam,sgd", "batch_size=16,24,32,48,96", "epochs=1,3,5,10"]
    assert at.selectbox(key="sw_sampler").value == "grid"
    assert "epochs=1,3,5,10" in texts(at, "info") and "120 runs" in texts(at, "info")


def test_launch_form_creates_the_sweep_and_shows_it(home, demo_root, monkeypatch):
    shutil.copytree(demo_root, home / "datasets" / "demo")
    submitted = []
    monkeypatch.setattr(jobs, "submit", lambda store, kind, args, **kw: submitted.append((kind, args)) or "job-1")
    at = open_sweeps(tab="New sweep")
    at.selectbox(key="sw_model").set_value("small_cnn").run()
    assert at.selectbox(key="sw_weights").value == "none"
    at.text_area(key="sw_grid").set_value("lr=0.01,0.001\n# a comment\noptimizer=adam")
    at.number_input(key="sw_classes").set_value(4)
    at.number_input(key="sw_size").set_value(32)
    at.text_input(key="sw_name").set_value("mine")
    at.button(key="sw_launch").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at, "error")
    assert submitted == [("sweep", {"name": "mine", "storage": None})]
    info = sweeps.info("mine")
    assert info["planned"] == 2 and info["counts"]["waiting"] == 2 and info["base"]["image_size"] == 32
    assert at.selectbox(key="sweeps_pick").value == "mine"          # the Results tab shows it
    assert "**0/2** ended" in texts(at, "markdown")
    assert at.query_params["sweep"] in ("mine", ["mine"])


def test_a_120_trial_study_renders_and_is_cached(demo_root, monkeypatch):
    from optuna.trial import TrialState as TS
    from optuna.trial import create_trial
    space = sweeps.parse_space(["lr=0.0001:0.1", "optimizer=adam,sgd", "batch_size=16,24,32,48,96"])
    sweeps.create("big", tiny_config(demo_root), space, "random", 120, prune=True)
    study = sweeps.load("big")
    dists = sweeps._distributions(space)
    rng = random.Random(0)
    trials = []
    for i in range(120):               # (Optuna writes each trial through its ORM: ~30 ms a trial)
        params = {"lr": 10 ** rng.uniform(-4, -1), "optimizer": rng.choice(["adam", "sgd"]),
                  "batch_size": rng.choice([16, 24, 32, 48, 96])}
        curve = {e: rng.random() for e in (1, 2, 3)}
        state = TS.PRUNED if i % 7 == 3 else TS.FAIL if i % 29 == 5 else TS.COMPLETE
        attrs = {"run_id": f"run-{i}", **({"pruned_at": 2} if state == TS.PRUNED else {})}
        trials.append(create_trial(params=params, distributions=dists, intermediate_values=curve, state=state,
                                   value=curve[3] if state == TS.COMPLETE else None, user_attrs=attrs))
    study.add_trials(trials)
    estimated = []
    real = sweeps.importance
    monkeypatch.setattr(sweeps, "importance", lambda name, *a, **k: estimated.append(name) or real(name, *a, **k))
    at = open_sweeps("big")          # cold: the study read, fANOVA importance
    assert "**120/120** ended" in texts(at, "markdown")
    assert len(at.dataframe[0].value) == 120 and len(at.get("plotly_chart")) == 5
    at.run()                          # warm: nothing estimated again until the study changes
    assert not at.exception and estimated == ["big"]
    # (how long a warm render of many trials takes is a benchmark's business: bench/sweeps.py)


def test_reproduce_sweep_shows_the_table_beside_the_posters(demo_root):
    base = tiny_config(demo_root, model="resnet18", classes=10)
    configs = [{"model": "resnet18", "classes": 10}, {"model": "efficientnet_lite0", "classes": 10}]
    meta = {"rows": [["resnet18", 10], ["vgg16", 10]], "stand_in": {"vgg16": "efficientnet_lite0"}, "quick": True}
    sweeps.create("poster-table-quick-10", base, configs=configs, kind="reproduce", meta=meta)
    store = RunStore()
    run_id = store.create(tiny_config(demo_root, model="resnet18", classes=4), status="done")
    store.set(run_id, summary={"train_acc": 0.95, "val_acc": 0.91, "holdout_acc": 0.9})
    for epoch, acc in ((1, 0.7), (2, 0.91)):      # without pruning Optuna holds no curve: the run's is drawn
        store.log_epoch(run_id, {"epoch": epoch, "val_acc": acc})
    from optuna.trial import TrialState as TS
    study = sweeps.load("poster-table-quick-10")
    trial = study.ask()                       # the resnet18 row: done; the stand-in row: still waiting
    trial.set_user_attr("run_id", run_id)
    study.tell(trial, 0.91)
    assert TS.WAITING in {t.state for t in study.get_trials()}
    at = open_sweeps("poster-table-quick-10")
    table = at.dataframe[0].value
    assert table["model"].tolist() == ["resnet18", "vgg16"]
    r = table.iloc[0]
    assert (r["poster_train"], r["poster_val"], r["poster_holdout"]) == reproduce.POSTER[("resnet18", 10)]
    assert (r["holdout"], r["run_id"]) == (0.9, run_id) and r["holdout_diff"] == pytest.approx(0.9 - 0.988)
    assert table.iloc[1]["poster_holdout"] == 0.941 and table.iloc[1]["trained"] == "efficientnet_lite0 (stand-in)"
    assert "Stand-in" in texts(at, "info") and "Quick mode" in texts(at, "caption")
    ls = links(at)
    assert ls["Fig. 3: confusion matrix at 10 classes"] == f"run={run_id}"
    assert ls["resnet18 · 10 classes"] == f"run={run_id}"
    assert {b.proto.label for b in at.get("download_button")} == {"⬇️ CSV", "⬇️ Markdown"}
    best = next(t for t in chart_specs(at)[-1]["data"] if t["name"].startswith("★"))
    assert [y for y in best["y"] if y is not None] == [0.7, 0.91]


def test_poster_tab_lists_the_posters_numbers(home, demo_root):
    shutil.copytree(demo_root, home / "datasets" / "demo")
    at = open_sweeps(tab="Poster's table")
    rows = at.dataframe[0].value
    assert len(rows) == 6 and 0.988 in rows["holdout"].tolist()
    assert at.multiselect(key="rp_classes").value == [10, 20, 30, 50]
    assert at.button(key="rp_launch")


def test_poster_form_queues_the_table_as_a_reproduce_sweep(home, demo_root, monkeypatch):
    shutil.copytree(demo_root, home / "datasets" / "demo")
    submitted = []
    monkeypatch.setattr(jobs, "submit", lambda store, kind, args, **kw: submitted.append((kind, args)) or "job-1")
    monkeypatch.setattr(reproduce, "_imagenet_ok", lambda model: model != "vgg16")     # offline: no VGG weights
    at = open_sweeps(tab="Poster's table")
    at.toggle(key="rp_quick").set_value(False)
    at.multiselect(key="rp_classes").set_value(["ten"])
    at.button(key="rp_launch").click().run()         # (a 4-class demo and the poster's 10-50: test_defaults_fit)
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["Classes must be whole numbers, such as 10 or 20."] and not submitted
    at.multiselect(key="rp_classes").set_value(["3", 4])
    at.multiselect(key="rp_models").set_value(["small_cnn", "vgg16"])
    at.button(key="rp_launch").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at, "error")
    (kind, args), = submitted
    info = sweeps.info(args["name"])
    assert kind == "sweep" and info["kind"] == "reproduce" and info["planned"] == 4
    assert info["meta"]["stand_in"] == {"vgg16": reproduce.STAND_IN}
    assert at.selectbox(key="sweeps_pick").value == args["name"]
    assert at.dataframe[0].value["trained"].tolist().count(f"{reproduce.STAND_IN} (stand-in)") == 2
