"""Security hardening: loopback-only server config (however the app is started), paths typed in
the browser confined to the operator's roots (symlinks found in datasets/ too), a cap on files per
upload, and ImageNet downloads loaded with weights_only."""
import io
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import access, paths
from core.data.uploads import MAX_FILES_PER_UPLOAD, check_file_count
from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "pages"
APP = ROOT / "dashboard" / "app.py"


def refusal(typed: str, what: str = "data set folder", roots=None) -> str:
    with pytest.raises(UserError) as e:
        access.confine(typed, what, roots)
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


def listening(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP `port` (Linux: /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:        # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr)                                 # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_the_dashboard_listens_on_loopback_when_started_from_another_folder(tmp_path):
    """The attack: `streamlit run /abs/path/dashboard/app.py` from a folder without .streamlit/
    served on every interface. Only 127.0.0.1 is ever contacted here."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["LANDMARKS_HOME"] = str(tmp_path / "home")
    p = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
                          "--server.headless", "true"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.time()
        while not listening(port) and p.poll() is None and time.time() - t0 < 60:
            time.sleep(0.05)
        bound = listening(port)
        assert bound, p.stdout.read() if p.poll() is not None else "nothing listens"
        assert all(ipaddress.ip_address(a).is_loopback for a in bound), bound
        import httpx
        assert httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=30).text == "ok"
    finally:
        p.kill()
        p.wait()


@pytest.fixture
def st_config():
    """Streamlit's process-wide configuration, read again from scratch after the test."""
    from streamlit import config
    saved = config._main_script_path
    yield config
    config._main_script_path = saved
    config.get_config_options(force_reparse=True)


def test_streamlit_reads_the_repository_settings_beside_the_app_from_any_folder(tmp_path, monkeypatch, st_config):
    monkeypatch.chdir(tmp_path)
    st_config._main_script_path = str(APP)                    # what `streamlit run APP` sets first
    st_config.get_config_options(force_reparse=True)
    got = {k: st_config.get_option(k) for k in ("server.address", "server.maxUploadSize", "client.showErrorDetails",
                                                "client.toolbarMode")}
    assert got == {"server.address": "127.0.0.1", "server.maxUploadSize": 20, "client.showErrorDetails": "none",
                   "client.toolbarMode": "minimal"}
    assert (ROOT / "dashboard" / ".streamlit" / "config.toml").resolve() == ROOT / ".streamlit" / "config.toml"


def test_the_entry_point_holds_the_limits_unless_given_explicitly(st_config):
    from dashboard import serving
    elsewhere = "/home/someone/.streamlit/config.toml"
    for key, value in (("server.maxUploadSize", 200), ("client.showErrorDetails", "full"),
                       ("client.toolbarMode", "developer"), ("server.address", "127.0.0.1")):
        st_config.set_option(key, value, where_defined=elsewhere)
    assert serving.hold() is None
    assert [st_config.get_option(k) for k in serving.HELD] == [20, "none", "minimal"]
    flag = next(iter(serving.EXPLICIT))
    st_config.set_option("server.maxUploadSize", 500, where_defined=flag)     # --server.maxUploadSize 500
    serving.hold()
    assert st_config.get_option("server.maxUploadSize") == 500


REFUSAL = ("This workbench has no login and serves only this machine, but this server listens on {}; to expose "
           "it on purpose, start it with --server.address ADDRESS (or LANDMARKS_ALLOW_REMOTE=1), preferably behind "
           "an authenticating proxy (see SECURITY.md).")


@pytest.mark.parametrize("address, where, env, refused", [
    (None, "default", None, "every network interface"),
    ("0.0.0.0", "/tmp/x/.streamlit/config.toml", None, "address 0.0.0.0"),
    ("192.168.1.20", "/tmp/x/.streamlit/config.toml", None, "address 192.168.1.20"),
    ("0.0.0.0", "flag", None, None),
    ("0.0.0.0", "env", None, None),
    (None, "default", "1", None),
    ("127.0.0.1", "default", None, None), ("127.0.0.2", "default", None, None), ("::1", "default", None, None),
    ("localhost", "default", None, None), ("unix:///tmp/landmarks.sock", "default", None, None)])
def test_a_server_beyond_loopback_is_refused_unless_asked_for(st_config, monkeypatch, address, where, env, refused):
    from dashboard import serving
    monkeypatch.setattr(serving, "under_test", lambda: False)
    if env:
        monkeypatch.setenv(serving.REMOTE_ENV, env)
    else:
        monkeypatch.delenv(serving.REMOTE_ENV, raising=False)
    defined = {"default": "<default>", "flag": st_config._DEFINED_BY_FLAG, "env": st_config._DEFINED_BY_ENV_VAR}
    st_config.set_option("server.address", address, where_defined=defined.get(where, where))
    assert serving.refusal() == (REFUSAL.format(refused) if refused else None)


def test_the_app_shows_the_refusal_and_nothing_else(st_config, monkeypatch, home):
    from dashboard import serving
    monkeypatch.setattr(serving, "under_test", lambda: False)
    monkeypatch.delenv(serving.REMOTE_ENV, raising=False)
    st_config.set_option("server.address", None, where_defined="<default>")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] == [REFUSAL.format("every network interface")]
    assert not at.selectbox and not at.button and not at.markdown


# ------------------------------------------------------------------ 2. typed paths confined

def test_confine_inside_the_datasets_folder_is_allowed(home):
    inside = paths.datasets_dir() / "gld"
    inside.mkdir()
    assert access.confine(str(inside)) == inside.resolve()
    assert access.confine(f"  {inside}  ") == inside.resolve()                 # typed with spaces
    assert access.confine(str(paths.datasets_dir() / "not-yet")) == (paths.datasets_dir() / "not-yet").resolve()
    assert access.browser_roots() == [paths.datasets_dir().resolve()]


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
    assert access.confine(str(paths.datasets_dir() / "alias")) == (paths.datasets_dir() / "real").resolve()


def test_landmarks_data_roots_are_honoured(home, tmp_path, monkeypatch):
    a, b = tmp_path / "mnt_a", tmp_path / "mnt_b"
    (b / "gldv2").mkdir(parents=True)
    a.mkdir()
    with pytest.raises(UserError):
        access.confine(str(b / "gldv2"))
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", os.pathsep.join([str(a), "", str(b)]))
    assert access.browser_roots() == [paths.datasets_dir().resolve(), a.resolve(), b.resolve()]
    assert access.confine(str(b / "gldv2")) == (b / "gldv2").resolve()
    assert access.confine(str(a)) == a.resolve()
    msg = refusal(str(tmp_path / "mnt_c"))
    assert str(a) in msg and str(b) in msg


def test_a_symlink_in_datasets_leading_outside_is_not_offered(home, tmp_path, monkeypatch):
    """The attack: a link datasets/escape -> a folder outside the roots was offered by the picker
    with its outside target. Links that stay inside the roots are still offered."""
    from core.data import registry
    outside = tmp_path / "outside"
    (outside / "class_a").mkdir(parents=True)
    (paths.datasets_dir() / "escape").symlink_to(outside, target_is_directory=True)
    (paths.datasets_dir() / "real" / "arch").mkdir(parents=True)
    (paths.datasets_dir() / "alias").symlink_to(paths.datasets_dir() / "real", target_is_directory=True)
    mnt = tmp_path / "mnt"
    (mnt / "gld" / "tower").mkdir(parents=True)
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", str(mnt))
    (paths.datasets_dir() / "mounted").symlink_to(mnt / "gld", target_is_directory=True)
    (paths.datasets_dir() / "dangling").symlink_to(tmp_path / "nowhere", target_is_directory=True)

    def script():
        from dashboard.common import dataset_picker
        dataset_picker()
    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception
    offered = at.selectbox(key="dataset").options
    assert offered == ["Demo (synthetic landmarks)", "gld", "real", "Other path…"], offered
    assert str(outside) not in page_text(at)
    assert registry.discover() == [(paths.datasets_dir() / "real").resolve(), (mnt / "gld").resolve()]
    assert registry.by_path(outside) is None                             # not even remembered
    # a folder an earlier version remembered through such a link is no longer offered either
    registry.remember(outside, source="typed", touch=False)
    at = AppTest.from_function(script, default_timeout=60).run()
    assert "outside" not in at.selectbox(key="dataset").options
    assert sorted(d["name"] for d in registry.listed(browser=True)) == ["gld", "real"]
    assert "outside" in [d["name"] for d in registry.listed()]          # the entry itself is kept, only not offered


def test_weight_files_may_also_come_from_runs(home):
    ckpt = paths.runs_dir() / "r1" / "checkpoints" / "last.pt"
    assert access.confine(str(ckpt), "weight file", access.weight_roots()) == ckpt.resolve()
    with pytest.raises(UserError, match="^The data set folder must be under"):
        access.confine(str(ckpt))                                                  # not a data root
    assert refusal("/etc/passwd", "weight file", access.weight_roots()).startswith("The weight file must be under")


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
    assert [e.value for e in at.error] == [refusal("/etc/passwd", "weight file", access.weight_roots())]
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
