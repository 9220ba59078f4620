"""Issue 24, seeds as a group in sweeps and reproduce: each trial (each row of the poster's table)
trains one run per seed on one shared split, its objective is the group's mean, and it keeps n,
mean and sd. Trials train with an instant stand-in for the worker (as test_runs_attacks does): the
run ends at once with a validation accuracy looked up from (lr, seed), so every figure is known."""
import functools
import json
import math
import time

import pytest

from conftest import tiny_config
from core.cli import main
from core.runs import jobs, reproduce, sweeps
from core.runs.store import RunStore

SQRT2 = math.sqrt(2)

# (lr, seed) -> val_acc. lr 0.001: 0.5, 0.7 (mean 0.6, sd 0.1·√2); lr 0.002: 0.62, 0.66 (mean 0.64, sd 0.02·√2)
VAL = {(0.001, 0): 0.5, (0.001, 1): 0.7, (0.002, 0): 0.62, (0.002, 1): 0.66}


def instant(monkeypatch, done: dict | None = None, pruned_lr: float | None = None, started: list | None = None):
    """Every started run ends at once: done with VAL's val_acc (and `done`'s other summary and evals
    by seed), or pruned when it is the first run of the trial whose lr is `pruned_lr`."""
    def spawn(store, job_id, slot=None):
        cfg, args = store.run(job_id).config(), store.get(job_id)["args"]
        if started is not None:
            started.append(job_id)
        if cfg.lr == pruned_lr:          # its first run is pruned; the others are still starting
            if not args.get("seed_index"):
                store.set(job_id, status="pruned", finished=time.time())
            return
        summary = {"val_acc": VAL.get((cfg.lr, cfg.seed))} if done is None else done[cfg.seed]
        if done is not None:             # the evaluations, in the folder (the report) and the index (the table)
            evals = {s: {"acc": summary[f"{s}_acc"], "n": 40} for s in ("train", "val", "holdout")}
            store.run(job_id).write_evals(evals)
            for split, e in evals.items():
                store.upsert_eval(job_id, split, e)
        store.set(job_id, status="done", finished=time.time(), summary=summary)
    monkeypatch.setattr(jobs, "spawn", spawn)
    monkeypatch.setattr(sweeps, "drive", functools.partial(sweeps.drive, poll_s=0.01))   # the CLI's driver, quick


def test_a_seed_sweep_tells_optuna_each_group_mean_and_keeps_n_mean_sd(demo_root, monkeypatch, capsys):
    instant(monkeypatch, pruned_lr=0.003)
    sweeps.create("sg", tiny_config(demo_root, epochs=1), {"lr": [0.001, 0.002, 0.003]}, seeds=[0, 1])
    store = RunStore()
    info = sweeps.drive("sg", store, poll_s=0.01)
    assert info["finished"] and info["counts"]["complete"] == 2 and info["seeds"] == [0, 1]
    by_lr = {c["params"]["lr"]: c for c in info["configs"]}
    # lr 0.003: its first run was pruned, so the trial is, and the rest of its group is told to stop
    c = by_lr[0.003]
    assert c["state"] == "pruned" and c["n"] == 0 and c["val_acc"] is None
    first, *rest = (store.get(r) for r in c["members"])
    assert first["status"] == "pruned" and all(r["status"] in ("queued", "starting", "cancelled") for r in rest)
    assert all(r["status"] == "cancelled" or r["cancel"] for r in rest)
    for lr, mean, sd in ((0.001, 0.6, 0.1 * SQRT2), (0.002, 0.64, 0.02 * SQRT2)):   # worked out by hand from VAL
        c = by_lr[lr]
        assert c["val_acc"] == pytest.approx(mean) and c["mean"]["val_acc"] == pytest.approx(mean)  # the objective
        assert c["n"] == 2 and c["sd"]["val_acc"] == pytest.approx(sd)
        assert c["group"] == c["run_id"] == c["members"][0] and len(c["members"]) == 2
        runs = [store.get(r) for r in c["members"]]
        assert [r["config"]["seed"] for r in runs] == [0, 1]
        assert {r["config"]["split_seed"] for r in runs} == {0}            # one shared split: the first seed's
        assert {r["config"]["group"] for r in runs} == {c["group"]}
        assert [r["name"] for r in runs] == [f"sg #{c['number']} seed {s}" for s in (0, 1)]
        assert [r["args"]["seed_index"] for r in runs] == [0, 1]
    assert len(store.list()) == 6
    assert info["best"]["params"]["lr"] == 0.002
    # 0.64 - 0.6 = 0.04 against 2 * sqrt(0.02 / 2 + 0.0008 / 2) = 0.204: within the seed noise
    noise = info["noise"]
    assert (noise["best"], noise["second"]) == (by_lr[0.002]["number"], by_lr[0.001]["number"])
    assert noise["diff"] == pytest.approx(0.04) and noise["margin"] == pytest.approx(2 * math.sqrt(0.0208 / 2))
    assert noise["within"] is True and "within the seed noise" in noise["sentence"]
    assert sweeps.describe(by_lr[0.002]) == "0.640 ± 0.028 (n = 2)"
    # only a group's first run reports its epochs to the study (and may be pruned)
    assert sweeps.epoch_reporter({"sweep": "sg", "trial_id": 0, "seed_index": 1}) is None
    from core.cli.sweeps import _print_sweep, _sweep_rows
    out = json.loads(json.dumps(_sweep_rows(info)))                      # what sweep --json prints
    row = next(c for c in out["configs"] if c["params"]["lr"] == 0.001)
    assert {k: row[k] for k in ("group", "n")} == {"group": by_lr[0.001]["group"], "n": 2}
    assert row["mean"]["val_acc"] == pytest.approx(0.6) and row["sd"]["val_acc"] == pytest.approx(0.1 * SQRT2)
    assert out["noise"]["within"] is True
    _print_sweep(info)
    text = capsys.readouterr().out
    assert "0.640 ± 0.028 (n = 2)" in text and "within the seed noise" in text


