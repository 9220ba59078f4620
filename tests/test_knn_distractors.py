"""The kNN classifier scored with distractors, and the distractor penalty (issue 23).

The run is a copy of the shared trained run; its embedding store is written by hand (2-D unit
vectors at chosen angles), and the model's embedding of a photo is stubbed: a photo's red value r
(solid-colour PNGs made here) becomes the unit vector at r degrees. So every similarity below is a
cosine of a known angle and the GAP is computed by hand.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.serve import distractors, embeddings, features
from tests.test_cli import last_json, run


def unit(deg) -> np.ndarray:
    r = np.radians(np.atleast_1d(np.asarray(deg, np.float64)))
    return np.stack([np.cos(r), np.sin(r)], 1).astype(np.float32)


def stub_embed(model, x: torch.Tensor) -> np.ndarray:
    """A photo of red value r -> the unit vector at r degrees (the model is not used)."""
    return unit(x[:, 0].mean((1, 2)).numpy() * 255)


def named(half: str, start: int = 0) -> str:
    """The first file name d<i>.png from `start` that falls in `half` of a distractor folder."""
    i = start
    while distractors.half(f"d{i}.png") != half:
        i += 1
    return f"d{i}.png"


@pytest.fixture
def knn_run(use_trained_home, monkeypatch, tmp_path):
    """(runs root, run id, the other run's id, distractor folder): one query-half photo at 20 degrees,
    one tune-half photo at 25 degrees; the run's store: training photos of class 0 at 0 degrees and
    of class 1 at 90, holdout photos at 10 (class 0), 60 (class 1) and 50 (class 0: kNN says 1)."""
    from core.runs.store import RunStore
    home, (run_id, other) = use_trained_home
    r = RunStore(home / "runs").require(run_id)
    rows = pd.DataFrame({"path": [f"/x/{n}.jpg" for n in "ABhij"], "split": ["train"] * 2 + ["holdout"] * 3,
                         "target": [0, 1, 0, 1, 0], "label": ["a", "b", "a", "b", "a"]})
    rows["name"], rows["pred"], rows["conf"], rows["correct"] = rows["label"], 0, 1.0, True
    rows["x"], rows["y"] = np.float32(0), np.float32(0)
    embeddings.write(r, unit([0, 90, 10, 60, 50]), rows, {"run_id": run_id, "n": 5, "dim": 2,
                                                           "checkpoint_mtime": r.checkpoint.stat().st_mtime})
    folder = tmp_path / "distractors"
    folder.mkdir()
    Image.new("RGB", (8, 8), (20, 0, 0)).save(folder / named("query"))
    Image.new("RGB", (8, 8), (25, 0, 0)).save(folder / named("tune"))
    monkeypatch.setattr(features, "embed", stub_embed)
    return home / "runs", run_id, other, folder


def test_knn_gap_with_distractors_by_hand_and_the_penalty(knn_run, capsys):
    root, run_id, _, folder = knn_run
    code, out, err = run(capsys, "eval", run_id, "--classifier", "knn", "--distractors", folder,
                         "--runs", root, "--json")
    assert code == 0, err
    r = last_json(out)
    # kNN (both training photos vote; confidence = the winner's similarity):
    #   holdout 10° -> class 0, cos 10° = .985 (right); 60° -> 1, cos 30° = .866 (right);
    #   50° -> 1, cos 40° = .766 (wrong); distractor 20° -> 0, cos 20° = .940 (always wrong).
    # Ranked: right, distractor, right, wrong; M = 3 known: GAP = (1/1 + 2/3) / 3 = 5/9.
    assert r["classifier"] == "knn" and r["distractors"] == 1 and r["known"] == 3
    assert r["gap_with_distractors"] == pytest.approx(5 / 9)
    assert r["gap"] == pytest.approx(2 / 3) and r["acc_known"] == pytest.approx(2 / 3)
    assert r["distractor_penalty"] is None and r["distractors_tune"] == 1
    assert [p["precision"] for p in r["coverage_curve"]] == pytest.approx([1, 1 / 2, 2 / 3, 2 / 4])
    assert r["coverage_curve"][1]["confidence"] == pytest.approx(np.cos(np.radians(20)), abs=2e-3)

    code, out, err = run(capsys, "eval", run_id, "--classifier", "knn", "--distractors", folder,
                         "--distractor-penalty", "--runs", root, "--json")
    assert code == 0, err
    p = last_json(out)
    # minus the similarity to the tune half's photo at 25°: 10° .985-.966 = .019, 60° .866-.819 = .047,
    # 50° .766-.906 = -.140, distractor .940-.996 = -.056: it sinks below both right answers.
    # Ranked: right, right, distractor, wrong: GAP = (1 + 1) / 3 = 2/3.
    assert p["distractor_penalty"] == 1.0 and p["distractors_reference"] == 1
    assert p["gap_with_distractors"] == pytest.approx(2 / 3)
    assert [c["precision"] for c in p["coverage_curve"]] == pytest.approx([1, 1, 2 / 3, 2 / 4])
    d_conf = np.cos(np.radians(20)) - np.cos(np.radians(5))
    assert p["coverage_curve"][2]["confidence"] == pytest.approx(d_conf, abs=2e-3)
    assert p["acc_known"] == r["acc_known"]                        # the penalty moves confidences, not answers


def test_penalise_subtracts_the_nearest_distractor_similarity():
    reference = unit([25, 80])
    got = embeddings.penalise([0.9, 0.5], unit([20, 90]), reference, weight=0.5)
    assert got == pytest.approx([0.9 - 0.5 * np.cos(np.radians(5)), 0.5 - 0.5 * np.cos(np.radians(10))], abs=1e-6)


def test_refusals_in_one_sentence(knn_run, capsys):
    root, run_id, other, folder = knn_run
    cases = [
        (["eval", other, "--classifier", "knn", "--distractors", folder],
         f"Run {other} has no embeddings yet, which the kNN classifier needs; compute them with "
         f"python -m core embed {other}."),
        (["eval", run_id, "--distractors", folder, "--distractor-penalty"],
         "--distractor-penalty lowers the kNN classifier's similarities; add --classifier knn (and --distractors "
         "DIR) to use it."),
        (["eval", run_id, "--classifier", "knn", "--distractor-penalty", "0.5"],
         "--distractor-penalty compares each query with the photos of a distractor folder; add --distractors DIR."),
        (["eval", run_id, "--classifier", "knn", "--distractors", folder, "--distractor-penalty", "0"],
         "--distractor-penalty takes a positive weight (the published form uses 1; got 0)."),
    ]
    for argv, sentence in cases:
        code, out, err = run(capsys, *argv, "--runs", root)
        assert code == 2 and err.strip() == f"error: {sentence}", err
    (folder / named("tune")).write_bytes(b"not an image")
    code, out, err = run(capsys, "eval", run_id, "--classifier", "knn", "--distractors", folder,
                         "--distractor-penalty", "--runs", root)
    assert code == 2 and err.strip() == (
        f"error: None of the 1 tune-half images of the distractor folder {folder} can be read as an image, and "
        "the distractor penalty needs at least one.")
