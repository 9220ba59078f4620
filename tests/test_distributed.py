"""One run on several processes (torch.distributed, gloo on the CPU): launched by --nproc and by
torchrun directly, killed and resumed; and the sharding and gathering it rests on, without processes."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.runs.store import RunStore
from core.train.distributed import shard, shard_size, unshard
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
GLOO = torch.distributed.is_available() and torch.distributed.is_gloo_available()
needs_gloo = pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")

# the two-process run: 2 x 16 images per step, killed after its first checkpoint, then resumed for
# 2 more epochs (that it learns as well as one process at 32 a step is a benchmark:
# `python bench/learning.py nproc`)
RUN = dict(model="small_cnn", weights="none", classes=4, epochs=500, image_size=16, holdout=0.3, val=0.2,
           recipe="poster", lr=3e-3, device="cpu", seed=0)


def _flags(**kw) -> list[str]:
    out = []
    for k, v in kw.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _popen(home, args):
    env = dict(os.environ, LANDMARKS_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def _finish(p, timeout=240):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError("timed out: " + err[-3000:])
    assert p.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def _processes_of(arg: str) -> list[int]:
    """Processes alive running `-m core ...` with `arg` (the test's data path) among their arguments."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in cmd and b"core" in cmd:
            pids.append(int(d.name))
    return pids


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e for e in env if e.startswith(b"RANK=")]
    return int(ranks[0][5:]) if ranks else None


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(10):
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid == ancestor:
            return True
    return False


def _kill_rank_1_after_an_epoch(store, run_id: str, done: int, killed: list) -> None:
    """(In a thread) once the resumed run stores a new epoch, SIGKILL its process of rank 1."""
    t0 = time.time()
    while time.time() - t0 < 180 and not killed:
        if len(store.epochs(run_id)) > done:
            victim = next((int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()
                           and _rank_of(int(d.name)) == 1 and _descends_from(int(d.name), os.getpid())), None)
            if victim:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
        time.sleep(0.2)