def test_seeds_are_refused_with_a_seed_of_their_own(demo_root, capsys):
    assert main(["sweep", "--data", str(demo_root), "--model", "small_cnn", "--grid", "lr=0.01", "--seeds", "0,1",
                 "--seed", "4"]) == 2
    assert "Give either --seed or --seeds, not both" in capsys.readouterr().err
    assert main(["sweep", "--data", str(demo_root), "--model", "small_cnn", "--grid", "seed=1,2",
                 "--seeds", "0,1"]) == 2
    assert "Give either seed in the search space or --seeds, not both" in capsys.readouterr().err
    assert main(["reproduce", "--data", str(demo_root), "--seeds", "1"]) == 2
    assert "--seeds takes two or more different whole numbers" in capsys.readouterr().err
    assert RunStore().list() == [] and sweeps.names() == []          # nothing was stored


def test_reproduce_with_seeds_shows_each_row_as_a_group(demo_root, monkeypatch, capsys):
    done = {0: {"train_acc": 0.9, "val_acc": 0.8, "holdout_acc": 0.7},
            1: {"train_acc": 0.8, "val_acc": 0.6, "holdout_acc": 0.5}}
    instant(monkeypatch, done=done)
    assert main(["reproduce", "--data", str(demo_root), "--classes", "3", "--models", "small_cnn", "--quick",
                 "--seeds", "0,1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["name"].endswith("-seeds-0-1") and len(out["rows"]) == 1
    row = out["rows"][0]
    assert row["group"] == row["run_id"] and row["n"] == 2
    assert row["mean"]["holdout_acc"] == pytest.approx(0.6)
    assert row["sd"]["holdout_acc"] == pytest.approx(0.1 * SQRT2)             # sample sd of 0.7 and 0.5
    assert row["this"]["holdout"] == pytest.approx(0.6) and row["this"]["val"] == pytest.approx(0.7)   # the means
    text = reproduce.markdown(out["rows"])
    assert "0.600 ± 0.141 (n = 2) (on 40 images)" in text and "0.850 ± 0.071 (n = 2)" in text
    # the report's holdout table shows the same group's spread
    from core.report import _holdout_table
    store = RunStore()
    runs = [store.run(r["run_id"]) for r in store.list()]
    assert {r.config().group for r in runs} == {row["group"]}
    html = _holdout_table(runs, {r.id: r.read_config() for r in runs}, reproduce.POSTER)
    group_row = html.split(f"seed group {row['group']}: mean ± sd (n = 2)")[1]
    assert "0.850 ± 0.071" in group_row and "0.700 ± 0.141" in group_row and "0.600 ± 0.141" in group_row
