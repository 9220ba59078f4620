"""AppTest of the Dataset and Train pages on a fresh LANDMARKS_HOME holding a tiny demo data set."""
import shutil
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.runs.store import ACTIVE, RunStore

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
PAGES = ROOT / "pages"


@pytest.fixture
def demo_home(home, demo_root, monkeypatch):
    """The 4-class demo (240 images, 48 px) where ensure_demo() looks, so the page skips generating it.
    The test's tmp_path is a data root, so the pages may open folders typed under it."""
    shutil.copytree(demo_root, home / "datasets" / "demo")
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", str(home.parent))
    return home


def page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / name), default_timeout=120)


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def wait_for_jobs(kind: str, timeout: float = 120) -> None:
    """Until no job of `kind` is queued or running (scans and demo generation run in workers)."""
    import time
    from core.runs import jobs
    from core.runs.store import RunStore
    store, t0 = RunStore(), time.time()
    while time.time() - t0 < timeout:
        found = [j for j in store.jobs(kind=kind)]
        jobs.reap(store)
        if found and not any(j["status"] in ("queued", "starting", "running") for j in store.jobs(kind=kind)):
            return
        time.sleep(0.3)
    raise AssertionError(f"{kind} jobs still active: {store.jobs(kind=kind)}")


def test_dataset_page_demo_numbers_figures_thumbnails_and_scan(demo_home, monkeypatch):
    from tests.conftest import jobs_here
    jobs_here(monkeypatch)                          # the scans the page starts run here, at once
    # one unreadable file among the images: the scan must name it and say why
    bad = sorted((demo_home / "datasets" / "demo" / "train").rglob("*.jpg"))[0]
    bad.write_bytes(b"not a jpeg")
    at = page("dataset.py").run()
    assert not at.exception
    assert any("synthetic" in i.value for i in at.info)
    m = metrics(at)
    assert m["Classes"] == "4" and m["Images"] == "240"
    assert m["Share of images in the top 4"] == "100.0%"          # N defaults to all when < 50 classes
    assert m["Classes under 10 images"] == "0"
    assert len(at.get("plotly_chart")) == 2                         # Fig. 1 bars + the log-log tail
    images = at.get("image")                                         # 4 classes x 4 samples, maybe one unreadable
    assert len(images) >= 4 * 3 and all(im.captions[0] for im in images)
    (pick,) = at.multiselect                                         # browse any class's samples
    pick.set_value([pick.value[-1]]).run()
    assert not at.exception and 3 <= len(at.get("image")) <= 4

    wait_for_jobs("scan")                           # the scan started by itself, as a background job
    at.run()
    assert any("Checked 240 files (all decoded now): 1 unreadable" in w.value for w in at.warning)
    at.button(key="dataset_scan").click().run()
    wait_for_jobs("scan")
    at.run()
    assert not at.exception
    assert any("Checked 240 files (all from the cache): 1 unreadable" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert table["path"].tolist() == [str(bad)]
    assert table["reason"].iloc[0]


def open_folder(data: Path, counts: dict, size: tuple, step: int) -> AppTest:
    """A class-per-folder data set of `counts` PNGs per class, opened on the Dataset page by path."""
    for name, n in counts.items():
        (data / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, (step * i, 90, 160)).save(data / name / f"{i}.png")
    at = page("dataset.py").run()
    at.selectbox(key="dataset").select("Other path…").run()
    at.text_input(key="dataset_path").input(str(data)).run()
    return at


def test_dataset_page_folder_layout_counts_by_hand(demo_home, tmp_path):
    at = open_folder(tmp_path / "folders", {"arch": 5, "tower": 3, "dome": 1}, (40, 30), step=40)
    assert not at.exception
    m = metrics(at)
    assert (m["Classes"], m["Images"], m["Largest class"], m["Smallest class"]) == ("3", "9", "5", "1")
    assert m["Largest / smallest"] == "5.0×"
    assert m["Classes under 10 images"] == "3"
    at.number_input(key="dataset_small_k").set_value(3).run()
    assert metrics(at)["Classes under 3 images"] == "1"
    assert not any("synthetic" in i.value for i in at.info)


def test_log_ticks_are_whole_numbers_at_clean_steps():
    from dashboard.charts import log_ticks
    assert log_ticks(1, 68)[1] == ["1", "2", "5", "10", "20", "50", "68"]      # the largest class itself
    assert log_ticks(1, 4)[1] == ["1", "2", "3", "4"]                            # within a decade: every digit
    assert log_ticks(1, 203_094)[1] == ["1", "10", "100", "1k", "10k", "100k", "203k"]
    assert log_ticks(3, 9000)[1] == ["3", "5", "10", "20", "50", "100", "200", "500", "1k", "2k", "5k", "9k"]
    assert log_ticks(60, 60) == ([60.0], ["60"])
    assert log_ticks(0, 5) == ([], [])


def test_dataset_long_tail_axes_read_clean_log_ticks(demo_home, tmp_path):
    """A 68-image class: ticks 1, 2, 5, 10, 20, 50 and 68 on the image axis (plotly's own log ticks
    read "2 … 8", so 68 looked like "7"), every rank on the three-class rank axis."""
    import json
    at = open_folder(tmp_path / "tail", {"arch": 68, "tower": 9, "dome": 1}, (8, 8), step=3)
    assert not at.exception
    (tail,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
               if "long tail" in json.loads(c.proto.spec)["layout"]["title"]["text"]]
    x, y = tail["layout"]["xaxis"], tail["layout"]["yaxis"]
    assert x["type"] == y["type"] == "log"
    assert y["ticktext"] == ["1", "2", "5", "10", "20", "50", "68"] and y["tickvals"][-1] == 68
    assert x["ticktext"] == ["1", "2", "3"]
    assert "%{y:,} images" in tail["data"][0]["hovertemplate"]          # the exact count on hover


def test_dataset_page_missing_path_says_one_sentence(demo_home):
    at = page("dataset.py").run()
    at.selectbox(key="dataset").select("Other path…").run()
    missing = (demo_home.parent / "no-such-landmarks").resolve()   # under a data root, so not refused
    at.text_input(key="dataset_path").input(str(missing)).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"Data set folder {missing} does not exist."]
    assert not at.metric


