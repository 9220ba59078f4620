"""Data sets the app remembers: the registry file and the pickers built on it."""
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data import registry
from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
DATASET, TRAIN, CLASSIFY = (str(ROOT / "pages" / f) for f in ("dataset.py", "train.py", "classify.py"))


def _folder_set(root: Path, classes=("arch", "tower"), n=3) -> Path:
    from PIL import Image
    for i, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for j in range(n):
            Image.new("RGB", (40, 40), (60 * i, 10 * j, 90)).save(root / c / f"{j}.jpg")
    return root


def test_remember_is_idempotent_and_names_stay_unique(tmp_path):
    a, b = tmp_path / "x" / "photos", tmp_path / "y" / "photos"
    a.mkdir(parents=True), b.mkdir(parents=True)
    first = registry.remember(a)
    assert first["name"] == "photos" and first["path"] == str(a.resolve())
    assert registry.remember(a)["name"] == "photos"                  # the same folder keeps its entry
    assert registry.remember(b)["name"] == "photos (2)"              # another folder of the same name
    assert [d["name"] for d in registry.listed()] == ["photos (2)", "photos"]   # most recently used first
    registry.remember(a)
    assert registry.listed()[0]["name"] == "photos"
    assert registry.name_of(b) == "photos (2)" and registry.name_of(tmp_path / "other") == "other"


def test_rename_and_forget_say_one_sentence(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    registry.remember(a), registry.remember(b)
    with pytest.raises(UserError, match="already exists"):
        registry.rename("a", "b")
    with pytest.raises(UserError, match="not a usable data set name"):
        registry.rename("a", "../etc")
    assert registry.rename("a", "Paris 2026")["path"] == str(a.resolve())
    registry.forget("Paris 2026")
    assert a.is_dir()                                                # forgetting never touches the folder
    assert [d["name"] for d in registry.listed()] == ["b"]
    with pytest.raises(UserError, match="no data set named"):
        registry.forget("Paris 2026")
    registry.remember(a, touch=False)                                # seen again (a run's data): stays forgotten
    assert [d["name"] for d in registry.listed()] == ["b"]
    registry.remember(a)                                             # typed again: back, under its name
    assert [d["name"] for d in registry.listed()] == ["Paris 2026", "b"]


def test_a_damaged_list_is_kept_aside_not_lost(tmp_path):
    f = registry._file(None)
    f.write_text("{not json")
    d = tmp_path / "set"
    d.mkdir()
    assert registry.remember(d)["name"] == "set"
    assert list(f.parent.glob("datasets.json.damaged-*"))


def test_typed_folder_is_offered_on_the_train_page_without_typing_it_again(tmp_path, monkeypatch):
    data = _folder_set(Path(tmp_path) / "home" / "datasets" / "../../roots/landmarks-real")
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", str(data.resolve().parent))
    at = AppTest.from_file(DATASET, default_timeout=60).run()
    at.selectbox(key="dataset").select("Other path…").run()
    at.text_input(key="dataset_path").input(str(data)).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="dataset").value == "landmarks-real"
    assert at.query_params["data"] == ["landmarks-real"] or at.query_params["data"] == "landmarks-real"
    # a new session (another page, a reload): the remembered data set is offered and chosen by default
    tr = AppTest.from_file(TRAIN, default_timeout=60).run()
    assert not tr.exception
    assert tr.selectbox(key="train_dataset").value == "landmarks-real"
    assert "landmarks-real" in tr.selectbox(key="train_dataset").options
    assert "2 classes, 6 images" in " ".join(c.value for c in tr.caption)


def test_the_url_chooses_the_data_set(tmp_path, monkeypatch):
    one = _folder_set(paths_datasets() / "one")
    two = _folder_set(paths_datasets() / "two", classes=("a", "b", "c"))
    registry.remember(one), registry.remember(two)                  # "two" is the most recent
    at = AppTest.from_file(TRAIN, default_timeout=60)
    at.query_params["data"] = "one"
    at.run()
    assert at.selectbox(key="train_dataset").value == "one"
    assert "2 classes" in " ".join(c.value for c in at.caption)


def paths_datasets() -> Path:
    from core import paths
    return paths.datasets_dir()


def test_classify_defaults_to_a_real_data_set_run_not_the_synthetic_demo(use_trained_home, tmp_path):
    from core.runs.store import RunStore
    home, (best, other) = use_trained_home
    store = RunStore()
    demo = Path(store.run(other).config().data)
    real = tmp_path / "real-photos"
    shutil.copytree(demo, real)
    (real / "SYNTHETIC.txt").unlink()
    store._write("UPDATE runs SET data=? WHERE run_id=?", (str(real), other))
    at = AppTest.from_file(CLASSIFY, default_timeout=90).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="clf_run").value == other               # real data first, whatever the demo scored
    assert "real-photos" in at.selectbox(key="clf_run").format_func(other)


def test_rename_and_forget_on_the_dataset_page():
    _folder_set(paths_datasets() / "paris")
    at = AppTest.from_file(DATASET, default_timeout=60).run()
    assert at.selectbox(key="dataset").value == "paris"
    at.text_input(key="dataset_rename").input("Paris landmarks")     # a form: sent with the one click below
    at.button(key="dataset_rename_go").click().run()
    assert not at.exception and not at.error
    assert at.selectbox(key="dataset").value == "Paris landmarks"
    at.button(key="dataset_forget").click().run()
    assert not at.exception
    assert "Paris landmarks" not in at.selectbox(key="dataset").options
    assert (paths_datasets() / "paris").is_dir()


def test_demo_is_a_reserved_name(tmp_path):
    d = tmp_path / "demo"
    d.mkdir()
    assert registry.remember(d)["name"] == "demo (2)"          # another folder called demo is not the app's demo
    with pytest.raises(UserError, match="synthetic demo"):
        registry.rename("demo (2)", "Demo")
