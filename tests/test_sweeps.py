"""Sweeps on Optuna: every trial an ordinary run, pruning, restart, two drivers, the poster's table."""
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import UserError
from core.runs import sweeps
from core.runs.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "small_cnn", "--weights", "none", "--classes", "4", "--image-size", "32", "--holdout", "0.05",
        "--batch-size", "32"]


def _cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=timeout,
                       env=env, cwd=str(ROOT))
    return p


def _last_json(p):
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_parse_space_types_and_one_sentence_errors():
    assert sweeps.parse_space(["lr=0.01,0.001", "optimizer=adam,sgd", "batch-size=16,32"]) == {
        "lr": [0.01, 0.001], "optimizer": ["adam", "sgd"], "batch_size": [16, 32]}
    assert sweeps.parse_space(["lr=1e-4:1e-2"])["lr"] == {"low": 1e-4, "high": 1e-2, "log": True}
    assert sweeps.parse_space(["freeze=true,false", "augment=hflip+crop,crop"]) == {
        "freeze": [True, False], "augment": ["crop+hflip", "crop"]}
    with pytest.raises(UserError, match="cannot be searched"):
        sweeps.parse_space(["data=/x,/y"])
    with pytest.raises(UserError, match="not a valid value for batch_size"):
        sweeps.parse_space(["batch_size=big"])
    with pytest.raises(UserError, match="Unknown optimizer 'rmsprop'"):
        sweeps.parse_space(["optimizer=adam,rmsprop"])
    with pytest.raises(UserError, match="--lr must be between"):
        sweeps.parse_space(["lr=0.01,50"])
    with pytest.raises(UserError, match="not NAME=V1,V2"):
        sweeps.parse_space(["lr"])


