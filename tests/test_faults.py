"""Nothing is lost when the process, the disk or the database goes wrong: interrupted CLI runs
resume at once, a full disk fails a run with a sentence, vanished images leave a resumed run,
and the run folders rebuild a missing, empty or damaged index."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import UserError
from core.runs import jobs
from core.runs.store import IndexDamaged, RunStore
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent


def cli_proc(home, *args):
    env = dict(os.environ, LANDMARKS_HOME=str(home), PYTHONPATH=str(ROOT))
    # a shell's background job ignores SIGINT, and a child would inherit that: give it the default back
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def cli(home, *args):
    p = cli_proc(home, *args)
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def start_cli_run(home, demo_root, epochs=2000):
    """A CLI training run (long enough never to finish before the test stops it), returned once its
    first epoch is stored."""
    p = cli_proc(home, "train", "--data", str(demo_root), "--model", "small_cnn", "--weights", "none",
                 "--classes", "3", "--epochs", str(epochs), "--image-size", "24", "--holdout", "0.05")
    store, t0 = RunStore(), time.time()
    while time.time() - t0 < 120:
        runs = store.list()
        if runs and not store.epochs(runs[0]["run_id"]).empty:
            return p, store, runs[0]["run_id"]
        time.sleep(0.2)
    p.kill()
    raise AssertionError("the CLI run stored no epoch: " + p.communicate()[1][-2000:])


def _stopped_by(p, sig, store, run_id):
    """`sig` to a CLI run: Ctrl-C and SIGTERM end it with exit 130, no traceback, marked interrupted."""
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert store.get(run_id)["status"] == "interrupted"
    assert json.loads(store.run(run_id).record_file.read_text())["status"] == "interrupted"


def _next_epoch(p, store, run_id, after: int):
    t0 = time.time()
    while len(store.epochs(run_id)) <= after:
        assert p.poll() is None and time.time() - t0 < 120, p.communicate()[1][-2000:]
        time.sleep(0.2)


@pytest.mark.e2e
def test_a_cli_run_stopped_by_ctrl_c_sigterm_or_kill_resumes_from_the_cli(home, demo_root, capsys):
    """One run through every way a terminal stops it (each CLI run is a process that imports torch:
    one scenario, three processes): Ctrl-C ends the run interrupted; `train --resume` goes on and
    SIGTERM ends it the same way; resumed again and killed -9 (no chance to record anything), it is
    resumable at once from the CLI (the dead process is seen as dead), and finishes with every epoch
    exactly once."""
    import dataclasses
    from core.cli import main
    p, store, run_id = start_cli_run(home, demo_root)
    _stopped_by(p, signal.SIGINT, store, run_id)
    events = [e["kind"] for e in store.events(run_id)]
    assert events.count("interrupted") == 1
    for sig in (signal.SIGTERM, signal.SIGKILL):
        done = len(store.epochs(run_id))
        p = cli_proc(home, "train", "--resume", run_id)
        _next_epoch(p, store, run_id, done)
        if sig == signal.SIGTERM:
            _stopped_by(p, sig, store, run_id)
        else:
            p.kill()
            p.communicate()
            assert store.get(run_id)["status"] == "running"       # as the dead process left it
    assert [e["kind"] for e in store.events(run_id)].count("interrupted") == 2
    store.run(run_id).update_config(dataclasses.replace(store.run(run_id).config(), epochs=len(store.epochs(run_id)) + 1))
    capsys.readouterr()
    assert main(["train", "--resume", run_id, "--json"]) in (0, None)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "done"
    ep = store.epochs(run_id)["epoch"].tolist()
    assert ep == list(range(1, len(ep) + 1))


def test_a_full_disk_fails_the_run_with_a_sentence_and_keeps_it(demo_root, monkeypatch):
    from core.train import engine
    real, calls = engine.save_checkpoint, []

    def save(path, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **kw)
    monkeypatch.setattr(engine, "save_checkpoint", save)
    store = RunStore()
    run_id = store.create(tiny_config(demo_root, epochs=3), status="running")
    out = jobs.run_job(store, run_id)
    assert out["status"] == "failed"
    assert out["error"].startswith("The disk is full (") and out["error"].endswith("free space, then resume.")
    run = store.run(run_id)
    assert run.has_checkpoint() and store.epochs(run_id)["epoch"].tolist() == [1, 2]
    monkeypatch.setattr(engine, "save_checkpoint", real)
    store.set(run_id, status="running", args={"resume": True})
    assert jobs.run_job(store, run_id)["status"] == "done"          # space freed: resume finishes it


def test_resume_drops_images_that_vanished_instead_of_training_on_blanks(tmp_path):
    import shutil
    import pandas as pd
    from core.data.demo import generate
    data = tmp_path / "data"
    generate(data, classes=3, images=120, size=32, seed=1)
    store = RunStore()
    run_id = store.create(tiny_config(data, classes=3, epochs=2, holdout=0.1), status="running")

    class StopAfterOne:
        inner = None

        def emit(self, kind, row):
            self.inner.emit(kind, row)
            self.stop = getattr(self, "stop", False) or kind == "epoch"

        def should_stop(self):
            return getattr(self, "stop", False)
    assert jobs.run_job(store, run_id, sink=StopAfterOne())["status"] == "cancelled"
    split = pd.read_csv(store.run(run_id).split_file)
    gone = split.groupby("split").head(2)["path"].tolist()           # 2 of each split vanish / break
    for i, p in enumerate(gone):
        Path(p).unlink() if i % 2 else Path(p).write_bytes(b"broken")
    store.set(run_id, status="running", args={"resume": True})
    assert jobs.run_job(store, run_id)["status"] == "done"
    ev = store.evals(run_id)
    n_left = {s: int((split["split"] == s).sum()) - 2 for s in ("train", "val", "holdout")}
    assert {s: ev[s]["n"] for s in n_left} == n_left                  # evaluated without them
    assert not set(gone) & set(store.run(run_id).predictions("holdout")["path"])
    dropped = [e["message"] for e in store.events(run_id) if e["kind"] == "dropped"]
    assert dropped and dropped[0].startswith("6 image(s) of the split are missing or unreadable now")
    shutil.rmtree(data)


def _here(capsys, *args):
    """`python -m core ARGS` in this process: (exit code, stdout, stderr)."""
    from core.cli import main
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(store, run_id):
    r = store.get(run_id)
    return (r["status"], r["config"], r["summary"], store.epochs(run_id).to_dict("list"),
            store.steps(run_id)[["step", "epoch", "loss"]].to_dict("list"), store.evals(run_id),
            [(e["kind"], e["message"]) for e in store.events(run_id)])


@pytest.mark.parametrize("damage", ["missing", "empty", "garbage", "corrupt_page"])
def test_a_lost_or_damaged_index_is_reported_and_rebuilt_from_the_folders(use_trained_home, capsys, damage):
    store, ids = RunStore(), use_trained_home[1]          # two finished runs
    before = {i: _snapshot(store, i) for i in ids}
    db = store.db
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    if damage == "missing":
        db.unlink()
    elif damage == "empty":
        db.write_bytes(b"")
    elif damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:                                            # partly corrupt: one page of the file overwritten
        data = bytearray(db.read_bytes())
        data[4096:8192] = os.urandom(4096)
        db.write_bytes(bytes(data))
    with pytest.raises(IndexDamaged, match=r"rebuild it.*python -m core runs rebuild"):
        RunStore().list()
    code, _, err = _here(capsys, "runs", "list")                    # the CLI says so too, exit 2
    assert code == 2 and "rebuild" in err and "Traceback" not in err
    assert db.exists() or damage == "missing"                        # never silently replaced by an empty one
    code, out, err = _here(capsys, "runs", "rebuild", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["runs"] == 2
    store = RunStore()
    assert {i: _snapshot(store, i) for i in ids} == before
    if damage in ("garbage", "corrupt_page"):
        assert list(db.parent.glob("runs.db.damaged-*"))             # the damaged file is kept aside


def test_an_old_index_is_migrated_and_its_runs_get_their_folder_files(use_trained_home):
    import sqlite3
    store, run_id = RunStore(), use_trained_home[1][0]
    with sqlite3.connect(store.db) as c:                             # turn it back into a schema-2 database
        c.executescript("DROP TABLE jobs; DROP TABLE runs;"
                        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, created REAL, status TEXT, model TEXT, data TEXT,"
                        " classes INTEGER, device TEXT, config TEXT, pid INTEGER, heartbeat REAL, started REAL,"
                        " finished REAL, cancel INTEGER DEFAULT 0, resume INTEGER DEFAULT 0, error TEXT,"
                        " progress TEXT, summary TEXT, queued_at REAL, proc TEXT);"
                        "UPDATE meta SET value='2';")
        c.execute("INSERT INTO runs (run_id, created, status, model, config, summary) VALUES (?,?,?,?,?,?)",
                  (run_id, 1.0, "done", "small_cnn", json.dumps({"model": "small_cnn"}), json.dumps({"val_acc": 0.5})))
    for f in ("run.json", "epochs.json", "evals.json", "events.jsonl"):
        (store.run(run_id).dir / f).unlink()
    store = RunStore()
    assert store.get(run_id)["status"] == "done" and store.get(run_id)["summary"] == {"val_acc": 0.5}
    assert json.loads(store.run(run_id).record_file.read_text())["status"] == "done"
    assert len(json.loads(store.run(run_id).epochs_file.read_text())) == 3     # the shared run trained 3 epochs


def test_a_failed_run_creation_leaves_no_orphan_folder(monkeypatch):
    from core.runs import store as store_mod
    store = RunStore()

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store_mod, "atomic_write", full)
    with pytest.raises(UserError, match="Cannot create a run in .*No space left on device"):
        store.create(tiny_config("."))
    assert store.run_folders() == [] and not [d for d in store.root.iterdir() if d.is_dir()]
    assert store.list() == []


def test_a_new_job_kind_is_one_function_and_one_line(monkeypatch):
    """Registration, the queue (a job that needs no device starts at once), progress, result."""
    monkeypatch.setattr(jobs, "spawn", lambda store, job_id, slot=None: None)   # run it here instead

    @jobs.kind("count")
    def count(ctx):
        for i in range(ctx.args["n"]):
            ctx.check_stop()
            ctx.progress(force=True, done=i + 1, total=ctx.args["n"])
        return {"sum": sum(range(ctx.args["n"]))}
    try:
        store = RunStore()
        job_id = jobs.submit(store, "count", {"n": 5})
        assert store.job(job_id)["status"] == "starting"             # no device slot needed: claimed at once
        assert jobs.run_job(store, job_id)["status"] == "done"
        job = jobs.status(store, job_id)
        assert job["result"] == {"sum": 10} and job["progress"] == {"done": 5, "total": 5} and not job["active"]
        second = jobs.submit(store, "count", {"n": 5})
        jobs.cancel(store, second)                                   # a started job stops at its next check
        assert jobs.run_job(store, second)["status"] == "cancelled"
    finally:
        jobs.KINDS.pop("count", None)


def test_the_app_says_the_index_is_damaged_and_rebuilds_it_with_one_click(use_trained_home):
    from streamlit.testing.v1 import AppTest
    store, ids = RunStore(), use_trained_home[1]
    for suffix in ("", "-wal", "-shm"):
        Path(str(store.db) + suffix).unlink(missing_ok=True)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "is missing but 2 run folder(s) exist" in at.error[0].value
    at.button(key="app_rebuild").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert sorted(r["run_id"] for r in RunStore().list()) == sorted(ids)
