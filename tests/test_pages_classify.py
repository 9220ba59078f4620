"""Classify and Class model pages through AppTest: a fresh home (no runs), uploads good and
bad, the holdout sample, explanations, and a background class model job to completion."""
import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.explain.files import class_model_path
from core.runs import jobs
from core.errors import UserError
from core.serve.predictor import load_predictor
from core.runs.store import RunStore

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def page(name: str) -> AppTest:
    # Switching before the first run opens the page directly (no detour through the Dataset
    # page, which would generate the demo data set); paths are relative to dashboard/.
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(f"../pages/{name}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", ["classify", "class_model"])
def test_fresh_home_says_no_runs(name):
    at = page(name)
    assert any("No finished runs yet" in i.value for i in at.info)
    assert len(at.get("page_link")) == 1  # to the Train page


def test_classify_uploads_sample_and_explanations(use_trained_home):
    home, run_ids = use_trained_home
    at = page("classify")
    pred = load_predictor(RunStore().require(at.selectbox(key="clf_run").value))  # the best run, whichever it is
    assert at.selectbox(key="clf_run").value in run_ids
    assert any("Upload a photo" in i.value for i in at.info)
    assert "at most 20 MB and 25 megapixels" in " ".join(c.value for c in at.caption)

    # a good image (RGBA), a PDF under an image name and a truncated JPEG in one upload
    jpg = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(jpg, "JPEG")
    at.file_uploader(key="clf_upload").set_value([
        ("tower.png", png(Image.new("RGBA", (40, 30), (200, 30, 30, 128))), "image/png"),
        ("doc.jpg", b"%PDF-1.4 not an image", "image/jpeg"),
        ("cut.jpg", jpg.getvalue()[:400], "image/jpeg"),
    ])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert errors[0] == "doc.jpg is not an image Pillow can read; upload a JPEG, PNG or WebP."
    assert errors[1].startswith("cut.jpg is truncated or damaged")
    assert len(errors) == 2
    top5 = at.dataframe[0].value
    assert list(top5.columns) == ["class", "label", "probability"] and len(top5) == len(pred.names)  # < 5
    assert abs(top5["probability"].sum() - 1) < 1e-4 and top5["probability"].is_monotonic_decreasing
    faith = at.dataframe[-1].value
    assert set(faith["method"]) == {"Saliency map (Simonyan et al. 2014)", "Grad-CAM"}
    assert any("a 4×4 feature map at 32 px" in c.value for c in at.caption)   # small_cnn: Grad-CAM is coarse
    assert ((faith["score"] - (faith["insertion AUC"] - faith["deletion AUC"])).abs() < 1e-9).all()
    captions = [c for im in at.image for c in im.captions]
    assert captions[0] == "tower.png" and any(c.startswith("Grad-CAM · class") for c in captions)
    assert len(at.get("download_button")) == 2

    # the holdout sample joins the upload; explain a chosen class with another method
    at.button(key="clf_sample_btn").click().run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith("holdout sample ") and "(true class: Synthetic" in c for c in captions)
    assert len([d for d in at.dataframe if "probability" in d.value.columns]) == 2
    at.selectbox(key="clf_target").set_value(2)
    at.multiselect(key="clf_methods").set_value(["guided"])
    at.slider(key="clf_alpha").set_value(0.8)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(at.dataframe[-1].value["method"]) == ["Guided backpropagation"]
    assert any(f"Guided backpropagation · class “{pred.names[2]}”" in c
               for im in at.image for c in im.captions)


def test_class_model_background_job(use_trained_home, monkeypatch):
    from tests.conftest import jobs_here
    here = jobs_here(monkeypatch, defer=True)            # the job the page starts runs here, once checked
    home, run_ids = use_trained_home
    store = RunStore()
    with pytest.raises(UserError, match="no run 'nope'"):
        jobs.submit(store, "class_models", {"classes": ["0"], "steps": 5, "size": 32}, run_id="nope")
    with pytest.raises(UserError, match="Steps must be between 1 and 5000"):
        jobs.submit(store, "class_models", {"classes": ["0"], "steps": 0, "size": 32}, run_id=run_ids[0])
    assert store.jobs(kind="class_models") == []                 # bad input queues nothing

    at = page("class_model")
    run = at.selectbox(key="cm_run").value
    assert run in run_ids and jobs.latest(store, "class_models", run_id=run) is None
    names = load_predictor(store.require(run)).names
    at.multiselect(key="cm_classes").set_value([1])
    at.number_input(key="cm_steps").set_value(5)
    at.number_input(key="cm_size").set_value(32)
    at.run()
    assert at.button(key="cm_generate").label == "Generate 1 class model"
    at.button(key="cm_generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # started, not yet running (a worker takes seconds to import torch): the page says so
    assert at.get("progress")[0].proto.text == "step 0/5 · class 1/1 · ETA …"
    assert at.button(key="cm_generate").disabled and at.info[0].value.endswith(": queued…")
    assert here.run() == 1

    deadline = time.time() + 120
    while (s := jobs.latest(store, "class_models", run_id=run)) and s["active"] and time.time() < deadline:
        time.sleep(0.5)
    assert s and s["status"] == "done" and s["error"] is None, s
    assert s["args"]["classes"] == ["1"] and s["progress"]["step"] == 5 and s["progress"]["steps"] == 5
    out = class_model_path(store.run(run).class_models_dir, 1, 5, 32)
    assert out.exists() and Image.open(out).size == (32, 32)
    s = s["result"]
    assert s["results"][0]["png"] == str(out) and 0 <= s["results"][0]["prob"] <= 1

    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [c for im in at.image for c in im.captions] == [f"{names[1]} · p = {s['results'][0]['prob']:.3f}"]
    assert at.button(key="cm_generate").label == "All generated"
    ckpt = store.run(run).dir / "checkpoints" / "last.pt"     # a resume writes a newer checkpoint:
    os.utime(ckpt, (time.time() + 5, time.time() + 5))         # the cached image is stale, drawn again
    at.run()
    assert at.button(key="cm_generate").label == "Generate 1 class model"
