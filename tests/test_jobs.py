"""Runs launched into worker processes: they outlive the launcher, queue per device, can be
cancelled and resumed, and a dead worker shows as interrupted."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import UserError
from core.runs import jobs
from core.runs.launcher import visible_devices
from core.runs.store import RunStore
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent


def wait_for(store, run_id, statuses, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        run = store.get(run_id)
        if run["status"] in statuses:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} still {store.get(run_id)['status']}; log:\n"
                         + (store.run(run_id).dir / "log.txt").read_text()[-3000:])


@pytest.mark.workers
@pytest.mark.e2e
def test_a_worker_outlives_its_launcher_queues_dies_is_cancelled_and_resumes(demo_root, home):
    """Two real workers through a run's whole life (each worker is a process that imports torch: one
    scenario instead of three keeps the suite fast):
    (1) run A is launched by a process that exits at once: A's worker trains on by itself;
    (2) run B waits in the queue while A holds the device;
    (3) A's worker is SIGKILLed mid-run (no chance to clean up): A shows as interrupted, and B starts
        on the next schedule (what every page load does);
    (4) B is cancelled while it runs: it stops at its next step, keeping its checkpoint and epochs;
    (5) A resumes from its last checkpoint with every epoch exactly once and one row per step."""
    import signal
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from core.runs.jobs import launch; from core.runs.store import RunStore; from core.train.config import TrainConfig\n"
            "cfg = TrainConfig(data=%r, model='small_cnn', weights='none', classes=3, epochs=30, batch_size=32,"
            " image_size=24, holdout=0.05)\n"
            "print(launch(cfg, RunStore()))\n") % (str(ROOT), str(demo_root))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, LANDMARKS_HOME=str(home)))
    assert p.returncode == 0, p.stderr
    a = p.stdout.strip().splitlines()[-1]                          # (1) its launcher has exited
    store = RunStore()
    b = jobs.launch(tiny_config(demo_root, epochs=30, classes=3, image_size=24), store)
    assert store.get(b)["status"] == "queued"                      # (2)
    _until_an_epoch(store, a)
    os.killpg(store.get(a)["pid"], signal.SIGKILL)                 # (3)
    t0 = time.time()
    while time.time() - t0 < 60 and store.get(a)["status"] != "interrupted":
        jobs.reap(store)
        time.sleep(0.2)
    assert store.get(a)["status"] == "interrupted"
    done_a = store.epochs(a)["epoch"].tolist()
    assert done_a and done_a == list(range(1, len(done_a) + 1))
    assert jobs.schedule(store) == [b]                             # the device is free again
    _until_an_epoch(store, b)
    assert jobs.cancel(store, b) == "requested"                    # (4)
    run = wait_for(store, b, ("cancelled", "failed"))
    assert run["status"] == "cancelled", run["error"]
    assert store.run(b).has_checkpoint()
    done_b = store.epochs(b)["epoch"].tolist()
    assert done_b and done_b == list(range(1, len(done_b) + 1))
    from core.train.config import TrainConfig                      # (5) a short remainder, for speed
    store.run(a).update_config(TrainConfig.from_dict({**store.get(a)["config"], "epochs": len(done_a) + 1}))
    jobs.resume(store, a)
    run = wait_for(store, a, ("done", "failed"))
    assert run["status"] == "done", run["error"]
    assert run["summary"]["holdout_acc"] is not None
    assert store.epochs(a)["epoch"].tolist() == list(range(1, len(done_a) + 2))
    steps = store.steps(a)
    assert steps["step"].is_unique and steps["step"].tolist() == list(range(1, len(steps) + 1))


def _until_an_epoch(store, run_id, timeout=120):
    t0 = time.time()
    while store.epochs(run_id).empty:
        assert time.time() - t0 < timeout, (store.run(run_id).dir / "log.txt").read_text()[-3000:]
        time.sleep(0.1)


def test_dead_worker_shows_as_interrupted(demo_root):
    store = RunStore()
    run_id = store.create(tiny_config(demo_root), status="running")
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    store.set(run_id, pid=p.pid, heartbeat=time.time() - 60)
    assert run_id in jobs.reap(store)
    assert store.get(run_id)["status"] == "interrupted"


def test_a_reused_pid_does_not_keep_a_dead_run_running(demo_root, tmp_path):
    """After a reboot the worker's pid can belong to another live process: the recorded process
    identity (boot id + start time) tells them apart. Old databases are migrated in place."""
    import sqlite3
    from core.runs.store import SCHEMA_VERSION, process_identity
    store = RunStore()
    alive = store.create(tiny_config(demo_root), status="running")
    store.set(alive, pid=os.getpid(), heartbeat=time.time())       # this very process: alive
    reused = store.create(tiny_config(demo_root), status="running")
    store.set(reused, pid=os.getpid(), proc="another-boot:123", heartbeat=time.time())
    assert process_identity(os.getpid()) and store.get(alive)["proc"] == process_identity(os.getpid())
    assert jobs.reap(store) == [reused]
    assert store.get(reused)["status"] == "interrupted" and store.get(alive)["status"] == "running"

    old = tmp_path / "old"                                          # a schema-1 database keeps its runs
    old.mkdir()
    with sqlite3.connect(old / "runs.db") as c:
        c.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                        "INSERT INTO meta VALUES ('schema_version', '1');"
                        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, created REAL, status TEXT, model TEXT, data TEXT,"
                        " classes INTEGER, device TEXT, config TEXT, pid INTEGER, heartbeat REAL, started REAL,"
                        " finished REAL, cancel INTEGER DEFAULT 0, resume INTEGER DEFAULT 0, error TEXT,"
                        " progress TEXT, summary TEXT, queued_at REAL);"
                        "INSERT INTO runs (run_id, status, model, config) VALUES ('r1', 'done', 'resnet18', '{}');")
    migrated = RunStore(old)
    assert migrated.get("r1")["status"] == "done" and "proc" in migrated.get("r1")
    with sqlite3.connect(old / "runs.db") as c:
        assert c.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)


def pretend_two_gpus(monkeypatch) -> list:
    """A machine with 2 GPUs, visible as CUDA_VISIBLE_DEVICES=4,6; returns the list of the workers
    the queue would start, (run id, CUDA_VISIBLE_DEVICES), none really started."""
    spawned = []
    monkeypatch.setattr(jobs, "gpu_count", lambda: 2)
    monkeypatch.setattr(jobs, "device_key", lambda pref, gpus=1: "cuda" if gpus == 1 else f"cuda*{gpus}")
    monkeypatch.setattr(jobs, "spawn", lambda store, run_id, slot=None: spawned.append((run_id, visible_devices(slot))))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    return spawned


def test_queue_runs_one_per_gpu_and_pins_each_worker(demo_root, monkeypatch):
    """On a (pretend) 2-GPU machine visible as CUDA_VISIBLE_DEVICES=4,6: two runs start at once,
    each pinned to its own GPU; the third waits until one of them ends; resume re-queues on any GPU."""
    spawned = pretend_two_gpus(monkeypatch)
    store = RunStore()
    a, b, c = (jobs.launch(tiny_config(demo_root, seed=i), store) for i in range(3))
    assert spawned == [(a, "4"), (b, "6")]
    assert [store.get(r)["device"] for r in (a, b, c)] == ["cuda:0", "cuda:1", "cuda"]
    assert store.get(c)["status"] == "queued"
    store.set(a, status="done", pid=None)
    assert jobs.schedule(store) == [c] and spawned[-1] == (c, "4")
    store.set(b, status="interrupted")
    jobs.resume(store, b)
    assert spawned[-1] == (b, "6") and store.get(b)["device"] == "cuda:1"


def test_a_two_gpu_run_holds_both_gpus_and_waits_for_both(demo_root, monkeypatch):
    """On a (pretend) 2-GPU machine: a one-GPU run takes GPU 0; a two-GPU run waits until both are
    free, then holds both (the worker sees both, in order); a one-GPU run queued behind it waits;
    a run asking for more GPUs than the machine has is refused in one sentence."""
    spawned = pretend_two_gpus(monkeypatch)
    store = RunStore()
    one = jobs.launch(tiny_config(demo_root, seed=0), store)
    two = jobs.launch(tiny_config(demo_root, seed=1, nproc=2), store)
    after = jobs.launch(tiny_config(demo_root, seed=2), store)
    assert spawned == [(one, "4")]                       # GPU 1 is free, but the 2-GPU run is first in line
    assert store.get(two)["status"] == "queued" and store.get(two)["device"] == "cuda*2"
    assert store.get(after)["status"] == "queued"
    assert store.jobs_ahead(after) == 2
    store.set(one, status="done", pid=None)
    assert jobs.schedule(store) == [two]
    assert spawned[-1] == (two, "4,6") and store.get(two)["device"] == "cuda:0,cuda:1"
    assert store.get(after)["status"] == "queued"
    store.set(two, status="interrupted")
    assert jobs.schedule(store) == [after]
    jobs.resume(store, two)                              # back in the 2-GPU queue, behind the running one
    assert store.get(two)["device"] == "cuda*2" and store.get(two)["status"] == "queued"
    with pytest.raises(UserError, match="asks for 4 GPUs; this machine has 2"):
        jobs.launch(tiny_config(demo_root, seed=3, nproc=4), store)