@needs_gloo
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the run's processes in /proc")
@pytest.mark.e2e
def test_a_two_process_run_killed_two_ways_resumed_and_finished(home, demo_root, capfd):
    """(1) torchrun starts a run directly (every process runs `python -m core train`, rank 0 makes
    the run); (2) SIGKILL of torchrun's process group after the first checkpoint: its processes,
    in sessions of their own, notice and leave; (3) `train --resume` (the CLI, run in this process:
    each process of a distributed run imports torch, and the suite pays for every one) goes on with
    2 processes (the run's nproc: its job starts torchrun), and one of them is killed: the CLI ends
    with one sentence and exit 2 (no traceback on the terminal; the processes' tracebacks go to the
    run's log) and leaves nothing in /tmp; (4) resumed again it finishes: every epoch stored once,
    the evaluations gathered whole, and the Runs page says how it trained."""
    import threading
    from core.cli import main
    tmp_before = set(Path("/tmp").glob("landmarks-ddp-*"))
    p = _popen(home, ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "core", "train",
                      "--data", str(demo_root), *_flags(**RUN), "--batch-size", "16"])
    store, t0, run_id = RunStore(), time.time(), None
    while run_id is None and time.time() - t0 < 120 and p.poll() is None:
        for r in store.list():
            if r["config"]["nproc"] == 2 and store.run(r["run_id"]).has_checkpoint():
                run_id = r["run_id"]
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)               # (2) torchrun, with no chance to stop its processes
    err = p.communicate()[1]
    assert run_id, "no checkpoint: " + err[-3000:]
    run = store.run(run_id)
    t0 = time.time()
    while _processes_of(str(demo_root)) and time.time() - t0 < 30:
        time.sleep(0.2)
    assert not _processes_of(str(demo_root))       # none goes on training into the run
    assert run.config().nproc == 2

    killed: list = []                              # (3) resumed, and one process of two killed
    done = len(store.epochs(run_id))
    killer = threading.Thread(target=_kill_rank_1_after_an_epoch, args=(store, run_id, done, killed), daemon=True)
    killer.start()
    capfd.readouterr()
    assert main(["train", "--resume", run_id]) == 2
    killer.join(5)
    err = capfd.readouterr().err
    assert killed, "no process of rank 1 was found to kill"
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]            # (a progress bar may still hold the start of the line)
    assert "error: Process 1 of 2 stopped without a report (killed by SIGKILL)" in last, err[-1000:]
    assert store.get(run_id)["status"] == "failed" and store.get(run_id)["error"].startswith("Process 1 of 2")
    assert set(Path("/tmp").glob("landmarks-ddp-*")) == tmp_before
    assert not run.ddp_dir.exists()                # the launch's reports are cleaned

    epochs = int(store.epochs(run_id)["epoch"].max()) + 1     # (4) one epoch left, whenever the kill landed
    run.update_config(dataclasses.replace(run.config(), epochs=epochs))
    assert main(["train", "--resume", run_id, "--json"]) == 0
    out, err = capfd.readouterr()
    two = json.loads(out.strip().splitlines()[-1])
    assert two["status"] == "done", err[-3000:]
    assert two["epochs_completed"] == epochs and store.get(run_id)["status"] == "done"
    split = pd.read_csv(run.split_file)
    n_train = int((split["split"] == "train").sum())
    ep = store.epochs(run_id)["epoch"].tolist()
    assert ep == list(range(1, epochs + 1))
    assert [r["epoch"] for r in json.loads(run.epochs_file.read_text())] == ep
    steps = store.steps(run_id)                    # rank 0's steps, one row each: 2 x 16 images a step
    assert steps["step"].tolist() == list(range(1, epochs * -(-n_train // 32) + 1))
    kinds = [(e["kind"], e["message"]) for e in store.events(run_id)]
    assert sum(m.startswith("distributed: 2 processes (gloo; cpu, cpu)") and "32 images" in m
               for _, m in kinds) == 3             # the first segment and the two resumed ones
    assert ("resume", "resumed from the command line") in kinds
    assert store.get(run_id)["summary"]["processes"] == 2
    # evaluations gathered whole, in the split's order, as one process writes them
    evals = store.evals(run_id)
    assert {s: evals[s]["n"] for s in evals} == split["split"].value_counts().to_dict()
    pred = run.predictions("holdout")
    assert pred["path"].tolist() == split.loc[split["split"] == "holdout", "path"].tolist()
    assert (pred["pred"] == pred["target"]).mean() == pytest.approx(two["holdout_acc"])
    assert f"epoch {epochs}" in err         # rank 0's progress bar on the terminal
    from streamlit.testing.v1 import AppTest         # the Runs page says how it trained
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "pages" / "runs.py"), default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    assert any("batch 16 per process" in m.value and "2 processes" in m.value for m in at.markdown)


def test_nproc_is_a_checked_config_field(tmp_path):
    from core.errors import UserError
    from core.train.config import TrainConfig
    with pytest.raises(UserError, match="--nproc must be between 1 and 1024; got 0"):
        tiny_config(".", nproc=0).validate()
    (tmp_path / "config.json").write_text(json.dumps({"data": ".", "model": "small_cnn"}))
    assert TrainConfig.load(tmp_path / "config.json").nproc == 1     # runs from before: one process


# ------------------------------------------------------------------ without processes

@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 5, 12, 13])
def test_training_shards_use_every_index_once_up_to_padding_with_equal_steps(n, world):
    from core.train.pipeline import PreparedBatches, ShardSampler, epoch_order
    targets = np.arange(n) % 3
    for shuffle, balanced in ((True, False), (True, True)):
        order = epoch_order(targets, 7, 2, shuffle, balanced)
        parts = [shard(order, r, world, pad=True) for r in range(world)]
        assert {len(p) for p in parts} == {shard_size(n, 0, world, pad=True)}
        used = np.concatenate(parts) if parts else np.zeros(0)
        assert set(used.tolist()) == set(order.tolist())             # every drawn index is used
        assert len(used) - n < world                                 # padding repeats fewer than `world`
        pos = np.concatenate([np.arange(r, len(used), world) for r in range(world)])
        assert np.array_equal(used, np.resize(order, len(used))[pos]) if n else True
        loaders = [PreparedBatches(np.zeros((n, 2, 2, 3), np.uint8), targets, 4, shuffle=shuffle, seed=7,
                                   balanced=balanced, rank=r, world=world, threads=1) for r in range(world)]
        assert len({len(b) for b in loaders}) == 1                   # the same number of steps everywhere
        got = [np.concatenate([y.numpy() for _, y in b.epoch(2)]) if len(b) else np.zeros(0) for b in loaders]
        assert sorted(np.concatenate(got).tolist()) == sorted(targets[used].tolist())
        samplers = [ShardSampler(targets, 7, shuffle, balanced, r, world) for r in range(world)]
        for s in samplers:
            s.set_epoch(2)
        assert [list(s) for s in samplers] == [p.tolist() for p in parts]


