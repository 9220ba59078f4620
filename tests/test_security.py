"""Security hardening: loopback-only server config, paths typed in the browser confined to the
operator's roots, a cap on files per upload, and ImageNet downloads loaded with weights_only."""
import io
import os
import shutil
import tomllib
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import paths
from core.data.uploads import MAX_FILES_PER_UPLOAD, check_file_count
from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "pages"
APP = ROOT / "dashboard" / "app.py"


def refusal(typed: str, what: str = "data set folder", roots=None) -> str:
    with pytest.raises(UserError) as e:
        paths.confine(typed, what, roots)
    return str(e.value)


@pytest.fixture
def demo_home(home, demo_root):
    """The tiny demo where ensure_demo() looks, so the pages skip generating the big one."""
    shutil.copytree(demo_root, home / "datasets" / "demo")
    return home


def page_text(at) -> str:
    """Every piece of text the page shows (messages, markdown, captions, labels, tables)."""
    parts = []
    for kind in (at.markdown, at.caption, at.info, at.warning, at.error, at.success, at.text, at.title,
                 at.header, at.subheader, at.code, at.json, at.exception):
        parts += [str(e.value) for e in kind]
    parts += [str(m.label) + str(m.value) for m in at.metric]
    parts += [d.value.to_string() for d in at.dataframe]
    parts += [str(w.label) + str(w.options) for w in at.selectbox]
    return "\n".join(parts)


# ------------------------------------------------------------------ 1. server config

def test_config_listens_on_loopback_and_hides_error_details_and_deploy():
    from streamlit.config import ShowErrorDetailsConfigOptions
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["client"]["showErrorDetails"] == "none"       # no type, message or traceback in the browser
    assert cfg["client"]["showErrorDetails"] in {o.value for o in ShowErrorDetailsConfigOptions}
    assert cfg["client"]["toolbarMode"] == "minimal"         # no Deploy button, no developer menu


# ------------------------------------------------------------------ 2. typed paths confined

def test_confine_inside_the_datasets_folder_is_allowed(home):
    inside = paths.datasets_dir() / "gld"
    inside.mkdir()
    assert paths.confine(str(inside)) == inside.resolve()
    assert paths.confine(f"  {inside}  ") == inside.resolve()                 # typed with spaces
    assert paths.confine(str(paths.datasets_dir() / "not-yet")) == (paths.datasets_dir() / "not-yet").resolve()
    assert paths.browser_roots() == [paths.datasets_dir().resolve()]


def test_confine_outside_is_refused_with_one_sentence(home, tmp_path):
    msg = refusal("/usr/share")
    assert msg.startswith(f"The data set folder must be under {paths.datasets_dir().resolve()}:")
    assert msg.endswith("ask the operator to add its folder to LANDMARKS_DATA_ROOTS.")
    assert refusal(str(paths.datasets_dir() / ".." / "..")) == msg               # .. cannot climb out
    assert refusal(str(home)) == msg                                              # nor LANDMARKS_HOME itself
    assert refusal("~") == msg
    assert refusal("bad\0path") == msg                                            # NUL byte: same sentence


def test_confine_same_sentence_whether_or_not_the_path_exists(home, tmp_path):
    (tmp_path / "secret").mkdir()
    exists, missing = refusal(str(tmp_path / "secret")), refusal(str(tmp_path / "no-such"))
    assert exists == missing
    assert refusal("/etc") == refusal("/no/such/folder/anywhere") == exists
    assert "secret" not in exists and "no-such" not in missing


def test_confine_refuses_a_symlink_that_escapes(home, tmp_path):
    outside = tmp_path / "outside"
    (outside / "class_a").mkdir(parents=True)
    link = paths.datasets_dir() / "escape"
    link.symlink_to(outside, target_is_directory=True)
    msg = refusal(str(tmp_path / "nowhere"))
    assert refusal(str(link)) == msg
    assert refusal(str(link / "class_a")) == msg
    loop = paths.datasets_dir() / "loop"
    loop.symlink_to(loop)
    assert refusal(str(loop)) == msg                                              # a loop: the same sentence
    # a symlink inside that stays inside is fine
    (paths.datasets_dir() / "real").mkdir()
    (paths.datasets_dir() / "alias").symlink_to(paths.datasets_dir() / "real", target_is_directory=True)
    assert paths.confine(str(paths.datasets_dir() / "alias")) == (paths.datasets_dir() / "real").resolve()


def test_landmarks_data_roots_are_honoured(home, tmp_path, monkeypatch):
    a, b = tmp_path / "mnt_a", tmp_path / "mnt_b"
    (b / "gldv2").mkdir(parents=True)
    a.mkdir()
    with pytest.raises(UserError):
        paths.confine(str(b / "gldv2"))
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", os.pathsep.join([str(a), "", str(b)]))
    assert paths.browser_roots() == [paths.datasets_dir().resolve(), a.resolve(), b.resolve()]
    assert paths.confine(str(b / "gldv2")) == (b / "gldv2").resolve()
    assert paths.confine(str(a)) == a.resolve()
    msg = refusal(str(tmp_path / "mnt_c"))
    assert str(a) in msg and str(b) in msg


