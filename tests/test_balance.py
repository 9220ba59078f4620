"""Class imbalance (--balance none|weighted|sampler): the loss weights, the class-balanced
sampler, the config field, and tiny training runs that show what each mode fed the loss."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as torch_F

from core.errors import UserError
from core.runs.jobs import run_job
from core.runs.store import RunStore
from core.train import engine
from core.train.config import TrainConfig
from core.train.pipeline import BalancedSampler, PreparedBatches, balanced_order, class_weights
from tests.conftest import tiny_config


# ------------------------------------------------------------------ weights and sampler (pure)

def test_class_weights_are_inverse_frequency_with_mean_one_over_the_samples():
    targets = np.array([0] * 6 + [1] * 3 + [2] * 1)          # class 3 has no sample
    w = class_weights(targets, 4)
    assert w[:3] / w[0] == pytest.approx([1, 6 / 3, 6 / 1])    # ∝ 1/frequency
    assert w[targets].mean() == pytest.approx(1.0)             # mean weight over the samples is 1
    assert w == pytest.approx([10 / 18, 10 / 9, 10 / 3, 0.0])  # n / (classes present * count)
    assert class_weights(np.array([0, 1, 2, 0, 1, 2]), 3) == pytest.approx([1, 1, 1])   # balanced: no change


def test_balanced_order_draws_classes_about_uniformly_and_reproducibly():
    targets = np.array([0] * 900 + [1] * 90 + [2] * 10)
    rng = np.random.default_rng(1)
    targets = targets[rng.permutation(len(targets))]           # classes interleaved, as in a split
    order = balanced_order(targets, seed=3, epoch=2)
    assert len(order) == len(targets) and order.min() >= 0 and order.max() < len(targets)
    drawn = np.bincount(targets[order], minlength=3)
    assert np.all(np.abs(drawn - 1000 / 3) < 60), drawn       # each ~333 (sd ~15), against 900/90/10
    assert len(np.unique(order)) < len(targets)                # with replacement: the 10 repeat
    assert np.array_equal(order, balanced_order(targets, seed=3, epoch=2))      # resume draws the same
    assert not np.array_equal(order, balanced_order(targets, seed=3, epoch=3))  # each epoch its own draw
    assert not np.array_equal(order, balanced_order(targets, seed=4, epoch=2))
    assert len(balanced_order(np.zeros(0, np.int64), 0, 1)) == 0


def test_prepared_batches_and_the_dataloader_sampler_use_the_balanced_order():
    targets = np.array([0] * 50 + [1] * 5)
    images = np.arange(len(targets), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(2, axis=1)   # pixel = index
    pb = PreparedBatches(images, targets, batch_size=8, shuffle=True, seed=7, balanced=True)
    seen = torch.cat([x[:, 0, 0, 0] for x, _ in pb.epoch(4)]).long().numpy()
    assert len(pb) == 7 and len(seen) == len(targets)           # same number of samples per epoch
    assert np.array_equal(np.sort(seen), np.sort(balanced_order(targets, 7, 4)))
    assert (targets[seen] == 1).sum() > 15                      # the 5 minority images, drawn ~27 times
    plain = PreparedBatches(images, targets, batch_size=8, shuffle=True, seed=7)
    assert np.array_equal(np.sort(torch.cat([x[:, 0, 0, 0] for x, _ in plain.epoch(4)]).long().numpy()),
                          np.arange(len(targets)))              # none: a permutation, unchanged
    # the plain pipeline: a DataLoader with BalancedSampler, whose epoch the engine sets
    ds = torch.utils.data.TensorDataset(torch.arange(len(targets)), torch.from_numpy(targets))
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=BalancedSampler(targets, seed=7))
    idx = torch.cat([x for x, _ in engine._batches(loader, 4)]).numpy()
    assert np.array_equal(idx, balanced_order(targets, 7, 4))


def test_balance_is_a_config_field_with_a_flag_and_old_configs_load():
    from core.cli import build_parser
    from core.train.config import DEFAULTS, from_arguments, spec
    assert DEFAULTS["balance"] == "none" and spec("balance")["choices"] == ("none", "weighted", "sampler")
    old = json.loads(TrainConfig(data=".", model="small_cnn").to_json())
    del old["balance"]                                          # a config.json written before the field
    assert TrainConfig.from_dict(old).balance == "none"
    a = build_parser().parse_args(["train", "--data", ".", "--balance", "sampler"])
    assert from_arguments(a, data=".", model="small_cnn").balance == "sampler"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", ".", "--balance", "oversample"])
    with pytest.raises(UserError, match="choose from none, weighted, sampler"):
        dataclasses.replace(TrainConfig(data=".", model="small_cnn"), balance="smote").validate()


# ------------------------------------------------------------------ tiny runs

class _SpyF:
    """torch.nn.functional for the engine, recording what each training step's loss was given."""

    def __init__(self):
        self.calls = []

    def cross_entropy(self, logits, y, weight=None, **kw):
        self.calls.append((y.cpu().numpy().copy(), None if weight is None else weight.cpu().numpy().copy()))
        return torch_F.cross_entropy(logits, y, weight=weight, **kw)

    def __getattr__(self, name):
        return getattr(torch_F, name)


