"""Fixtures: every test gets a fresh LANDMARKS_HOME and no network; a tiny demo data set and two
trained runs are made once per test session, shared by the pytest-xdist workers through a lock."""
import ipaddress
import json
import os
import shutil
import socket
import sys
import urllib.error
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# pytest-xdist runs N workers: each gets its share of the cores, or N x 2 threads fight over them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")  # tests see tracebacks; users do not


def _exit_without_finalizing():
    """An xdist worker, at the very end (every result sent, the atexit handlers registered after this
    one run): skip the interpreter's finalization, seconds of freeing torch's and Streamlit's objects one
    by one that the controller waits for after the last test."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if os.environ.get("PYTEST_XDIST_WORKER"):
    import atexit
    atexit.register(_exit_without_finalizing)


_MAIN = sys.modules["__main__"]


def pytest_runtest_teardown(item, nextitem):
    """Streamlit's script runner installs each page script as `__main__` and leaves it there; a
    process pool started by a later test in this worker (forkserver/spawn) would run that script
    again in its children ("name '__args' is not defined" for AppTest.from_function): put it back."""
    sys.modules["__main__"] = _MAIN


def _worker_setup():
    """What every process that runs tests needs (not the xdist controller, which only hands tests out:
    importing torch there would delay every worker's start by seconds)."""
    import torch

    import core.runs.tasks  # noqa: F401 - the job kinds register themselves (as the app, CLI and worker do)
    torch.set_num_threads(THREADS)
    _scan_components_once()


def _scan_components_once():
    """Streamlit's AppTest scans the metadata of every installed package for custom components
    each time a test app first runs (~0.65 s on this venv: a third of a typical page test's CPU).
    The installed packages cannot change during a test session: scan once per process."""
    import functools

    from streamlit.components.v2 import manifest_scanner
    if not hasattr(manifest_scanner.scan_component_manifests, "cache_info"):
        manifest_scanner.scan_component_manifests = functools.cache(manifest_scanner.scan_component_manifests)


# ------------------------------------------------------------------ no network

# Subprocesses (workers, streamlit, torchrun) cannot be guarded in-process: they get a proxy that
# nothing listens on, which urllib (torch.hub's ImageNet weights) and httpx honour, so any HTTP(S)
# request they make for a non-loopback host is refused on this machine. In-process, a connection
# to that proxy counts as a connection to the internet. Not covered in a subprocess: raw sockets,
# such as dashboard.common.internet_reachable's probe in a streamlit server (it needs a switch of
# its own, e.g. an environment variable that answers "offline" without probing).
DEAD_PROXY = ("127.0.0.1", 9)                  # the discard port: nothing listens there
OFFLINE_ENV = {"HTTP_PROXY": f"http://{DEAD_PROXY[0]}:{DEAD_PROXY[1]}",
               "HTTPS_PROXY": f"http://{DEAD_PROXY[0]}:{DEAD_PROXY[1]}",
               "ALL_PROXY": f"http://{DEAD_PROXY[0]}:{DEAD_PROXY[1]}",
               "NO_PROXY": "127.0.0.1,localhost,::1",
               "HF_HUB_OFFLINE": "1",                                 # timm's pretrained weights
               "LANDMARKS_OFFLINE": "1",                              # the app's "is the internet there" probe
               "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}


class NetworkUsed(OSError):
    """What a test sees when it connects outside loopback (an OSError: code that handles being
    offline handles this too; the test still fails at teardown)."""


def _outside(address) -> bool:
    """True for an AF_INET/AF_INET6 address outside 127.0.0.0/8 and ::1 (or the dead proxy)."""
    if not isinstance(address, tuple) or len(address) < 2:
        return False                                                  # AF_UNIX paths and the like
    host, port = address[0], address[1]
    if isinstance(host, bytes):
        host = host.decode()
    if host == "localhost":
        return False
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return True                                                   # a name: it would be looked up
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    if (str(ip), port) == DEAD_PROXY:
        return True                                                   # through the proxy: meant for outside
    return not ip.is_loopback


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection outside loopback fails the test, even if the code under test caught the error
    (an offline fallback must not hide that the test reached for the internet)."""
    tried: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address):
        if _outside(address):
            what = ("a web request through the test's dead proxy (meant for the internet)"
                    if tuple(address[:2]) == DEAD_PROXY else f"{address[0]} port {address[1]}")
            tried.append(what)
            raise NetworkUsed(f"tests may not use the network: a connection to {what} was refused")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    def no_download(url, *a, **k):
        raise urllib.error.URLError(f"tests run offline: {url} is not downloaded")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    # ImageNet weights are never downloaded here, with or without internet: torch.hub refuses before
    # connecting, as it does offline (so core.runs.reproduce.plan picks its stand-in, deterministically)
    import torch
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    for k, v in OFFLINE_ENV.items():
        monkeypatch.setenv(k, v)
        monkeypatch.setenv(k.lower(), v)
    yield tried
    if tried:
        pytest.fail("this test reached for the network (only loopback is allowed): " + "; ".join(tried),
                    pytrace=False)


# ------------------------------------------------------------------ a fresh home per test

def pytest_sessionstart(session):
    """The xdist controller is idle while its workers start: it deletes now the old sessions' temporary
    folders that pytest would delete at the very end, after the last test (~0.8 GB of small files
    each: seconds of I/O at the end of every run). In a thread; each folder is first renamed to
    pytest's own garbage- prefix, so that pytest's cleanup and this one never delete the same tree."""
    config = session.config
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        return
    import threading
    import uuid
    current = config._tmp_path_factory.getbasetemp()
    keep = int(config.getini("tmp_path_retention_count"))
    try:
        number = int(current.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):               # --basetemp given: nothing numbered to clean
        return
    old = []
    for d in current.parent.glob("pytest-*"):
        suffix = d.name.rsplit("-", 1)[1]
        if suffix.isdigit() and int(suffix) <= number - keep and not (d / ".lock").exists():
            try:
                old.append(d.rename(d.with_name(f"garbage-{uuid.uuid4()}")))
            except OSError:
                pass
    if old:
        threading.Thread(target=lambda: [shutil.rmtree(d, ignore_errors=True) for d in old], daemon=True).start()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("LANDMARKS_HOME", str(h))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no stray hub cache
    return h


# ------------------------------------------------------------------ jobs: in this process unless asked

def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        _worker_setup()
    config.addinivalue_line("markers", "workers: jobs this test starts run in worker processes of their own, "
                                       "as in the product (the default in tests: they wait, see `started_jobs`)")
    config.addinivalue_line("markers", "e2e: a scenario across real processes (workers, the CLI, torchrun, a "
                                       "server and a browser) killed, resumed and finished; `make e2e` runs them, "
                                       "`make test` the rest (see the README)")


@pytest.fixture(autouse=True)
def started_jobs(request, monkeypatch):
    """A job a test starts (a page's Launch, the Dataset page's automatic scan…) is claimed and then
    waits: a worker process of its own would import torch again (seconds of CPU each) for work that
    most tests never look at. A test that wants the job done calls `started_jobs.run()` (it runs in this
    process) or uses `jobs_here`; a test of worker processes themselves is marked `workers`."""
    if request.node.get_closest_marker("workers"):
        return None
    from core.runs import jobs as jobs_module
    here = Here(defer=True)
    monkeypatch.setattr(jobs_module, "spawn", here.spawn)
    return here


# ------------------------------------------------------------------ made once, shared by every worker

@contextmanager
def _env(**kw):
    old = {k: os.environ.get(k) for k in kw}
    os.environ.update({k: str(v) for k, v in kw.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shared(tmp_path_factory, name: str, make):
    """`make(folder)` once per test session, whatever the number of xdist workers: the first worker
    makes it under a file lock in the folder all workers share; the others wait and read it back.
    Returns what `make` returned (JSON)."""
    from filelock import FileLock
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent                                  # the base temp of the whole session
    folder, done = root / f"shared-{name}", root / f"shared-{name}.json"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)       # a half-made one from a crashed worker
            folder.mkdir()
            done.write_text(json.dumps(make(folder)))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """4 classes, 240 images of 48 px: trains to well above chance in seconds at 32 px. Read-only."""
    def make(out):
        from core.data.demo import generate
        generate(out, classes=4, images=240, size=48, seed=0)
        return str(out)
    return Path(shared(tmp_path_factory, "demo", make))


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
    def make(h):
        from core.runs.jobs import run_job
        from core.runs.store import RunStore
        with _env(LANDMARKS_HOME=h):
            store = RunStore()
            ids = []
            for classes, epochs in ((4, 3), (3, 2)):
                run_id = store.create(tiny_config(demo_root, classes=classes, epochs=epochs), status="running")
                out = run_job(store, run_id)
                assert out["status"] == "done", out
                ids.append(run_id)
        return {"home": str(h), "ids": ids}
    made = shared(tmp_path_factory, "trained_home", make)
    return Path(made["home"]), made["ids"]


class Here:
    """Jobs started while a test runs, run in the test's process (see jobs_here)."""

    def __init__(self, defer: bool):
        self.defer, self.waiting = defer, []

    def spawn(self, store, job_id, slot=None):
        if self.defer:
            self.waiting.append((store, job_id))
        else:
            self.run_one(store, job_id)

    @staticmethod
    def run_one(store, job_id):
        from core.runs import jobs
        store.set_job(job_id, pid=os.getpid())
        jobs.run_job(store, job_id)

    def run(self) -> int:
        """Run the jobs started so far (deferred), in order; returns how many ran."""
        n = 0
        while self.waiting:
            self.run_one(*self.waiting.pop(0))
            n += 1
        return n


def jobs_here(monkeypatch, defer: bool = False) -> Here:
    """Started jobs run in this very process (a real job, without a worker process that imports torch
    again): for tests of what starts and drives jobs (pages, sweeps, reproduce), not of worker
    processes (tests/test_jobs.py and the browser journey have those). With `defer`, a started job
    stays claimed, as a worker still importing torch leaves it, until the test calls `.run()`."""
    from core.runs import jobs
    here = Here(defer)
    monkeypatch.setattr(jobs, "spawn", here.spawn)
    return here


@pytest.fixture
def use_trained_home(trained_home, monkeypatch, tmp_path):
    """A private copy of trained_home set as LANDMARKS_HOME; returns (home, run_ids)."""
    h = tmp_path / "trained"
    shutil.copytree(trained_home[0], h)
    monkeypatch.setenv("LANDMARKS_HOME", str(h))
    return h, trained_home[1]