def test_weight_files_may_also_come_from_runs(home):
    ckpt = paths.runs_dir() / "r1" / "checkpoints" / "last.pt"
    assert paths.confine(str(ckpt), "weight file", paths.weight_roots()) == ckpt.resolve()
    with pytest.raises(UserError, match="^The data set folder must be under"):
        paths.confine(str(ckpt))                                                  # not a data root
    assert refusal("/etc/passwd", "weight file", paths.weight_roots()).startswith("The weight file must be under")


def test_dataset_page_refuses_a_typed_path_outside_the_roots(demo_home):
    at = AppTest.from_file(str(PAGES / "dataset.py"), default_timeout=120).run()
    assert not at.exception
    at.selectbox(key="dataset").select("Other path…").run()
    at.text_input(key="dataset_path").input("/usr/share").run()
    assert not at.exception
    (err,) = [e.value for e in at.error]
    assert err == refusal("/usr/share")
    assert not at.metric and not at.dataframe and not at.get("plotly_chart") and not at.get("image")
    text = page_text(at)
    shown = [n for n in os.listdir("/usr/share") if f"/usr/share/{n}" in text or (len(n) > 6 and n in text)]
    assert shown == [], shown                                                     # no folder names leak
    at.text_input(key="dataset_path").input("/usr/share/no-such-folder-here").run()
    assert [e.value for e in at.error] == [err]                                  # existence not revealed


def test_dataset_page_opens_a_typed_path_under_the_roots(demo_home, tmp_path, monkeypatch):
    data = tmp_path / "mnt" / "folders"
    for name in ("arch", "tower"):
        (data / name).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(data / name / "0.png")
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", str(tmp_path / "mnt"))
    at = AppTest.from_file(str(PAGES / "dataset.py"), default_timeout=120).run()
    at.selectbox(key="dataset").select("Other path…").run()
    at.text_input(key="dataset_path").input(str(data)).run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["Classes"] == "2"


def test_train_page_confines_the_weight_file(demo_home):
    at = AppTest.from_file(str(PAGES / "train.py"), default_timeout=120).run()
    assert not at.exception
    at.radio(key="train_weights").set_value("path")
    at.text_input(key="train_weights_path").input("/etc/passwd")
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [refusal("/etc/passwd", "weight file", paths.weight_roots())]
    # under runs/ it passes the confinement and is then checked for existence
    missing = paths.runs_dir() / "old" / "checkpoints" / "last.pt"
    at.text_input(key="train_weights_path").input(str(missing))
    at.button(key="train_launch").click().run()
    assert [e.value for e in at.error] == [f"Weight file {missing.resolve()} does not exist."]
    from core.runs.store import RunStore
    assert RunStore().list() == []


# ------------------------------------------------------------------ 3. files per upload

def test_check_file_count():
    assert MAX_FILES_PER_UPLOAD == 20
    check_file_count(0)
    check_file_count(MAX_FILES_PER_UPLOAD)
    with pytest.raises(UserError) as e:
        check_file_count(MAX_FILES_PER_UPLOAD + 1)
    assert str(e.value) == ("21 files were uploaded at once, more than the limit of 20; "
                            "remove some and classify them in batches of 20 or fewer.")
    with pytest.raises(UserError, match="^3 files"):
        check_file_count(3, max_files=2)


def test_classify_page_refuses_too_many_files_and_classifies_none(use_trained_home):
    def png(i):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (10 * i, 90, 160)).save(buf, "PNG")
        return buf.getvalue()

    at = AppTest.from_file(str(APP), default_timeout=180)
    at.switch_page("../pages/classify.py")
    at.run()
    assert not at.exception
    assert any(f"At most {MAX_FILES_PER_UPLOAD} photos at a time" in c.value for c in at.caption)
    files = [(f"p{i}.png", png(i), "image/png") for i in range(MAX_FILES_PER_UPLOAD + 1)]
    at.file_uploader(key="clf_upload").set_value(files)
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "21 files were uploaded at once, more than the limit of 20; remove some and classify them in batches "
        "of 20 or fewer."]
    assert not at.dataframe and not at.get("image")                               # none classified
    assert any("Upload a photo" in i.value for i in at.info)
    at.file_uploader(key="clf_upload").set_value(files[:MAX_FILES_PER_UPLOAD])    # 20 are fine
    at.run()
    assert not at.exception and not at.error
    assert len([d for d in at.dataframe if "probability" in d.value.columns]) == MAX_FILES_PER_UPLOAD


# ------------------------------------------------------------------ 4. ImageNet downloads

def test_imagenet_download_is_loaded_with_weights_only(monkeypatch):
    import torch

    from core.train.models import REGISTRY
    seen = {}

    def fake(url, *args, **kwargs):
        seen.update(kwargs, url=url)
        return {}
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    assert REGISTRY["resnet18"].imagenet() == {}      # TORCH_HOME is empty (conftest): not cached, "downloads"
    assert seen["weights_only"] is True
    assert seen["url"].endswith(".pth")
