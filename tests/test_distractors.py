"""Distractors in evaluation (issue 23): GAP with distractors against hand-computed cases, the
precision-coverage curve, the fixed split of a distractor folder, and `eval --distractors` on the
shared trained run with generated noise images (its JSON, the run-folder file, the refusals)."""
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.serve import distractors
from core.train import metrics
from tests.test_browser import app, chromium  # noqa: F401 - the browser test's server and browser
from tests.test_cli import last_json, run


# ------------------------------------------------------------------ the metric, by hand

def test_confident_distractor_ranked_first_costs_precision_everywhere():
    # ranked: distractor (0.9, wrong), 0 (0.8, right), 1 (0.6, right); M = 2 known queries
    # GAP = (P(2) + P(3)) / 2 = (1/2 + 2/3) / 2 = 7/12; without the distractor it is 1
    r = metrics.with_distractors([0, 1], [0, 1], [0.8, 0.6], [2], [0.9])
    assert r["gap_with_distractors"] == pytest.approx(7 / 12)
    assert r["gap"] == pytest.approx(1.0) and r["acc_known"] == 1.0
    assert r["distractors"] == 1 and r["known"] == 2
    assert r["coverage_curve"] == [
        {"confidence": 0.9, "coverage": pytest.approx(1 / 3), "precision": 0.0},
        {"confidence": 0.8, "coverage": pytest.approx(2 / 3), "precision": pytest.approx(1 / 2)},
        {"confidence": 0.6, "coverage": 1.0, "precision": pytest.approx(2 / 3)}]


def test_unconfident_distractor_ranked_last_costs_nothing():
    r = metrics.with_distractors([0, 1], [0, 1], [0.8, 0.6], [2], [0.1])
    assert r["gap_with_distractors"] == pytest.approx(1.0)
    assert r["coverage_curve"][-1] == {"confidence": 0.1, "coverage": 1.0, "precision": pytest.approx(2 / 3)}


def test_mixed_hand_computed():
    # ranked: d .95 (wrong), 0 .9 (right), 1 .8 (wrong: predicted 2), d .6 (wrong), 2 .5 (right)
    # GAP = (1/2 + 2/5) / 3 = 0.3 (M = 3: the distractors are not in the denominator)
    r = metrics.with_distractors([0, 1, 2], [0, 2, 2], [0.9, 0.8, 0.5], [1, 0], [0.95, 0.6])
    assert r["gap_with_distractors"] == pytest.approx(0.3)
    assert r["gap"] == pytest.approx((1 + 2 / 3) / 3)     # known only: P(1)=1, P(3)=2/3
    assert r["acc_known"] == pytest.approx(2 / 3)
    assert [p["coverage"] for p in r["coverage_curve"]] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [p["precision"] for p in r["coverage_curve"]] == pytest.approx([0, 1 / 2, 1 / 3, 1 / 4, 2 / 5])


def test_coverage_curve_answers_ties_together_and_is_thinned():
    curve = metrics.precision_coverage([0, 1, -1, 2], [0, 1, 0, 1], [0.9, 0.7, 0.7, 0.2])
    assert curve == [{"confidence": 0.9, "coverage": 0.25, "precision": 1.0},
                     {"confidence": 0.7, "coverage": 0.75, "precision": pytest.approx(2 / 3)},
                     {"confidence": 0.2, "coverage": 1.0, "precision": 0.5}]
    n = 1000
    curve = metrics.precision_coverage(np.zeros(n), np.zeros(n), np.linspace(1, 0, n), points=11)
    assert len(curve) == 11 and curve[-1]["coverage"] == 1.0 and curve[0]["coverage"] == pytest.approx(1 / n)


# ------------------------------------------------------------------ the folder and its split

