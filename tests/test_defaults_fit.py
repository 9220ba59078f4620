"""Defaults that fit the data set in use (issue 20): the class count a new run, sweep or reproduce
starts from; how many images each figure rests on, and the warning when a holdout is too small to
read; the poster's table offline, where two models fall back to one stand-in and share one run."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.data.splits import MIN_HOLDOUT_PER_CLASS, split, split_sizes, thin_holdout
from core.errors import UserError
from core.runs import jobs, reproduce, sweeps
from core.runs.store import RunStore
from core.train.config import default_classes

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
STAND_IN = reproduce.STAND_IN


def open_page(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(f"../pages/{page}.py")
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


# ------------------------------------------------------------------ the rules in core

def test_the_default_class_count_is_the_posters_or_every_class_of_a_smaller_set():
    assert [default_classes(n) for n in (2, 4, 10, 11, 81313)] == [2, 4, 10, 10, 10]


@pytest.mark.parametrize("holdout,val,max_images", [(0.01, 0.2, 0), (0.05, 0.2, 0), (0.3, 0.5, 0), (0.01, 0.2, 300)])
def test_split_sizes_are_what_the_split_gives(holdout, val, max_images):
    """The Train form's numbers come from the split's own per-class rule, not a second formula."""
    sizes = {"a": 60, "b": 41, "c": 7, "d": 3, "e": 2, "f": 1}       # uneven, and classes too small for a holdout
    counts = pd.Series(sizes)
    samples = pd.DataFrame({"label": [label for label, n in sizes.items() for _ in range(n)]})
    want = split(samples, holdout, val, seed=0)["split"].value_counts().to_dict()
    got = split_sizes(counts, 0, holdout, val)
    assert got == {"classes": 6, **{s: want.get(s, 0) for s in ("holdout", "val", "train")}}
    top2 = split_sizes(counts, 2, holdout, val, max_images)
    picked = samples[samples["label"].isin(["a", "b"])]
    if max_images:                                                   # the expected share of each class: all 101
        assert sum(top2[s] for s in ("holdout", "val", "train")) == 101
    else:
        assert top2 == {"classes": 2, **split(picked, holdout, val, 0)["split"].value_counts().to_dict()}


def test_a_thin_holdout_is_named_in_one_sentence():
    assert MIN_HOLDOUT_PER_CLASS == 5
    assert thin_holdout(4, 4, planned=True) == (
        "The holdout will hold 4 images for 4 classes (fewer than 5 per class): one image moves its accuracy by 25%, "
        "so read its figures as a rough check; a larger holdout fraction (or more images per class) makes them firmer.")
    assert thin_holdout(19, 4).startswith("The holdout holds 19 images for 4 classes")
    assert thin_holdout(20, 4) is None and thin_holdout(0, 4) is None      # enough; no holdout at all


def test_reproduce_runs_the_rows_the_data_set_holds_and_names_the_rest(monkeypatch):
    monkeypatch.setattr(reproduce, "_imagenet_ok", lambda model: True)
    _, _, configs, meta = reproduce.plan("/data", available=25)
    assert meta["rows"] == [["resnet18", 10], ["resnet18", 20], ["vgg16", 10], ["vgg16", 20]]
    assert meta["skipped"] == [["resnet18", 30], ["resnet18", 50]] and len(configs) == 4
    assert meta["note"] == "The data set has 25 classes, so the table skips resnet18 at 30 and 50 classes."
    name, cfg, configs, meta = reproduce.plan("/data", available=4)
    assert meta["rows"] == [["resnet18", 4], ["vgg16", 4]] and cfg.classes == 4 and name.endswith("-4")
    assert meta["note"] == ("The data set has 4 classes, so the table skips resnet18 at 10, 20, 30 and 50 and vgg16 "
                            "at 10 and 20 classes; resnet18 and vgg16 train on all 4 classes instead (the poster has "
                            "no numbers at 4).")
    _, _, _, meta = reproduce.plan("/data", available=50)
    assert meta["skipped"] == [] and meta["note"] is None and len(meta["rows"]) == 6
    with pytest.raises(UserError, match="^The data set has 1 class; the poster's table needs at least 2.$"):
        reproduce.plan("/data", available=1)


def test_rows_that_train_one_configuration_share_one_trial_and_say_so(monkeypatch):
    monkeypatch.setattr(reproduce, "_imagenet_ok", lambda model: False)          # offline: both fall back
    _, _, configs, meta = reproduce.plan("/data", [10], available=10)
    assert configs == [{"model": STAND_IN, "classes": 10}]                      # one trial, not two equal ones
    sweep = {"configs": [{"params": configs[0], "run_id": None, "state": "waiting"}]}
    rows = reproduce.table(sweep, RunStore(), [tuple(r) for r in meta["rows"]], meta["stand_in"])
    assert [r["same_as"] for r in rows] == [None, "resnet18"]
    assert reproduce.row_note(rows[1]) == f"same run as resnet18: both fell back to {STAND_IN}"
    monkeypatch.setattr(reproduce, "_imagenet_ok", lambda model: model != "resnet18")
    _, _, configs, meta = reproduce.plan("/data", [10], [STAND_IN, "resnet18"], available=10)
    rows = reproduce.table({"configs": [{"params": configs[0]}]}, RunStore(), [tuple(r) for r in meta["rows"]],
                           meta["stand_in"])
    assert len(configs) == 1 and reproduce.row_note(rows[1]) == f"same run as {STAND_IN}: resnet18 fell back to it"


# ------------------------------------------------------------------ reproduce offline, end to end

def test_reproduce_on_a_4_class_set_offline_finishes_with_its_table(demo_root, monkeypatch, capsys):
    """Offline, ResNet-18 and VGG-16 both fall back to the stand-in at all 4 classes: one run for both
    rows, the study finishes (it waited for ever for a second, dropped trial), the table says why."""
    from core.cli import main
    from test_runs_attacks import instant_training
    trained = []
    instant_training(monkeypatch, trained)
    monkeypatch.setattr(reproduce, "_imagenet_ok", lambda model: model == STAND_IN)   # as offline (test_sweeps asks)
    assert main(["reproduce", "--data", str(demo_root), "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["finished"] and len(trained) == 1
    rows = out["rows"]
    assert [(r["model"], r["classes"], r["trained"], r["status"]) for r in rows] == [
        ("resnet18", 4, STAND_IN, "done"), ("vgg16", 4, STAND_IN, "done")]
    assert rows[0]["run_id"] == rows[1]["run_id"] == trained[0][0]
    assert [r["same_as"] for r in rows] == [None, "resnet18"]
    assert out["skipped"][0] == ["resnet18", 10] and "train on all 4 classes instead" in out["note"]
    status = sweeps.info(out["name"])
    assert status["finished"] and status["planned"] == 1 and status["counts"]["complete"] == 1
    text = reproduce.markdown(reproduce.table(status, RunStore(), [("resnet18", 4), ("vgg16", 4)],
                                              {"resnet18": STAND_IN, "vgg16": STAND_IN}), note=out["note"])
    assert f"same run as resnet18: both fell back to {STAND_IN}" in text and out["note"] in text


# ------------------------------------------------------------------ pages

def test_train_form_defaults_to_the_data_sets_classes_and_warns_of_a_thin_holdout(home, demo_root, monkeypatch):
    shutil.copytree(demo_root, home / "datasets" / "demo")
    launched = []
    monkeypatch.setattr(jobs, "launch", lambda cfg, store, **kw: launched.append(cfg) or "run-1")
    at = open_page("train")
    assert at.number_input(key="train_classes").value == 4               # the demo has 4, not the poster's 10
    assert any(c.value == "With these settings: 188 training, 48 validation and 4 holdout images over 4 classes."
               for c in at.caption)
    assert [w.value for w in at.warning] == [thin_holdout(4, 4, planned=True)]
    at.number_input(key="train_holdout").set_value(0.1)
    at.button(key="train_launch").click().run()                          # launched, not refused
    assert not at.exception and not at.error
    assert [c.classes for c in launched] == [4]
    assert not at.warning                                                # 24 holdout images: 6 per class
    at.number_input(key="train_classes").set_value(3)
    at.button(key="train_launch").click().run()                          # a rerun: the default is not put back
    assert at.number_input(key="train_classes").value == 3               # a value of one's own is kept
    assert [c.classes for c in launched] == [4, 3]


def test_runs_and_evaluate_say_how_many_images_each_figure_rests_on(use_trained_home):
    _, (four, _) = use_trained_home
    store = RunStore()
    holdout = store.evals(four)["holdout"]
    n = holdout["n"]
    assert n < MIN_HOLDOUT_PER_CLASS * 4                                    # 5% of 60 per class: 3 each
    at = open_page("runs", runs_selected=four)
    at.selectbox(key="runs_pick").set_value(four).run()
    labels = {m.label: m.value for m in at.metric}
    assert labels[f"Holdout accuracy (on {n} images)"] == f"{store.get(four)['summary']['holdout_acc']:.3f}"
    assert f"Holdout top-5 (on {n} images)" in labels
    assert f"Val accuracy (on {store.evals(four)['val']['n']} images)" in labels
    assert [w.value for w in at.warning] == [thin_holdout(n, 4)]
    at.switch_page("../pages/evaluate.py")
    at.session_state["eval_run"] = four
    at.run()
    assert not at.exception, at.exception
    assert any(c.value == f"These figures rest on {n} holdout images over 4 classes: one image moves accuracy by "
                          f"{1 / n:.1%}." for c in at.caption)
    assert thin_holdout(n, 4) in [w.value for w in at.warning]


def test_sweep_and_reproduce_forms_fit_a_4_class_set(home, demo_root, monkeypatch):
    shutil.copytree(demo_root, home / "datasets" / "demo")
    submitted = []
    monkeypatch.setattr(jobs, "submit", lambda store, kind, args, **kw: submitted.append(args) or "job-1")
    monkeypatch.setattr(reproduce, "_imagenet_ok", lambda model: False)         # offline: one stand-in for both
    at = open_page("sweeps", sweeps_tab="New sweep")
    assert at.number_input(key="sw_classes").value == 4
    at.session_state["sweeps_tab"] = "Poster's table"
    at.run()
    at.button(key="rp_launch").click().run()                           # the poster's 10-50 on 4 classes
    assert not at.exception and not at.error, [e.value for e in at.error]
    (args,) = submitted
    info = sweeps.info(args["name"])
    assert info["planned"] == 1 and info["meta"]["rows"] == [["resnet18", 4], ["vgg16", 4]]
    assert info["meta"]["note"] in [i.value for i in at.info]
    table = at.dataframe[0].value
    assert table["shared"].fillna("").tolist() == ["", f"same run as resnet18: both fell back to {STAND_IN}"]


def test_cli_train_and_sweep_default_to_the_data_sets_classes(demo_root):
    """Without --classes, `train` and `sweep` take the poster's 10 or, on the 4-class demo, its 4
    (an explicit --classes past what the set has is still refused: test_cli)."""
    from core.cli import build_parser
    from core.cli.sweeps import _create_sweep
    from core.cli.training import _open_run
    from core.train.distributed import Distributed
    tiny = ["--data", str(demo_root), "--model", "small_cnn", "--weights", "none"]
    store, run_id = _open_run(build_parser().parse_args(["train", *tiny]), Distributed())
    assert store.get(run_id)["config"]["classes"] == 4
    name = _create_sweep(build_parser().parse_args(["sweep", *tiny, "--grid", "lr=0.01,0.001", "--name", "fit"]))
    assert sweeps.info(name)["base"]["classes"] == 4