# ------------------------------------------------------------------ Train page

def test_train_page_rejects_too_many_classes_without_creating_a_run(demo_home):
    at = page("train.py").run()
    assert not at.exception
    at.number_input(key="train_classes").set_value(50)
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Asked for the 50 most frequent classes, but the data set has only 4; choose 4 or fewer."]
    assert RunStore().list() == []


def test_train_page_preset_then_launch_queues_a_worker(demo_home, monkeypatch):
    from tests.conftest import jobs_here
    here = jobs_here(monkeypatch, defer=True)            # the job the page starts runs here, once checked
    at = page("train.py").run()
    at.button(key="train_preset").click().run()          # click 1: small values
    assert at.number_input(key="train_size").value == 64 and at.number_input(key="train_epochs").value == 3
    at.selectbox(key="train_model").select("small_cnn").run()
    assert at.radio(key="train_weights").value == "none"  # no cached torchvision weights in this TORCH_HOME
    at.number_input(key="train_classes").set_value(3)
    at.number_input(key="train_size").set_value(32)
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_max_images").set_value(90)
    at.button(key="train_launch").click().run()          # click 2: launch
    assert not at.exception and not at.error
    store = RunStore()
    (run,) = store.list()
    try:
        assert run["status"] in ACTIVE + ("done",)
        assert run["config"]["classes"] == 3 and run["config"]["image_size"] == 32
        assert run["config"]["weights"] == "none" and run["config"]["model"] == "small_cnn"
        assert any(run["run_id"] in s.value for s in at.success)
    finally:
        assert here.run() == 1
    assert store.get(run["run_id"])["status"] == "done", store.get(run["run_id"])["error"]
    at.run()
    assert not at.exception
    assert any("done" in s.value for s in at.success)
    assert any("Nothing is queued" in c.value for c in at.caption)