def noise_images(folder, n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(sub / f"noise{i}.png")
    return folder


class FakeRun:
    id = "r1"

    def __init__(self, split_file):
        self.split_file = split_file


def test_split_is_a_fixed_hash_of_the_relative_path(tmp_path):
    folder = noise_images(tmp_path / "d", 16)
    d = distractors.load(folder, FakeRun(tmp_path / "none.csv"))
    assert sorted(d.tune + d.query) == sorted(folder.rglob("*.png")) and not d.left_out
    assert d.tune and d.query                                           # 16 paths: both halves used
    for p in d.tune + d.query:
        digest_bit = __import__("hashlib").sha256(p.relative_to(folder).as_posix().encode()).digest()[0] < 128
        assert (p in d.tune) == digest_bit
    moved = tmp_path / "elsewhere"                                      # the same names elsewhere: the same halves
    shutil.copytree(folder, moved)
    again = distractors.load(moved, FakeRun(tmp_path / "none.csv"))
    assert [p.relative_to(moved) for p in again.tune] == [p.relative_to(folder) for p in d.tune]


def test_empty_and_missing_folders_are_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(distractors.UserError, match=r"holds no \.jpg, \.jpeg, \.png or \.webp image\.$"):
        distractors.list_images(tmp_path / "empty")
    with pytest.raises(distractors.UserError, match="does not exist or is not a folder"):
        distractors.list_images(tmp_path / "nope")


def test_a_folder_of_unreadable_images_is_one_sentence(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i}.jpg").write_bytes(b"not a jpeg at all")

    class Reader:                                          # the predictor's reading step, without a model
        def tensor(self, path):
            from core.data.readers import open_image
            open_image(path)

    preds = pd.DataFrame({"target": [0], "pred": [0], "conf": [0.5]})
    d = distractors.load(folder, FakeRun(tmp_path / "none.csv"))
    with pytest.raises(distractors.UserError) as e:
        distractors.evaluate(FakeRun(tmp_path / "none.csv"), Reader(), preds, folder)
    assert str(e.value) == (f"None of the {len(d.query)} query images of the distractor folder {folder} "
                            "can be read as an image.")


def test_overlap_by_path_and_by_bytes(tmp_path):
    folder = noise_images(tmp_path / "d", 4)
    own = sorted(folder.rglob("*.png"))
    copy = tmp_path / "data" / "x.png"                                  # the run's photo, same bytes as own[1]
    copy.parent.mkdir()
    shutil.copy(own[1], copy)
    assert distractors.overlapping(own, [str(own[0]), str(copy)]) == sorted([own[0], own[1]])


# ------------------------------------------------------------------ eval --distractors on a trained run

def test_eval_with_distractors(use_trained_home, tmp_path, capsys):
    home, (run_id, _) = use_trained_home
    folder = noise_images(tmp_path / "noise", 10)
    run_dir = home / "runs" / run_id
    photos = pd.read_csv(run_dir / "split.csv")["path"].tolist()
    shutil.copy(photos[0], folder / "copied_from_the_data_set.jpg")   # same bytes, another path: left out
    code, out, err = run(capsys, "eval", run_id, "--distractors", folder, "--json")
    assert code == 0, err[-2000:]
    r = last_json(out)
    d = distractors.load(folder, FakeRun(run_dir / "split.csv"))
    assert r["distractors"] == len(d.query) > 0 and r["distractors_tune"] == len(d.tune)
    assert r["distractors_left_out"] == 1 and "1 image(s) of the distractor folder are photos" in err
    assert 0 <= r["gap_with_distractors"] <= r["gap"] <= 1         # distractors can only lower GAP
    holdout = pd.read_parquet(run_dir / "predictions_holdout.parquet")
    assert r["gap"] == pytest.approx(metrics.gap(holdout["target"], holdout["pred"], holdout["conf"]))
    assert r["known"] == len(holdout) and r["acc_known"] == pytest.approx(r["acc"])
    curve = r["coverage_curve"]
    assert curve[-1]["coverage"] == 1.0
    assert curve[-1]["precision"] == pytest.approx((holdout["pred"] == holdout["target"]).sum()
                                                  / (len(holdout) + len(d.query)))
    import json
    assert json.loads((run_dir / "distractors_holdout.json").read_text())["gap_with_distractors"] == \
        r["gap_with_distractors"]


def test_eval_refuses_a_folder_of_the_runs_own_photos(use_trained_home, tmp_path, capsys):
    home, (run_id, _) = use_trained_home
    photos = pd.read_csv(home / "runs" / run_id / "split.csv")["path"].tolist()[:3]
    folder = tmp_path / "mine"
    folder.mkdir()
    for i, p in enumerate(photos):
        shutil.copy(p, folder / f"{i}.jpg")
    code, out, err = run(capsys, "eval", run_id, "--distractors", folder)
    assert code == 2
    assert f"All 3 images of the distractor folder {folder} are photos of run {run_id}'s data set" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ the Evaluate page (AppTest) and a browser (e2e)

def _title(spec) -> str:
    return str((spec["layout"].get("title") or {}).get("text", ""))


@pytest.mark.e2e        # 4-5 s of AppTest: over this brief's 4 s of `make test`, so in the e2e tier
def test_evaluate_page_scores_the_distractor_folder_of_the_url(use_trained_home, started_jobs):
    import json
    from streamlit.testing.v1 import AppTest
    from tests.test_pages_evaluate_compare import APP, EVALUATE
    home, ids = use_trained_home
    folder = noise_images(home / "datasets" / "noise", 8)
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(EVALUATE)
    at.query_params["distractors"] = str(folder)                     # a shared link: the field starts with it
    at.run()
    assert any(p.proto.text.startswith("Scoring the distractors") for p in at.get("progress"))   # a job now
    assert started_jobs.run() == 1
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    run_id = at.selectbox(key="eval_run").value
    (field,) = [t for t in at.text_input if t.label == "Distractor folder"]
    assert field.value == str(folder)
    stored = json.loads((home / "runs" / run_id / "distractors_holdout.json").read_text())
    shown = {m.label: m.value for m in at.metric}
    assert shown[f"GAP with distractors (+{stored['distractors']})"] == f"{stored['gap_with_distractors']:.3f}"
    assert shown["GAP (known landmarks)"] == f"{stored['gap']:.3f}"
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (curve,) = [s for s in specs if "Precision–coverage" in _title(s)]
    assert curve["data"][0]["x"][-1] == 1.0 and len(curve["data"][0]["x"]) == len(stored["coverage_curve"])


@pytest.fixture
def home_with_runs(home, trained_home):
    """The browser test's LANDMARKS_HOME holding the two trained runs (before the `app` fixture starts)."""
    shutil.copytree(trained_home[0], home)
    return home, trained_home[1]


@pytest.mark.e2e
def test_browser_distractor_folder_on_evaluate_then_compare(home_with_runs, app):
    """Type a distractor folder on Evaluate: GAP with distractors and the coverage curve appear, the
    folder goes into the address; score the other run too and Compare shows both curves."""
    from playwright.sync_api import sync_playwright, expect
    from tests.test_browser import ARGS, CHROMIUM
    home, ids = home_with_runs
    folder = noise_images(home / "datasets" / "noise", 8)
    curves = """() => [...document.querySelectorAll('.js-plotly-plot')]
      .filter(g => ((g.layout.title || {}).text || '').includes('Precision–coverage'))
      .map(g => g._fullData ? g._fullData.length : 0)"""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for run_id in ids:
            page.goto(app + f"/evaluate?run={run_id}")
            field = page.get_by_role("textbox", name="Distractor folder", exact=True)
            expect(field).to_be_visible(timeout=120_000)
            if field.input_value() != str(folder):              # the second time the session remembers it
                field.fill(str(folder))
                field.press("Enter")
            expect(page.get_by_text("GAP with distractors (+").first).to_be_visible(timeout=120_000)
            page.wait_for_function(f"({curves})().length === 1 && ({curves})()[0] === 1", timeout=120_000)
        assert "distractors=" in page.url
        page.goto(app + "/compare?runs=" + ",".join(ids))
        expect(page.get_by_text("With distractors")).to_be_visible(timeout=120_000)
        page.wait_for_function(f"({curves})().length === 1 && ({curves})()[0] === 2", timeout=120_000)
        # Classify a generated non-landmark photo with a run whose threshold rejects it (issue 23)
        from core.runs.store import RunStore
        store = RunStore()
        for r in ids:
            run = store.require(r)
            run.write_calibration({**run.read_calibration(), "threshold": 0.999})
        page.goto(app + f"/classify?run={ids[0]}")
        photo = next(p for p in sorted(folder.rglob("*")) if p.is_file())      # noise: no landmark at all
        page.locator("input[type=file]").first.set_input_files(str(photo))
        n = store.require(ids[0]).class_count()
        expect(page.get_by_text(f"None of the {n} landmarks this model knows.").first).to_be_visible(timeout=120_000)
        expect(page.get_by_text("Its best guess", exact=False).first).to_be_visible()
        browser.close()