def test_the_processes_batches_together_are_the_one_process_batches():
    """Interleaved shards: step k's batches of the `world` processes hold exactly the images of one
    process's batch k at `world` x the batch size (so N processes train like one, but for batch norm
    seeing each process's share of a batch)."""
    from core.train.pipeline import epoch_order
    order = epoch_order(np.zeros(70), 3, 1, True, False)
    for world, b in ((2, 8), (4, 4), (3, 5)):
        parts = [shard(order, r, world, pad=True) for r in range(world)]
        padded = np.resize(order, len(parts[0]) * world)
        for k in range(-(-len(parts[0]) // b)):
            together = np.concatenate([p[k * b:(k + 1) * b] for p in parts])
            assert sorted(together.tolist()) == sorted(padded[k * b * world:(k + 1) * b * world].tolist())


def test_one_process_is_left_as_it_was():
    from core.train.pipeline import PreparedBatches
    order = np.random.default_rng([3, 5]).permutation(10)
    assert np.array_equal(shard(order, 0, 1, pad=True), order)
    b = PreparedBatches(np.zeros((10, 2, 2, 3), np.uint8), np.arange(10), 4, shuffle=True, seed=3)
    assert np.array_equal(b._order(5), order) and len(b) == 3


@pytest.mark.parametrize("world", [2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 4, 11])
def test_evaluation_shards_gather_back_in_the_split_order(n, world):
    order = np.arange(n)
    parts = [shard(order, r, world, pad=False) for r in range(world)]
    assert sum(map(len, parts)) == n and [len(p) for p in parts] == [shard_size(n, r, world, False)
                                                                      for r in range(world)]
    assert np.array_equal(unshard(parts), order)
    probs = np.random.default_rng(0).random((n, 3))
    assert np.array_equal(unshard([probs[p] for p in parts]), probs)


def test_sharded_predictions_gathered_equal_one_process_predictions(demo_root):
    """The engine's evaluation on 3 shards (what 3 processes compute), put back together: exactly
    one process's targets and probabilities, row for row."""
    from core.runs.store import RunFolder
    from core.train.engine import _loader, load_data, predict_batches
    from core.train.models import build_model

    class Rank:
        def __init__(self, rank, world):
            self.rank, self.world_size = rank, world
    cfg = tiny_config(demo_root, image_size=16)
    folder = RunFolder(Path(os.environ["LANDMARKS_HOME"]) / "run")
    folder.dir.mkdir(parents=True)
    data = load_data(cfg, folder)
    torch.manual_seed(0)
    model = build_model("small_cnn", len(data.labels), "none")
    cpu = torch.device("cpu")
    y1, p1 = predict_batches(model, _loader(cfg, data, "val", False, cpu), cfg, cpu)
    parts = [predict_batches(model, _loader(cfg, data, "val", False, cpu, ddp=Rank(r, 3)), cfg, cpu)
             for r in range(3)]
    assert np.array_equal(unshard([y for y, _ in parts]), y1)
    assert np.allclose(unshard([p for _, p in parts]), p1, atol=1e-6)
