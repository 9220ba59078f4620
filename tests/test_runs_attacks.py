"""Issue 19's attacks on the runs core, each performed here: run-id collisions, a driver killed
between a run's folder and its rows or mid-claim, two drivers on one new study, step rows after a
resume that lost images, a storage password. Trials train with an instant stand-in (the worker is
replaced by a function that ends the run at once); test_sweeps keeps real end-to-end sweeps."""
import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import pytest

from conftest import tiny_config
from core.errors import UserError
from core.runs import jobs, store as store_mod, sweeps
from core.runs.store import RunStore

ROOT = Path(__file__).resolve().parent.parent


def instant_training(monkeypatch, trained: list | None = None):
    """Every started run ends at once, done, with val_acc = its lr (a stand-in for the worker)."""
    def spawn(store, job_id, slot=None):
        cfg = store.run(job_id).config()
        if trained is not None:
            trained.append((job_id, cfg.lr, cfg.seed))
        store.set(job_id, status="done", finished=time.time(), summary={"val_acc": cfg.lr})
    monkeypatch.setattr(jobs, "spawn", spawn)


def grid_sweep(name: str, demo_root, lrs=(0.001, 0.002, 0.003), seeds=(0, 1)):
    space = {"lr": list(lrs), "seed": list(seeds)}
    return sweeps.create(name, tiny_config(demo_root, epochs=1), space, "grid")


# ------------------------------------------------------------------ 1. ids

def test_colliding_ids_never_touch_the_run_that_owns_the_id(monkeypatch, demo_root):
    store = RunStore()
    first = store.create(tiny_config(demo_root, seed=1))
    ids = iter([first, first, "20990101-000000-small_cnn-stale000", "20990101-000000-small_cnn-fresh000"])
    monkeypatch.setattr(store_mod, "new_run_id", lambda model: next(ids))
    # a stale row without its folder (an old crash) holds the third id: never deleted, never reused
    store.insert_run("20990101-000000-small_cnn-stale000", 1.0, tiny_config(demo_root, seed=9), "failed", "cpu", {})
    second = store.create(tiny_config(demo_root, seed=2))
    assert second == "20990101-000000-small_cnn-fresh000"
    assert store.run(first).config().seed == 1 and store.get(first) is not None
    assert store.get("20990101-000000-small_cnn-stale000")["config"]["seed"] == 9
    assert not (store.root / "20990101-000000-small_cnn-stale000").exists()     # its failed try removed only its own
    assert store.run(second).config().seed == 2


