"""Seed groups (`train --seeds`) and --deterministic (issue 24): one shared split, the group's mean
and sample sd checked against the runs' own figures, --seed with --seeds refused, and the group's
first (deterministic, CPU) run trained again giving identical step and epoch metrics. Three tiny
trainings in all: the suite's budget for this issue is seconds (issue 18)."""
import contextlib
import dataclasses
import io
import json
import math
import statistics

import pandas as pd
import pytest
import torch

from core.cli import main
from core.runs.groups import GroupStats, group_stats, within_noise
from core.runs.jobs import run_job
from core.runs.store import RunStore

TINY = ["--model", "small_cnn", "--weights", "none", "--classes", "4", "--epochs", "1", "--image-size", "16",
        "--holdout", "0.05", "--max-images", "160"]


def _cli(*argv) -> tuple[int, dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    lines = out.getvalue().strip().splitlines()
    return rc, (json.loads(lines[-1]) if lines else None), err.getvalue()


def test_seeds_train_one_group_on_one_split_and_a_deterministic_rerun_is_identical(demo_root):
    rc, out, _ = _cli("train", "--data", str(demo_root), *TINY, "--seeds", "3,5", "--deterministic", "--json")
    assert rc == 0
    store = RunStore()
    runs = out["runs"]
    assert len(runs) == out["n"] == 2 and out["group"] == runs[0]
    configs = [store.run(r).config() for r in runs]
    assert [c.seed for c in configs] == [3, 5]
    assert {c.group for c in configs} == {runs[0]} and {c.split_seed for c in configs} == {3}
    # one split for both (the first seed's), yet the second run trained from its own seed
    a, b = (pd.read_csv(store.run(r).split_file) for r in runs)
    assert a.equals(b)
    assert store.epochs(runs[0])["train_loss"].iloc[0] != store.epochs(runs[1])["train_loss"].iloc[0]
    # mean and sample sd (n - 1) worked out from the two runs' summaries
    summaries = [store.get(r)["summary"] for r in runs]
    for k in ("train_acc", "val_acc", "holdout_acc", "holdout_top5"):
        vals = [s[k] for s in summaries]
        assert out["mean"][k] == pytest.approx(statistics.mean(vals))
        assert out["sd"][k] == pytest.approx(statistics.stdev(vals))
    stats = group_stats(store, runs[0])
    assert stats.runs == runs
    per_class = stats.per_class.set_index("label")
    evals = [store.evals(r)["holdout"] for r in runs]
    for i, label in enumerate(evals[0]["labels"]):
        accs = [e["per_class"][i] for e in evals]
        assert per_class.loc[str(label), "mean"] == pytest.approx(statistics.mean(accs))
        assert per_class.loc[str(label), "sd"] == pytest.approx(statistics.stdev(accs))
    # --deterministic: the first seed's configuration trained again gives the very same figures
    again = store.create(dataclasses.replace(configs[0], group=""), status="running")
    assert run_job(store, again)["status"] == "done"
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert store.epochs(runs[0])[cols].equals(store.epochs(again)[cols])
    steps = [store.steps(r)["loss"].tolist() for r in (runs[0], again)]     # every step's loss, not only the epoch's
    assert len(steps[0]) >= 3 and steps[0] == steps[1]
    assert store.get(again)["summary"]["holdout_acc"] == summaries[0]["holdout_acc"]
    assert any("deterministic" in e["message"] for e in store.events(again))
    assert not torch.are_deterministic_algorithms_enabled()       # the process's setting came back


def test_seed_with_seeds_is_refused_before_any_run(demo_root):
    rc, _, err = _cli("train", "--data", str(demo_root), *TINY, "--seed", "1", "--seeds", "0,1")
    assert rc == 2
    assert "Give either --seed or --seeds, not both" in err
    rc, _, err = _cli("train", "--data", str(demo_root), *TINY, "--seeds", "0,0")
    assert rc == 2 and "--seeds takes two or more different whole numbers" in err
    assert RunStore().list() == []


def test_within_noise_uses_two_standard_errors_of_the_difference():
    a = GroupStats("a", ["1", "2", "3"], {"holdout_acc": 0.90}, {"holdout_acc": 0.03})
    b = GroupStats("b", ["4", "5", "6", "7"], {"holdout_acc": 0.95}, {"holdout_acc": 0.02})
    margin = 2 * math.sqrt(0.03 ** 2 / 3 + 0.02 ** 2 / 4)         # 0.0400
    noise = within_noise(a, b)
    assert noise.diff == pytest.approx(0.05) and noise.margin == pytest.approx(margin)
    assert noise.within is False and "larger than the seed noise" in noise.sentence()
    b.mean["holdout_acc"] = 0.93
    assert within_noise(a, b).within is True
    single = GroupStats("c", ["8"], {"holdout_acc": 0.99}, {"holdout_acc": None})
    assert within_noise(a, single).within is None
