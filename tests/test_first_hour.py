"""A new user's first hour (issue 10): ImageNet weights refused in the Train form when they
cannot be had, Cancel in the Train page's queue, class model downloads and "all classes",
attribution maps at display size with a legend, faithfulness per method, the Dataset page's
"start here" strip, plain captions and a page icon in every title."""
import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.runs.store import RunStore
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
PAGES = ROOT / "pages"


@pytest.fixture
def demo_home(home, demo_root, monkeypatch):
    """The 4-class demo where ensure_demo() looks, so no page generates it."""
    shutil.copytree(demo_root, home / "datasets" / "demo")
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", str(home.parent))
    return home


def page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / name), default_timeout=120)


def app_page(name: str) -> AppTest:
    """A page through the app's navigation (page links resolve there)."""
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.switch_page(f"../pages/{name}")
    return at.run()


# ------------------------------------------------------------------ Train: ImageNet offline, Cancel

REFUSAL = ("ResNet-18's ImageNet weights are not on this machine and cannot be downloaded without internet. "
           "Choose Weights: None (from scratch), a weight file, or the model EfficientNet-Lite0, whose ImageNet "
           "weights come with the app.")


def test_train_refuses_imagenet_weights_offline_in_the_forms_words(demo_home, monkeypatch):
    from dashboard import common
    monkeypatch.setattr(common, "internet_reachable", lambda *a, **k: False)
    at = page("train.py").run()
    at.selectbox(key="train_model").select("resnet18").run()
    assert not at.exception
    assert at.radio(key="train_weights").value == "none"          # not cached here: from scratch by default
    assert any(REFUSAL in c.value for c in at.caption)              # said before anyone presses Launch
    at.radio(key="train_weights").set_value("imagenet")
    at.number_input(key="train_classes").set_value(3)
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [REFUSAL]
    assert "--" not in at.error[0].value                            # no command-line flags
    assert RunStore().list() == []                                  # nothing queued
    at.button(key="train_fix_offline").click().run()                # one of the working choices, one click
    assert at.selectbox(key="train_model").value == "efficientnet_lite0"
    assert at.radio(key="train_weights").value == "imagenet"
    assert not at.error and RunStore().list() == []

    at.selectbox(key="train_model").select("vgg16").run()
    at.radio(key="train_weights").set_value("imagenet")
    at.button(key="train_launch").click().run()
    assert at.error[0].value.startswith("VGG-16's ImageNet weights are not on this machine")
    at.button(key="train_fix_scratch").click().run()
    assert at.radio(key="train_weights").value == "none" and at.selectbox(key="train_model").value == "vgg16"

    monkeypatch.setattr(common, "internet_reachable", lambda *a, **k: True)   # online: they download
    at.run()
    assert not any("not on this machine" in c.value for c in at.caption)


def test_train_queue_offers_cancel(demo_home):
    store = RunStore()
    queued = store.create(tiny_config(demo_home / "datasets" / "demo"), status="queued")
    at = page("train.py").run()
    assert not at.exception
    assert at.dataframe[-1].value["run_id"].tolist() == [queued]
    at.button(key=f"train_cancel_{queued}").click().run()
    assert not at.exception
    assert store.get(queued)["status"] == "cancelled"
    assert f"Cancelled {queued} before it started." in [i.value for i in at.info]
    assert any("Nothing is queued" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key.startswith("train_cancel_")]


# ------------------------------------------------------------------ Class model: all classes, downloads

def test_class_model_all_classes_and_downloads(use_trained_home, monkeypatch):
    import time
    from tests.conftest import jobs_here
    here = jobs_here(monkeypatch, defer=True)            # the job the page starts runs here, once checked
    from core.serve.predictor import load_predictor
    from core.runs import jobs
    store = RunStore()
    at = app_page("class_model.py")
    assert not at.exception, [e.value for e in at.exception]
    run = at.selectbox(key="cm_run").value
    names = load_predictor(store.require(run)).names
    at.number_input(key="cm_steps").set_value(2)
    at.number_input(key="cm_size").set_value(16)
    at.toggle(key="cm_all").set_value(True).run()
    assert not at.exception
    assert at.toggle(key="cm_all").label == f"All {len(names)} classes of this run"
    assert at.button(key="cm_generate").label == f"Generate {len(names)} class models"
    assert not at.warning                                   # under 50 classes: no time warning
    at.button(key="cm_generate").click().run()
    job = jobs.latest(store, "class_models", run_id=run)
    assert job["args"]["classes"] == load_predictor(store.require(run)).labels   # every class of the run
    assert here.run() == 1
    deadline = time.time() + 120
    while (job := jobs.latest(store, "class_models", run_id=run))["active"] and time.time() < deadline:
        time.sleep(0.3)
    assert job["status"] == "done", job
    at.run()
    assert not at.exception
    downloads = at.get("download_button")
    per_image = [d for d in downloads if d.proto.label == "Download PNG"]
    assert len(per_image) == len(names) == len(at.image)
    (zipped,) = [d for d in downloads if d.proto.label.startswith("⬇️ Download all")]
    assert zipped.proto.label == f"⬇️ Download all {len(names)} images (ZIP)"
    assert zipped.proto.url.endswith(".zip") and all(d.proto.url.endswith(".png") for d in per_image)
    from core.explain.files import class_model_path
    folder = store.run(run).class_models_dir
    assert all(class_model_path(folder, t, 2, 16).exists() for t in range(len(names)))


