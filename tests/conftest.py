"""Fixtures: every test gets a fresh LANDMARKS_HOME; a tiny demo data set is generated once."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")  # tests see tracebacks; users do not

import torch  # noqa: E402

import core.runs.tasks  # noqa: E402,F401 - the job kinds register themselves (as the app, CLI and worker do)

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("LANDMARKS_HOME", str(h))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no stray hub cache
    return h


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """4 classes, 240 images of 48 px: trains to well above chance in seconds at 32 px."""
    from core.data.demo import generate
    out = tmp_path_factory.mktemp("demo")
    generate(out, classes=4, images=240, size=48, seed=0)
    return out


def tiny_config(data, **kw):
    from core.train.config import TrainConfig
    base = dict(data=str(data), model="small_cnn", weights="none", classes=4, epochs=3, batch_size=32,
                lr=1e-3, image_size=32, holdout=0.05, val=0.2, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory, demo_root):
    """A LANDMARKS_HOME with two finished runs on the tiny demo data (read-only for tests:
    copy it before changing anything). Returns (home, [run_id_4_classes, run_id_3_classes])."""
    from core.runs.jobs import run_job
    from core.runs.store import RunStore
    h = tmp_path_factory.mktemp("trained_home")
    old = os.environ.get("LANDMARKS_HOME")
    os.environ["LANDMARKS_HOME"] = str(h)
    try:
        store = RunStore()
        ids = []
        for classes, epochs in ((4, 3), (3, 2)):
            run_id = store.create(tiny_config(demo_root, classes=classes, epochs=epochs), status="running")
            out = run_job(store, run_id)
            assert out["status"] == "done", out
            ids.append(run_id)
    finally:
        if old is None:
            os.environ.pop("LANDMARKS_HOME", None)
        else:
            os.environ["LANDMARKS_HOME"] = old
    return h, ids


@pytest.fixture
def use_trained_home(trained_home, monkeypatch, tmp_path):
    """A private copy of trained_home set as LANDMARKS_HOME; returns (home, run_ids)."""
    import shutil
    h = tmp_path / "trained"
    shutil.copytree(trained_home[0], h)
    monkeypatch.setenv("LANDMARKS_HOME", str(h))
    return h, trained_home[1]
