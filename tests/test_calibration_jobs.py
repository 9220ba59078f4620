"""Issue 23 (rest): calibration at the end of training, calibration and distractor scoring as jobs
(files written, progress in images), and what the Evaluate and Compare panels show of them."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from core.runs import jobs
from core.runs.store import RunStore
from core.serve.predictor import current_calibration
from core.train import calibration as cal
from tests.conftest import jobs_here
from tests.test_distractors import noise_images


def test_training_ends_calibrated_on_its_validation_images(trained_home, monkeypatch):
    home, ids = trained_home
    monkeypatch.setenv("LANDMARKS_HOME", str(home))       # read only
    store = RunStore()
    for run_id in ids:
        run = store.require(run_id)
        c = current_calibration(run)                      # fitted on the final checkpoint
        val = pd.read_parquet(run.predictions_file("val"))
        assert c["fitted"] == "end of training" and c["fit_images"] == c["val_images"] == len(val)
        assert c["splits"]["val"]["n"] == len(val) and c["temperature"] > 0
        assert c["ece_on"] == "holdout" and c["splits"]["holdout"]["n"] == len(run.predictions("holdout"))
        (event,) = [e for e in store.events(run_id) if e["kind"] == "calibration"]
        assert event["message"] == (f"temperature {c['temperature']:.3f} fitted on {len(val):,} validation images; "
                                    f"rejection threshold {c['threshold']:.3f}")


def test_fit_sample_is_seeded_and_bounded_by_the_logits_held():
    assert list(cal.fit_sample(10, 4)) == list(range(10))
    s = cal.fit_sample(60_000, 10)
    assert len(s) == cal.MAX_FIT_IMAGES and (np.diff(s) > 0).all() and (s == cal.fit_sample(60_000, 10)).all()
    assert len(cal.fit_sample(60_000, 81_313, views=2)) == 2 ** 28 // (81_313 * 2) == 1650
    assert not (cal.fit_sample(60_000, 10, seed=1) == s).all()


def test_chunked_temperature_fit_equals_the_whole(monkeypatch):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 300, 7, generator=g) * 3
    y = torch.randint(0, 7, (300,), generator=g)
    whole = cal.fit_temperature(z, y)
    monkeypatch.setattr(cal, "CHUNK_LOGITS", 2 * 7 * 16)    # 16 images a chunk
    assert cal.fit_temperature(z, y) == pytest.approx(whole, rel=1e-9)


def _job(store, kind, args, run_id):
    job_id = jobs.submit(store, kind, args, run_id=run_id)
    job = jobs.status(store, job_id)
    assert job["status"] == "done", job
    return job


def test_calibrate_and_distractor_jobs_write_the_run_files_and_the_panels_show_them(use_trained_home, monkeypatch):
    from streamlit.testing.v1 import AppTest
    home, ids = use_trained_home
    jobs_here(monkeypatch)                                # started jobs run in this process
    store = RunStore()
    a, b = (store.require(r) for r in ids)
    a.calibration_file.unlink()                           # a run trained before calibration existed
    assert current_calibration(a) is None

    job = _job(store, "calibrate", {}, a.id)
    c = json.loads(a.calibration_file.read_text())
    assert c["fitted"] == "on demand" and job["result"]["temperature"] == c["temperature"]
    n = len(a.predictions("val")) + len(a.predictions("holdout"))
    assert job["progress"] == {"done": n, "total": n}     # "n/N images"
    folder = noise_images(home / "noise", 8)
    job = _job(store, "distractors", {"folder": str(folder)}, a.id)
    d = a.read_distractors("holdout")
    assert d["folder"] == str(folder) and job["result"]["gap_with_distractors"] == d["gap_with_distractors"]
    assert job["progress"]["done"] == job["progress"]["total"] == d["distractors"] > 0
    with pytest.raises(Exception, match="Distractors join the holdout as queries, not the val split."):
        jobs.submit(store, "distractors", {"folder": str(folder), "split": "val"}, run_id=a.id)
    with pytest.raises(Exception, match=f"The distractor folder {home / 'none'} does not exist or is not a folder."):
        jobs.submit(store, "distractors", {"folder": str(home / "none")}, run_id=a.id)

    def panels(run_id, other):
        from dashboard.calibration_panel import calibration_section, compare_calibration
        from dashboard.common import store
        calibration_section(run_id, "holdout", "Holdout")
        compare_calibration([store().get(run_id), store().get(other)], {run_id: "A", other: "B"})
    at = AppTest.from_function(panels, args=(a.id, b.id), default_timeout=60).run()
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    ho = c["splits"]["holdout"]
    assert shown["Temperature"] == f"{c['temperature']:.3f}" and shown["ECE after"] == f"{ho['ece_after']:.3f}"
    assert shown["Rejection threshold"] == f"{c['threshold']:.3f}"
    val = len(a.predictions("val"))
    assert any("Fitted on demand" in x.value and f"on {val:,} validation images." in x.value for x in at.caption)
    (chart,) = at.get("plotly_chart")                     # before and after, against one diagonal
    names = [t.get("name") for t in json.loads(chart.proto.spec)["data"]]
    assert names == ["before", "after temperature scaling", "calibrated"]
    (table,) = [t.value for t in at.dataframe]
    cb = current_calibration(b)
    assert table["run"].tolist() == ["A", "B"] and table["fitted"].iloc[1].startswith("end of training, ")
    assert table["ece_before"].tolist() == pytest.approx([c["ece_before"], cb["ece_before"]])
    assert table["ece_after"].tolist() == pytest.approx([c["ece_after"], cb["ece_after"]])
    assert table["temperature"].tolist() == pytest.approx([c["temperature"], cb["temperature"]])


def test_a_run_whose_validation_images_are_gone_is_still_trained_and_says_why(use_trained_home):
    from types import SimpleNamespace
    from core.runs.tasks import calibrate_at_end
    home, (run_id, _) = use_trained_home
    store = RunStore()
    run = store.require(run_id)
    run.calibration_file.unlink()
    val = pd.read_parquet(run.predictions_file("val"))
    val.assign(path=[str(home / f"gone{i}.jpg") for i in range(len(val))]).to_parquet(run.predictions_file("val"))
    calibrate_at_end(SimpleNamespace(run=run, store=store, job_id=None, should_stop=lambda: False))
    assert current_calibration(run) is None
    event = [e for e in store.events(run_id) if e["kind"] == "calibration"][-1]
    assert event["message"] == (f"not calibrated: None of run {run_id}'s {len(val)} validation images can be read any "
                                "more, so it cannot be calibrated; restore its data set folder and try again. The "
                                "Evaluate page calibrates on demand.")