def test_train_page_offers_gpus_only_on_a_machine_with_several(demo_home, monkeypatch):
    """One GPU or none: no GPUs field, runs use one process. Two GPUs: "GPUs (this machine has 2)";
    asking for 3 is refused in one sentence and creates nothing; 2 queues a run that waits for both."""
    from tests.test_jobs import pretend_two_gpus
    at = page("train.py").run()
    assert not [n for n in at.number_input if n.key == "train_nproc"]
    pretend_two_gpus(monkeypatch)                        # nothing really starts on a pretend GPU
    at = page("train.py").run()
    field = at.number_input(key="train_nproc")
    assert field.label == "GPUs (this machine has 2)" and field.value == 1
    at.number_input(key="train_classes").set_value(3)
    field.set_value(3)
    at.button(key="train_launch").click().run()
    assert [e.value for e in at.error] == ["This run asks for 3 GPUs; this machine has 2. Choose 2 or fewer (--nproc)."]
    assert RunStore().list() == []
    at.number_input(key="train_nproc").set_value(2)
    at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    (run,) = RunStore().list()
    assert run["config"]["nproc"] == 2 and run["device"] == "cuda:0,cuda:1"


def test_train_page_bad_dataset_path_shows_error(demo_home):
    at = page("train.py").run()
    at.selectbox(key="train_dataset").select("Other path…").run()
    missing = (demo_home.parent / "no-such-set").resolve()          # under a data root, so not refused
    at.text_input(key="train_dataset_path").input(str(missing)).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"Data set folder {missing} does not exist."]
    assert not at.button                                  # no form, no launch


# ------------------------------------------------------------------ through the app's navigation

def test_pages_through_app_navigation(demo_home):
    missing = [p for p in ("dataset", "train", "runs", "evaluate", "classify", "class_model", "compare")
               if not (PAGES / f"{p}.py").exists()]
    assert not missing, f"app.py navigates to pages that do not exist: {', '.join(missing)}"
    from core.train.config import TrainConfig
    run_id = RunStore().create(TrainConfig(data=str(demo_home / "datasets" / "demo"), classes=3), status="done")
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception and metrics(at)["Classes"] == "4"   # Dataset is the default page
    at.session_state["train_last_run"] = run_id
    at.switch_page("../pages/train.py").run()
    assert not at.exception
    assert [link.label for link in at.page_link] == ["Follow it on the Runs page"]


def test_app_with_an_unusable_home_says_so(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("LANDMARKS_HOME", str(tmp_path / "afile" / "home"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("Cannot write the LANDMARKS_HOME folder")


def test_clean_subset_toggle_on_dataset_and_train_pages(demo_home, tmp_path):
    import pandas as pd
    root = tmp_path / "gld"
    shutil.copytree(demo_home / "datasets" / "demo", root)
    df = pd.read_csv(root / "train.csv", dtype=str)
    two = df[df["landmark_id"].isin(df["landmark_id"].unique()[:2])]
    two.groupby("landmark_id")["id"].apply(lambda s: " ".join(s.head(5))).reset_index(name="images").to_csv(
        root / "train_clean.csv", index=False)
    at = page("dataset.py").run()
    assert "dataset_clean" not in [t.key for t in at.toggle]        # the demo has no train_clean.csv
    at.selectbox(key="dataset").select("Other path…").run()
    at.text_input(key="dataset_path").input(str(root)).run()
    assert metrics(at)["Images"] == "240"
    at.toggle(key="dataset_clean").set_value(True).run()
    assert not at.exception
    assert (metrics(at)["Classes"], metrics(at)["Images"]) == ("2", "10")

    at = page("train.py").run()
    at.selectbox(key="train_dataset").select("Other path…").run()
    at.text_input(key="train_dataset_path").input(str(root)).run()
    at.toggle(key="train_clean").set_value(True).run()
    at.number_input(key="train_classes").set_value(3)
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Asked for the 3 most frequent classes, but the data set has only 2; choose 2 or fewer."]