# ------------------------------------------------------------------ Classify: legends, faithfulness per method

def test_classify_legends_and_a_score_per_method(use_trained_home):
    import io
    from PIL import Image
    from core.explain import METHODS
    at = app_page("classify.py")
    assert at.title[0].value == "🔍 Classify"
    buf = io.BytesIO()
    Image.effect_noise((80, 60), 60).convert("RGB").save(buf, "PNG")
    at.file_uploader(key="clf_upload").set_value([("noise.png", buf.getvalue(), "image/png")]).run()
    at.multiselect(key="clf_methods").set_value(["saliency", "vanilla", "gradcam", "integrated_gradients"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    for m in ("saliency", "vanilla", "gradcam", "integrated_gradients"):
        assert METHODS[m].legend in captions                             # what the colours mean, per map
    assert len(at.image) == 1 + 2 * 4                                    # the photo, then each map and its colour bar
    faith = " ".join(m.value for m in at.markdown)
    assert "from −1 to 1" in faith and "below 0 is worse than random" in faith
    scores = at.dataframe[-1].value.set_index("method")["score"]
    # a score per method, not one shared by a cache: methods with different maps score differently
    assert scores["Saliency map (Simonyan et al. 2014)"] != scores["Grad-CAM"]
    assert scores["Grad-CAM"] != scores["Integrated gradients"]
    assert scores["Saliency map (Simonyan et al. 2014)"] == scores["Vanilla backpropagation"]   # same |gradient|:
    assert "so their scores are equal" in captions                                              # and said so
    assert len(at.get("download_button")) == 4


# ------------------------------------------------------------------ first minutes

STEPS = ["1 · Look at the data", "2 · Train a model", "3 · Evaluate it", "4 · Classify a photo"]


def test_dataset_page_start_here_until_the_first_run(demo_home):
    at = app_page("dataset.py")
    assert not at.exception, [e.value for e in at.exception]
    assert [link.label for link in at.page_link] == STEPS
    assert [link.icon for link in at.page_link] == ["📊", "🚀", "🎯", "🔍"]      # as in the navigation
    assert "seed" not in " ".join(c.value for c in at.caption)
    RunStore().create(tiny_config(demo_home / "datasets" / "demo"), status="done")
    at.run()
    assert not at.exception
    assert not at.page_link and not any("Start here" in m.value for m in at.markdown)


def test_toolbar_is_minimal():
    import tomllib
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "minimal"          # no Deploy button




def nav_icons() -> dict[str, str]:
    from dashboard import nav
    return {p.file: p.icon for pages in nav.SECTIONS.values() for p in pages}


@pytest.mark.parametrize("name", sorted(nav_icons()))
def test_every_page_title_carries_its_navigation_icon(name):
    titles = re.findall(r'st\.title\(f?"([^"]+)"', (PAGES / name).read_text())
    assert len(titles) == 1, titles
    assert titles[0].startswith(nav_icons()[name] + " "), (name, titles[0])


def test_class_model_many_classes_warns_and_asks_first(use_trained_home, monkeypatch):
    from dashboard import common
    monkeypatch.setattr(common, "MANY_CLASS_MODELS", 2)        # a run of 3-4 classes counts as "many" here
    at = app_page("class_model.py")
    at.toggle(key="cm_all").set_value(True).run()
    assert not at.exception
    n = int(at.toggle(key="cm_all").label.split()[1])                # "All 4 classes of this run"
    assert at.warning[0].value.startswith(f"{n} class models of 150 steps each are drawn one after another")
    assert at.button(key="cm_generate").disabled                  # not before the confirmation
    at.checkbox(key="cm_all_ok").check().run()
    assert not at.button(key="cm_generate").disabled
