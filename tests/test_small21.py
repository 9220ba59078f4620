"""Issue 21, small things that disagreed or warned: a sweep's running count says what really runs
on the slot, Evaluate's charts give plotly.js colour strings (numbers there logged "Invalid color
specifier" in the browser), the parallel-coordinates axes name each value once, and no page fetches
anything it was not asked for."""
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def _page(path: str):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(path)
    return at.run()


# ------------------------------------------------------------------ 1. "2 running" with one CPU slot

def test_trials_waiting_for_the_slot_are_not_counted_as_running():
    from dashboard.common import trial_slots
    configs = [{"state": "running", "run_id": "a"}, {"state": "running", "run_id": "b"},
               {"state": "running", "run_id": None}, {"state": "complete", "run_id": "c"}]
    status = {"a": "running", "b": "queued", "c": "done"}
    assert trial_slots(configs, status.get) == (1, 2)        # b queued for the slot, the third not created yet
    status["b"] = "starting"                                  # a worker took the slot
    assert trial_slots(configs, status.get) == (2, 1)


def test_sweep_status_line_says_one_running_and_one_waiting_for_the_slot():
    from streamlit.testing.v1 import AppTest

    def script():
        from dashboard import sweep_results
        sweep_results.run_status = {"r1": "running", "r2": "queued"}.get   # the store's job statuses
        counts = dict(complete=1, pruned=0, failed=0, running=2, waiting=3, ended=1)
        sweep_results.status_line({"counts": counts, "planned": 6, "cancelled": False, "finished": False,
                                   "sampler": "grid", "prune": False, "storage": "x",
                                   "configs": [{"state": "running", "run_id": "r1"},
                                               {"state": "running", "run_id": "r2"}]}, None)

    at = AppTest.from_function(script).run()
    assert not at.exception, at.exception
    line = at.markdown[0].value
    assert "🏃 1 running" in line and "⏳ 4 waiting (1 for a free slot)" in line, line


# ------------------------------------------------------------------ 2. colours plotly.js can read

def _colours(o, path=""):
    """(path, value) of every colour setting in a plotly spec (colour scales and bars are not colours)."""
    if isinstance(o, dict):
        if set(o) >= {"dtype", "bdata"}:                     # a packed array: numbers
            yield path, o
            return
        for k, v in o.items():
            if k not in ("colorscale", "colorbar", "template"):
                yield from _colours(v, f"{path}.{k}")
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _colours(v, f"{path}[{i}]")
    elif path.rsplit(".", 1)[-1].split("[")[0].endswith("color"):
        yield path, o


def test_evaluate_charts_give_colour_strings_only(use_trained_home):
    at = _page("../pages/evaluate.py")
    assert not at.exception, at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(specs) == 3                                  # per-class bars, confusion, reliability diagram
    colours = [(p, v) for s in specs for p, v in _colours(s["data"], "data") if p.split(".")[-1].startswith("color")
               or "color" in p.rsplit(".", 1)[-1]]
    bars = [v for p, v in _colours(specs[0]["data"], "data") if p.startswith("data[0].marker.color")]
    assert bars and all(isinstance(v, str) and v.startswith("rgb(") for v in bars), bars   # one per class bar
    bad = [(p, v) for p, v in colours if not isinstance(v, str)]
    assert not bad, f"numbers where plotly.js wants a colour (its 'Invalid color specifier'): {bad}"


def test_accuracy_colours_run_red_to_green():
    from dashboard.charts import accuracy_colors
    assert accuracy_colors([0.0, 1.0]) == ["rgb(165, 0, 38)", "rgb(0, 104, 55)"]   # RdYlGn's two ends
    assert accuracy_colors([]) == []


# ------------------------------------------------------------------ 3. parallel coordinates: each value once

def test_parallel_axes_name_each_categorical_value_once():
    from dashboard import sweep_charts as sc
    df = pd.DataFrame({"optimizer": ["adam", "sgd", "adam", "sgd"], "amp": [True, False, False, True],
                       "lr": [0.001, 0.0010001, 0.01, 0.01], "state": ["complete", "complete", "pruned", "complete"],
                       "val_acc": [0.4, 0.3, 0.2, 0.5]})
    dims = {d["label"]: d for d in sc.parallel_figure(df, ["optimizer", "amp", "lr"]).to_plotly_json()["data"][0]
            ["dimensions"]}
    assert dims["optimizer"]["ticktext"] == ["adam", "sgd"] and list(dims["optimizer"]["values"]) == [0, 1, 0, 1]
    assert dims["amp"]["ticktext"] == ["False", "True"] and list(dims["amp"]["values"]) == [1, 0, 0, 1]
    assert dims["lr"]["ticktext"] == ["0.001", "0.01"]          # 0.0010001 prints as 0.001: one tick, not two
    assert list(dims["lr"]["values"]) == [0, 0, 1, 1]
    for d in dims.values():
        if "ticktext" in d:
            assert len(d["ticktext"]) == len(set(d["ticktext"])) == len(d["tickvals"])


# ------------------------------------------------------------------ 4. nothing downloads at start

def test_no_page_downloads_anything_it_was_not_asked_for(use_trained_home, monkeypatch):
    import torch.hub

    from core.data.download import run as download_run
    from core.train import models
    from dashboard import nav
    called: list[str] = []

    def refuse(name):
        def f(*a, **k):
            called.append(name)
            raise AssertionError(f"{name} was called while a page rendered")
        return f
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse("torch.hub.load_state_dict_from_url"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("torch.hub.download_url_to_file"))
    monkeypatch.setattr(download_run, "download", refuse("core.data.download.run.download"))
    for name, spec in models.REGISTRY.items():      # every model's ImageNet weight loader
        if spec.imagenet is not None:
            monkeypatch.setitem(models.REGISTRY, name, dataclasses.replace(spec, imagenet=refuse(f"{name} weights")))
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=120)
    for pages in nav.SECTIONS.values():
        for p in pages:
            at.switch_page(f"../pages/{p.file}")
            at.run()
            assert not at.exception, (p.file, at.exception)
    assert called == []