def test_four_creators_at_once_make_every_run_once(monkeypatch, demo_root):
    """The attack: 4 processes creating 250 runs each collided in half the tries and a failed insert
    deleted the other's run. Here ids are drawn from 300 values so that collisions are certain."""
    import random
    rng = random.Random(0)
    lock = threading.Lock()

    def few_ids(model):
        with lock:
            return f"20990101-000000-{model}-{rng.randrange(300):08x}"
    monkeypatch.setattr(store_mod, "new_run_id", few_ids)
    store, made, errors = RunStore(), [], []

    def creator(k):
        for i in range(30):
            try:
                made.append((store.create(tiny_config(demo_root, seed=1000 * k + i)), 1000 * k + i))
            except Exception as e:  # noqa: BLE001 - the test reports it
                errors.append(repr(e))
    threads = [threading.Thread(target=creator, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(made) == 120 and len({r for r, _ in made}) == 120
    for run_id, seed in made:                       # every run's folder and row are its own
        assert store.run(run_id).config().seed == seed == store.get(run_id)["config"]["seed"]
    assert len(store.list()) == 120


def test_run_ids_have_eight_random_hex_digits(demo_root):
    run_id = RunStore().create(tiny_config(demo_root))
    assert len(run_id.rsplit("-", 1)[1]) == 8


# ------------------------------------------------------------------ 2-3. sweep drivers

def _drive_until_the_first_row(name: str) -> None:
    """A sweep driver SIGKILLed by itself between a run's folder and its index rows."""
    from core.runs import index
    index.RunIndex.insert_run = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    sweeps.drive(name, RunStore())


def test_a_driver_killed_between_a_runs_folder_and_its_rows_loses_nothing(monkeypatch, demo_root, home):
    import multiprocessing
    grid_sweep("killed", demo_root)
    # a forked copy of this process (it has imported everything already; a fresh interpreter would
    # import torch again for the same few lines)
    p = multiprocessing.get_context("fork").Process(target=_drive_until_the_first_row, args=("killed",))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    store = RunStore()
    orphans = store.run_folders()
    assert len(orphans) == 1 and store.ids() == []            # a folder without its rows: what the kill left
    trained = []
    instant_training(monkeypatch, trained)
    out = sweeps.drive("killed", store, poll_s=0.01)
    assert out["counts"]["complete"] == 6 and out["finished"]
    assert sorted((lr, seed) for _, lr, seed in trained) == sorted((lr, s) for lr in (0.001, 0.002, 0.003)
                                                                   for s in (0, 1))
    assert len(store.list()) == 6                              # the orphan was adopted, not trained again
    assert orphans[0].name in {c["run_id"] for c in out["configs"]}


def test_a_trial_claimed_by_a_driver_that_died_before_recording_itself_is_adopted(monkeypatch, demo_root):
    grid_sweep("midclaim", demo_root, lrs=(0.001, 0.002), seeds=(0,))
    study = sweeps.load("midclaim")
    assert study._pop_waiting_trial_id() is not None           # claimed, then the driver died: no driver recorded
    instant_training(monkeypatch)
    out = sweeps.drive("midclaim", RunStore(), poll_s=0.01)
    assert out["counts"]["complete"] == 2 and out["counts"]["running"] == 0


def test_a_claim_waits_for_the_claim_lock(monkeypatch, demo_root):
    """Optuna's WAITING→RUNNING is not atomic on SQLite: the driver claims under a lock."""
    grid_sweep("locked", demo_root, lrs=(0.001,), seeds=(0,))
    instant_training(monkeypatch)
    done = threading.Event()
    with sweeps.claim_lock(None):
        t = threading.Thread(target=lambda: (sweeps.drive("locked", RunStore(), poll_s=0.01), done.set()))
        t.start()
        time.sleep(1.0)
        assert sweeps.info("locked")["counts"]["running"] == 0 and not done.is_set()
    t.join(60)
    assert done.is_set() and sweeps.info("locked")["counts"]["complete"] == 1


def test_two_drivers_started_at_once_on_a_new_study_train_each_configuration_once(monkeypatch, demo_root):
    trained, errors = [], []
    instant_training(monkeypatch, trained)
    barrier = threading.Barrier(2)

    def driver():
        try:
            barrier.wait()
            grid_sweep("twice", demo_root)
            sweeps.drive("twice", RunStore(), poll_s=0.01)
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(repr(e))
    threads = [threading.Thread(target=driver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sorted((lr, seed) for _, lr, seed in trained) == sorted((lr, s) for lr in (0.001, 0.002, 0.003)
                                                                   for s in (0, 1))


# ------------------------------------------------------------------ 5. steps

class _Ctx:
    def __init__(self, store, run_id):
        self.store, self.run, self.args = store, store.run(run_id), {}

    def progress(self, force=False, **fields):
        pass

    def should_stop(self):
        return False


def test_steps_stay_unique_and_increasing_when_a_resumed_epoch_is_shorter(demo_root):
    from core.runs.tasks import StoreSink
    store = RunStore()
    run_id = store.create(tiny_config(demo_root))
    sink = StoreSink(_Ctx(store, run_id), flush_s=0)
    for epoch, steps in ((1, range(0, 10)), (2, range(10, 20))):
        for s in steps:
            sink.emit("step", {"step": s, "epoch": epoch, "loss": 1.0, "acc": 0.5, "lr": 0.1})
        sink.emit("epoch", {"epoch": epoch, "train_loss": 1.0})
    sink = StoreSink(_Ctx(store, run_id), flush_s=0)           # resumed from epoch 1 after 2 images vanished:
    sink.emit("resume", {"epoch": 1})                          # the engine counts epoch 2 from 1 * 8 = 8
    for s in range(8, 16):
        sink.emit("step", {"step": s, "epoch": 2, "loss": 1.0, "acc": 0.5, "lr": 0.1})
    sink.flush()
    steps = store.steps(run_id)["step"].tolist()
    assert steps == list(range(0, 18))
    csv_steps = [int(line.split(",")[0]) for line in store.run(run_id).steps_file.read_text().splitlines()[1:]]
    assert csv_steps == steps


# ------------------------------------------------------------------ 9. credentials

def test_a_storage_password_is_never_shown_nor_stored_with_the_url(capsys):
    from core.cli import main
    url = "postgresql://me:s3cr%40t@127.0.0.1:2/sweeps"
    assert sweeps.storage_url(url) == "postgresql://me@127.0.0.1:2/sweeps"
    creds = sweeps._credentials_file()
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600 and json.loads(creds.read_text()) == {
        "postgresql://me@127.0.0.1:2/sweeps": "s3cr@t"}
    assert sweeps._with_password("postgresql://me@127.0.0.1:2/sweeps") == "postgresql://me:s3cr%40t@127.0.0.1:2/sweeps"
    assert main(["sweep", "--status", "x", "--storage", url]) == 2          # loopback, port 2: refused at once
    err = capsys.readouterr().err
    assert "Cannot open the sweep storage postgresql://me@127.0.0.1:2/sweeps" in err
    assert "s3cr" not in err and err.count("\n") == 1


def test_a_storage_password_can_come_from_the_environment_or_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv(sweeps.PASSWORD_ENV, "from-env")
    assert sweeps._with_password("postgresql://me@127.0.0.1/db") == "postgresql://me:from-env@127.0.0.1/db"
    monkeypatch.delenv(sweeps.PASSWORD_ENV)
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.setenv(sweeps.PASSWORD_FILE_ENV, str(tmp_path / "pw"))
    assert sweeps._with_password("postgresql://me@127.0.0.1/db") == "postgresql://me:from-file@127.0.0.1/db"
    monkeypatch.setenv(sweeps.PASSWORD_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(UserError, match="Cannot read the storage password file"):
        sweeps._with_password("postgresql://me@127.0.0.1/db")
