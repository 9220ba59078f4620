"""What TensorBoard, W&B and optuna-dashboard users look for (issue 21): run tags (CLI, Runs page,
kept by `runs rebuild`), the runs table grouped, each run's CPU and memory use; Optuna's optimization
history, slice and contour plots and per-trial notes on the Sweeps page."""
import json
import time

import pytest
import torch

from core import cli
from core.runs import sweeps
from core.runs.store import RunStore
from core.train.engine import resource_use
from tests.conftest import tiny_config
from tests.test_defaults_fit import open_page     # the page as a new user opens it, with state set first


def made_runs(tmp_path) -> tuple[str, str, str]:
    """Three finished runs without training: two small_cnn (val acc 0.5, 0.75), one resnet18 (0.6)."""
    store = RunStore()
    ids = []
    for model, acc in (("small_cnn", 0.5), ("small_cnn", 0.75), ("resnet18", 0.6)):
        run_id = store.create(tiny_config(tmp_path, model=model), status="done")
        store.set(run_id, summary={"val_acc": acc, "seconds": 4.0})
        store.log_epoch(run_id, {"epoch": 1, "val_acc": acc, "seconds": 4.0, "cpu_s": 6.0, "rss_mb": 512.0})
        ids.append(run_id)
    return tuple(ids)


def test_tags_by_cli_survive_rebuild_and_filter_and_group_the_runs_page(tmp_path, capsys):
    a, b, c = made_runs(tmp_path)
    assert cli.main(["runs", "tag", a, "baseline"]) == 0 and cli.main(["runs", "tag", b, "baseline"]) == 0
    assert cli.main(["runs", "tag", b, "keep", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"run_id": b, "tags": ["baseline", "keep"]}
    assert cli.main(["runs", "tag", a, "baseline", "--remove"]) == 0
    assert cli.main(["runs", "tag", a, "a,b"]) == 2
    assert "'a,b' is not a usable tag" in capsys.readouterr().err
    RunStore.rebuild()                                     # the tags are in run.json: a rebuild keeps them
    assert [RunStore().get(r)["tags"] for r in (a, b, c)] == [[], ["baseline", "keep"], []]

    at = open_page("runs", runs_tags_filter=["baseline"])
    assert at.dataframe[0].value["run_id"].tolist() == [b]
    assert at.dataframe[0].value["tags"].tolist() == ["baseline, keep"]
    assert at.selectbox(key="runs_pick").value == c          # the newest run: its resource use and tags field
    assert any("CPU 6s (1.5 cores busy)" in m.value and "peak memory 512 MiB" in m.value for m in at.markdown)
    at.multiselect(key="runs_tags_filter").set_value([])
    at.selectbox(key="runs_group").set_value("model")
    at.multiselect(key=f"runs_tags_{c}").set_value(["new one"]).run()
    assert not at.exception, at.exception
    assert RunStore().get(c)["tags"] == ["new one"]
    groups = at.dataframe[0].value.set_index("model")
    assert groups.loc["small_cnn", "runs"] == 2 and groups.loc["small_cnn", "best_val"] == pytest.approx(0.75)
    assert groups.loc["resnet18", "runs"] == 1 and groups.loc["resnet18", "best_val"] == pytest.approx(0.6)


def test_resource_use_counts_cpu_seconds_and_peak_memory():
    cpu0 = __import__("os").times()
    start = cpu0.user + cpu0.system
    t = time.process_time() + 0.05
    while time.process_time() < t:        # burn 50 ms of CPU
        pass
    use = resource_use(torch.device("cpu"), start)
    assert 0.04 <= use["cpu_s"] < 5 and use["rss_mb"] > 50 and use["gpu_mb"] is None


@pytest.fixture
def small_study(demo_root):
    """Six finished trials over lr and batch size, made with create_trial (no training)."""
    from optuna.trial import create_trial
    space = sweeps.parse_space(["lr=0.01,0.001,0.0001", "batch_size=16,32"])
    sweeps.create("small", tiny_config(demo_root), space, "random", 6)
    study = sweeps.load("small")
    dists = sweeps._distributions(space)
    values = [(0.01, 16, 0.5), (0.001, 16, 0.7), (0.0001, 16, 0.4), (0.01, 32, 0.55), (0.001, 32, 0.9),
              (0.0001, 32, 0.45)]
    study.add_trials([create_trial(params={"lr": lr, "batch_size": bs}, distributions=dists, value=v,
                                   user_attrs={"run_id": f"run-{i}"}) for i, (lr, bs, v) in enumerate(values)])
    return "small"


def test_history_slice_contour_on_demand_and_a_trial_note(small_study):
    # (closed, the expander draws nothing: test_pages_sweeps counts the charts of a 120-trial study)
    at = open_page("sweeps", sweeps_pick=small_study, sweeps_optuna=True)
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(figs) == 8                                  # the page's five, then history, slices, contour
    history = next(f for f in figs if any(t.get("name") == "Best Value" for t in f["data"]))
    best = next(t for t in history["data"] if t.get("name") == "Best Value")
    assert best["y"] == [0.5, 0.7, 0.7, 0.7, 0.9, 0.9]      # the best so far, trial by trial
    slices = next(f for f in figs if "Slice" in json.dumps(f["layout"].get("title", "")))
    assert {slices["layout"]["xaxis"]["title"]["text"], slices["layout"]["xaxis2"]["title"]["text"]} == \
        {"lr", "batch_size"}
    contour = next(f for f in figs if any(t.get("type") == "contour" for t in f["data"]))
    assert {contour["layout"]["xaxis"]["title"]["text"], contour["layout"]["yaxis"]["title"]["text"]} == \
        {"lr", "batch_size"}

    assert at.selectbox(key="sweeps_open").value == 4       # the best trial is picked first
    at.text_area(key="sweeps_note_small_4").set_value("  best: try lr 0.002 next  ")
    at.button(key="FormSubmitter:sweeps_note_form_small_4-Save note").click().run()
    assert not at.exception, at.exception
    assert sweeps.info("small")["configs"][4]["note"] == "best: try lr 0.002 next"
    table = at.dataframe[0].value.set_index("trial")
    assert table.loc[4, "note"] == "best: try lr 0.002 next" and table["note"].notna().sum() == 1