def _train_targets(store, run_id) -> np.ndarray:
    m = pd.read_csv(store.run(run_id).dir / "split.csv")
    return m.loc[m["split"] == "train", "target"].to_numpy()


@pytest.mark.parametrize("mode,pipeline", [("none", "prepared"), ("weighted", "prepared"),
                                           ("sampler", "prepared"), ("sampler", "plain")])
def test_a_tiny_run_with_each_balance_mode(demo_root, monkeypatch, mode, pipeline):
    spy = _SpyF()
    monkeypatch.setattr(engine, "F", spy)
    epochs = 2
    cfg = tiny_config(demo_root, epochs=epochs, image_size=16, balance=mode, pipeline=pipeline, workers=0)
    store = RunStore()
    run_id = store.create(cfg, status="running")
    out = run_job(store, run_id)
    assert out["status"] == "done", out
    assert store.run(run_id).config().balance == mode                      # kept in config.json
    targets = _train_targets(store, run_id)
    counts = np.bincount(targets, minlength=4)
    assert counts.max() >= 2 * counts.min()                   # the demo data are imbalanced (Zipf)
    steps = -(-len(targets) // cfg.batch_size)
    assert len(spy.calls) == epochs * steps
    by_epoch = [spy.calls[e * steps:(e + 1) * steps] for e in range(epochs)]
    seen = [np.bincount(np.concatenate([y for y, _ in calls]), minlength=4) for calls in by_epoch]
    weights = {None if w is None else tuple(w) for _, w in spy.calls}
    events = [e["message"] for e in store.events(run_id) if e["kind"] == "balance"]

    if mode == "sampler":
        for e, s in enumerate(seen, start=1):                  # exactly the draws of (seed, epoch)
            assert np.array_equal(s, np.bincount(targets[balanced_order(targets, cfg.seed, e)], minlength=4))
            assert s.sum() == len(targets) and s.max() < 1.6 * s.min(), s      # ~uniform, not 3:1
        assert weights == {None}
        assert len(events) == 1 and "sampler" in events[0] and f"draws {len(targets)} training images" in events[0]
    else:
        assert all(np.array_equal(s, counts) for s in seen)    # every training image once per epoch
    if mode == "weighted":
        (w,) = weights
        w = np.asarray(w)
        assert w * counts == pytest.approx(np.full(4, w[0] * counts[0]), rel=1e-5)   # ∝ 1/frequency
        assert w[targets].mean() == pytest.approx(1.0, rel=1e-5)
        assert len(events) == 1 and "weighted" in events[0] and "1/frequency" in events[0]
    if mode == "none":
        assert weights == {None} and events == []

    ev = store.evals(run_id)
    for split in ("train", "val", "holdout"):
        m = ev[split]
        assert 0 <= m["balanced_acc"] <= 1 and 0 <= m["macro_f1"] <= 1
        assert m["balanced_acc"] == pytest.approx(np.nanmean([v for v in m["per_class"] if v is not None]))
    assert out["holdout_balanced_acc"] == ev["holdout"]["balanced_acc"]
    assert out["holdout_macro_f1"] == ev["holdout"]["macro_f1"]
    if mode == "weighted":
        _eval_cli_and_page_show_the_imbalance_metrics(store, run_id, ev, monkeypatch)


def _eval_cli_and_page_show_the_imbalance_metrics(store, run_id, ev, monkeypatch):
    import contextlib
    import io
    from core.cli import main

    def cli_eval():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["eval", run_id, "--json"]) == 0
        return json.loads(buf.getvalue().strip().splitlines()[-1])

    out = cli_eval()
    assert out["balanced_acc"] == pytest.approx(ev["holdout"]["balanced_acc"])
    assert out["macro_f1"] == pytest.approx(ev["holdout"]["macro_f1"])
    assert out["val_balanced_acc"] == pytest.approx(ev["val"]["balanced_acc"])
    assert out["train_macro_f1"] == pytest.approx(ev["train"]["macro_f1"])
    # a run evaluated before the two were stored: computed from its confusion matrix
    old = {k: v for k, v in ev["val"].items() if k not in ("balanced_acc", "macro_f1")}
    store.log_eval(run_id, "val", old)
    out = cli_eval()
    assert out["val_balanced_acc"] == pytest.approx(ev["val"]["balanced_acc"])
    assert out["val_macro_f1"] == pytest.approx(ev["val"]["macro_f1"])

    from tests.test_pages_evaluate_compare import EVALUATE, _page
    at = _page(EVALUATE)
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    assert any(l.startswith("Balanced accuracy") for l in labels) and any(l.startswith("Macro-F1") for l in labels)
    shown = {m.label.split(" (")[0]: m.value for m in at.metric}
    assert shown["Balanced accuracy"] == f"{ev['holdout']['balanced_acc']:.3f}"
    table = at.dataframe[0].value                              # the holdout table
    assert table["holdout_macro_f1"].iloc[0] == pytest.approx(ev["holdout"]["macro_f1"])