@pytest.mark.workers
@pytest.mark.e2e
def test_grid_sweep_runs_every_configuration_once_and_prunes_one_that_cannot_learn(demo_root, capsys):
    # lr 5 cannot learn: the CPU runs the trials in order, so after two finished trials it is pruned
    # at epoch 2 (warm-up), not trained to the end. The one real end-to-end sweep: every trial in a
    # worker process of its own (the driver's other cases run against an instant stand-in in
    # test_runs_attacks); the CLI that drives it runs in the test's process.
    from core.cli import main
    assert main(["sweep", "--data", str(demo_root), *TINY, "--epochs", "3", "--grid", "lr=0.002,0.003,5",
                 "--prune", "--name", "grid4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["configs"]) == 3
    states = {c["params"]["lr"]: c["state"] for c in out["configs"]}
    assert states[0.002] == states[0.003] == "complete" and states[5.0] == "pruned"
    pruned = [c for c in out["configs"] if c["state"] == "pruned"]
    assert all(c["pruned_at"] == sweeps.PRUNE_WARMUP_EPOCHS for c in pruned)
    assert out["best"]["params"]["lr"] in (0.002, 0.003) and out["best"]["val_acc"] > 0.3
    store = RunStore()
    runs = {r["run_id"]: r for r in store.list()}
    assert sorted(runs) == sorted(c["run_id"] for c in out["configs"])          # every trial an ordinary run
    for c in out["configs"]:
        r = runs[c["run_id"]]
        assert r["name"] == f"grid4 #{c['number']}" and r["args"]["sweep"] == "grid4"
        assert r["config"]["lr"] == c["params"]["lr"]
        if c["state"] == "pruned":
            assert r["status"] == "pruned" and len(store.epochs(c["run_id"])) < 3
            assert any(e["kind"] == "pruned" for e in store.events(c["run_id"]))
    assert main(["sweep", "--status", "grid4", "--json"]) == 0
    status = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status["finished"] and status["best"]["run_id"] == out["best"]["run_id"]


def test_a_driver_killed_between_creating_a_run_and_recording_it_leaves_no_second_run(demo_root, monkeypatch):
    """The dead driver created trial #0's run but died before writing its id on the trial: the
    next driver adopts that run instead of creating another one for the same configuration."""
    import socket
    from core.runs.jobs import device_key
    from test_runs_attacks import instant_training
    instant_training(monkeypatch)
    sweeps.create("race", _base(demo_root), {"lr": [0.003]})
    study = sweeps.load("race")
    trial = study.ask()                                               # the enqueued configuration
    trial.set_user_attr("driver", {"host": socket.gethostname(), "pid": 2 ** 22 + 1, "proc": None})
    store = RunStore()
    cfg = sweeps.trial_config(study.user_attrs["base"], trial.params)
    orphan = store.create(cfg, status="queued", device=device_key(cfg.device),
                          args={"sweep": "race", "trial": trial.number, "trial_id": trial._trial_id})
    info = sweeps.drive("race", store, poll_s=0.01)
    assert info["finished"] and info["counts"]["complete"] == 1
    assert [r["run_id"] for r in store.list()] == [orphan] == [info["configs"][0]["run_id"]]
    assert store.get(orphan)["name"] == "race #0"


def _base(data, **kw):
    from core.train.config import TrainConfig
    return TrainConfig(**{**dict(data=str(data), model="small_cnn", weights="none", classes=4, epochs=1,
                                 batch_size=32, image_size=32, holdout=0.05, seed=0), **kw})


def test_a_sweep_stored_before_newer_fields_is_the_same_sweep_again(demo_root):
    import optuna
    sweeps.create("old", _base(demo_root, recipe="poster"), {"lr": [0.01]})
    study = optuna.load_study(study_name="old", storage=sweeps.open_storage(None))
    base = {k: v for k, v in study.user_attrs["base"].items() if k not in ("recipe", "tta")}
    study.set_user_attr("base", base)                     # as written before recipes and TTA existed
    sweeps.create("old", _base(demo_root, recipe="poster"), {"lr": [0.01]})      # the same sweep: no complaint
    with pytest.raises(UserError, match="recipe: 'poster' there, 'finetune' here"):
        sweeps.create("old", _base(demo_root, recipe="finetune"), {"lr": [0.01]})


def test_create_refuses_other_settings_under_the_same_name_and_bad_combinations(demo_root):
    sweeps.create("s", _base(demo_root), {"lr": [0.01, 0.001]})
    sweeps.create("s", _base(demo_root), {"lr": [0.01, 0.001]})            # the same again: fine (continue)
    with pytest.raises(UserError, match=r"already exists with other settings \(space: "):
        sweeps.create("s", _base(demo_root), {"lr": [0.1]})
    with pytest.raises(UserError, match="leave --nproc at 1"):
        sweeps.create("n", _base(demo_root, nproc=2), {"lr": [0.1]})
    with pytest.raises(UserError, match="needs --trials"):
        sweeps.create("t", _base(demo_root), {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}, sampler="tpe")
    with pytest.raises(UserError, match="not a usable sweep name"):
        sweeps.create("../x", _base(demo_root), {"lr": [0.1]})
    with pytest.raises(UserError, match="no sweep named"):
        sweeps.info("nope")
    p = _cli("sweep", "--data", str(demo_root), "--grid", "momentum=2", "--json")
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: --momentum must be between")


@pytest.mark.workers
@pytest.mark.e2e
def test_cancelled_sweep_stops_its_queued_and_running_trials(demo_root):
    from core.runs import jobs
    sweeps.create("stopme", _base(demo_root, epochs=30), {"seed": [0, 1, 2]})
    store = RunStore()
    jobs.submit(store, "sweep", {"name": "stopme", "storage": None})
    deadline = time.time() + 120
    while time.time() < deadline and not any(r["status"] == "running" for r in store.list()):
        time.sleep(0.3)
    assert any(r["status"] == "running" for r in store.list()), "no trial started: nothing was cancelled"
    sweeps.cancel_sweep("stopme", store)
    while time.time() < deadline + 60 and (jobs.latest(store, "sweep", name="stopme") or {}).get("active"):
        time.sleep(0.3)
    info = sweeps.info("stopme")
    assert info["cancelled"] and info["counts"]["running"] == 0
    assert info["counts"]["waiting"] >= 1                                   # not started: left for a later continue
    from core.runs.store import ACTIVE                                      # a running trial stops at its next step,
    while time.time() < deadline + 120 and any(r["status"] in ACTIVE for r in store.list()):   # maybe after
        time.sleep(0.3)                                                     # its driver has ended
    assert all(r["status"] == "cancelled" for r in store.list()), [(r["run_id"], r["status"]) for r in store.list()]
    assert all(c["error"] == "the sweep was cancelled" for c in info["configs"] if c["state"] == "failed")


def test_reproduce_quick_fills_its_table(demo_root, monkeypatch, capsys):
    from core.cli import main
    from core.runs import jobs

    def trained(store, job_id, slot=None):   # a stand-in for the worker: the real trials' training is the
        store.set(job_id, status="done", finished=time.time(),   # grid sweep's (make e2e); here, the table
                  summary={"train_acc": 0.9, "val_acc": 0.8, "holdout_acc": 0.7})
    monkeypatch.setattr(jobs, "spawn", trained)
    assert main(["reproduce", "--data", str(demo_root), "--classes", "3", "--models", "small_cnn", "--quick",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["quick"] and len(out["rows"]) == 1
    for row in out["rows"]:
        assert row["status"] == "done" and row["this"] == {"train": 0.9, "val": 0.8, "holdout": 0.7, "holdout_n": None}
        run = RunStore().get(row["run_id"])["config"]            # the trial trained the quick recipe, as itself
        assert (run["model"], run["weights"], run["image_size"], run["epochs"]) == ("small_cnn", "none", 64, 2)
        assert row["poster"]["holdout"] is None                               # the poster has no small_cnn row
        assert row["trained"] == "small_cnn" and row["scratch"] and not row["stand_in"]   # itself, from scratch
    from core.runs import reproduce
    from core.train import models
    fetched = []                      # offline as on a machine without internet: nothing is downloaded
    monkeypatch.setattr(models, "imagenet_available", lambda name: (models.REGISTRY[name].tv_weights is None, ""))
    def refuse(m):
        def imagenet():
            fetched.append(m)
            raise OSError("no internet in tests")
        return imagenet
    for m in ("resnet18", "vgg16"):
        monkeypatch.setitem(models.REGISTRY, m, dataclasses.replace(models.REGISTRY[m], imagenet=refuse(m)))
    name, cfg, configs, meta = reproduce.plan(str(demo_root))
    assert [tuple(r) for r in meta["rows"]] == list(reproduce.POSTER)      # the poster's six rows by default
    assert cfg.lr == 1e-3 and cfg.optimizer == "adam" and cfg.epochs == 10 and cfg.holdout == 0.01
    # offline, ResNet-18 and VGG-16 have no ImageNet weights here: EfficientNet-Lite0 stands in and the table says so
    assert meta["stand_in"] == {"resnet18": reproduce.STAND_IN, "vgg16": reproduce.STAND_IN}
    assert fetched == ["resnet18", "vgg16"]                               # asked, refused: never reached the network
    rows = reproduce.table({"configs": []}, RunStore(), [tuple(r) for r in meta["rows"]], meta["stand_in"])
    assert "stand-in: efficientnet_lite0" in reproduce.markdown(rows)
