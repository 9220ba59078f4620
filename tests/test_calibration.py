"""Issue 23, calibration and rejection: ECE by hand, temperature recovered on synthetic logits,
the threshold by hand, a run calibrated, stored and read back (eval --calibrate), predict rejecting
a non-landmark photo, and Classify saying "None of the N landmarks" while still listing guesses."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.runs.store import RunStore
from core.serve.predictor import calibrate_run, current_calibration, load_predictor
from core.train import calibration as cal


def test_ece_hand_computed():
    # bins of 1/15: 0.95 -> bin 14, 0.5 -> bin 7, 0.25 -> bin 3
    conf = [0.95, 0.95, 0.5, 0.5, 0.25]
    correct = [1, 0, 1, 1, 0]
    # |B|/n |acc - conf|: 2/5 * |0.5 - 0.95| + 2/5 * |1 - 0.5| + 1/5 * |0 - 0.25| = 0.18 + 0.2 + 0.05
    assert cal.ece(conf, correct) == pytest.approx(0.43)
    bins = cal.reliability(conf, correct)
    assert len(bins) == 15 and [b["count"] for b in bins if b["count"]] == [1, 2, 2]
    assert bins[14] == {"lo": 14 / 15, "hi": 1.0, "count": 2, "acc": 0.5, "conf": 0.95}
    assert bins[0]["acc"] is None
    assert cal.ece([1 / 3, 0.0], [1, 0]) == pytest.approx(0.5 * (1 - 1 / 3) + 0.5 * 0)   # edges: (lo, hi], 0 in the first


def test_temperature_fit_recovers_known_t():
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(4000, 10, generator=g)
    t0 = 2.5
    labels = torch.multinomial(torch.softmax(logits / t0, 1), 1, generator=g)[:, 0]
    t = cal.fit_temperature(logits, labels.numpy())
    assert t == pytest.approx(t0, rel=0.08)
    before = cal.summary(cal.calibrated_probs(logits, 1.0).numpy(), labels.numpy())
    after = cal.summary(cal.calibrated_probs(logits, t).numpy(), labels.numpy())
    assert after["ece"] < 0.03 < before["ece"]
    # two views (flip averaging): the fit is on the mean of both softmaxes
    two = torch.stack([logits, logits])
    assert cal.fit_temperature(two, labels.numpy()) == pytest.approx(t, rel=1e-3)


def test_threshold_lowest_reaching_target():
    conf = [0.9, 0.8, 0.7, 0.6, 0.5]
    correct = [1, 1, 0, 1, 0]      # precision of the first k: 1, 1, 2/3, 3/4, 3/5
    assert cal.choose_threshold(conf, correct, 0.75) == {"threshold": 0.6, "precision": 0.75, "coverage": 0.8,
                                                         "target_reached": True}
    assert cal.choose_threshold(conf, correct, 0.7)["threshold"] == 0.6
    # ties are cut together; unreachable: the most precise cut, flagged
    out = cal.choose_threshold([0.9, 0.9, 0.4], [1, 0, 1], 0.99)
    assert out == {"threshold": 0.4, "precision": 2 / 3, "coverage": 1.0, "target_reached": False}


def noise_png(tmp_path, name="noise.png"):
    rng = np.random.default_rng(7)
    f = tmp_path / name
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(f)
    return f


def test_calibrate_store_read_back_and_predict_rejects(use_trained_home, tmp_path, capsys):
    home, (run_id, _) = use_trained_home
    RunStore().require(run_id).calibration_file.unlink()     # as a run trained before calibration existed
    assert main(["eval", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated"] is False
    assert main(["eval", run_id, "--calibrate", "--target-precision", "0.8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    run = RunStore().require(run_id)
    stored = json.loads(run.calibration_file.read_text())
    assert out["calibrated"] is True and stored["fitted_on"] == "val" and stored["target_precision"] == 0.8
    assert out["temperature"] == stored["temperature"] > 0 and out["threshold"] == stored["threshold"]
    assert out["ece_before"] == stored["ece_before"] and out["ece_after"] == stored["ece_after"]
    assert out["gap"] == stored["splits"]["holdout"]["gap_after"] and "gap_uncalibrated" in out
    val = stored["splits"]["val"]
    assert sum(b["count"] for b in val["bins_after"]) == val["n"] > 0
    assert current_calibration(run) == stored

    # distractors (the tune half of --distractors) count as wrong answers: the threshold can only rise
    with_d = calibrate_run(load_predictor(run), run, 0.8, distractors=[noise_png(tmp_path, "d.png")] * 5)
    assert with_d["distractors_tune"] == 5 and with_d["temperature"] == stored["temperature"]
    assert stored["target_reached"] and with_d["target_reached"] and with_d["precision"] >= 0.8
    assert with_d["threshold"] >= stored["threshold"]

    # the stored threshold raised: a noise photo is rejected, and its guesses are still given
    run.write_calibration({**stored, "threshold": 0.999})
    assert main(["predict", "--run", run_id, str(noise_png(tmp_path)), "--json"]) == 0
    pr = json.loads(capsys.readouterr().out)
    item = pr["results"][0]
    assert pr["calibrated"] is item["calibrated"] is True and item["rejected"] is True
    assert len(item["top"]) == 4 and item["top"][0]["prob"] < 0.999
    assert sum(t["prob"] for t in item["top"]) == pytest.approx(1, abs=1e-5)
    assert main(["predict", "--run", run_id, str(noise_png(tmp_path))]) == 0
    assert "None of the 4 landmarks this model knows" in capsys.readouterr().out

    assert main(["eval", run_id, "--calibrate", "--target-precision", "1.5"]) == 2
    assert "--target-precision must be between 0 and 1 (got 1.5)." in capsys.readouterr().err


def test_classify_rejects_below_the_stored_threshold(use_trained_home, tmp_path):
    from streamlit.testing.v1 import AppTest
    from tests.test_pages_classify import APP, png
    home, run_ids = use_trained_home
    store = RunStore()
    for r in run_ids:        # whichever run the page picks first: a calibration that rejects almost everything
        run = store.require(r)
        run.write_calibration({"temperature": 1.0, "threshold": 0.999, "fitted_on": "val",
                               "checkpoint_mtime": run.checkpoint_mtime()})
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page("../pages/classify.py")
    at.run()
    n = store.require(at.selectbox(key="clf_run").value).class_count()
    at.file_uploader(key="clf_upload").set_value([("noise.png", png(Image.open(noise_png(tmp_path))), "image/png")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith(f"**None of the {n} landmarks this model knows.** Its best guess, ")
    assert "below the run's rejection threshold of 100%" in warning
    top = at.dataframe[0].value
    assert len(top) == n and top["probability"].iloc[0] < 0.999     # the best guesses are still listed
    assert any("Calibrated probabilities" in c.value for c in at.caption)
