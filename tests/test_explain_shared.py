"""Shared work in explanations (issue 21, "Slow where it need not be"): saliency and vanilla
backpropagation read one input gradient per model, image and class; attributions compute no weight
gradients into the model; the Classify page runs top-5 once per photo and run, not on every change of the methods."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from captum.attr import Saliency
from PIL import Image
from streamlit.testing.v1 import AppTest
from torch import nn

from core.explain import METHODS, explain, explain_one
from core.serve.predictor import Predictor

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


class CountBackward(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        CountBackward.calls += 1
        return g


class Counted(nn.Module):
    """A tiny CNN that counts the backward passes that reach its input."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.net(CountBackward.apply(x))


@pytest.fixture
def model():
    torch.manual_seed(0)
    CountBackward.calls = 0
    return Counted().eval()


def test_saliency_and_vanilla_share_one_gradient_and_keep_their_maps(model):
    x = torch.rand(1, 3, 32, 32)
    sal = explain(model, x, 2, "saliency")
    assert CountBackward.calls == 1
    van = explain(model, x, 2, "vanilla")
    assert CountBackward.calls == 1           # vanilla read saliency's gradient: no second pass
    # the maps are what captum's Saliency gives, size and sign
    ref = Saliency(model).attribute(x.clone().requires_grad_(True), target=2, abs=False)
    assert torch.equal(van, ref) and torch.equal(sal, ref.abs())
    assert (van < 0).any() and not torch.equal(van, sal)
    van.mul_(0)                                # a caller's in-place edit does not reach the cache
    assert torch.equal(explain(model, x, 2, "vanilla"), ref)
    CountBackward.calls = 0
    explain(model, x, 1, "vanilla")            # another class, another image: new gradients
    explain(model, torch.rand(1, 3, 32, 32), 2, "saliency")
    assert CountBackward.calls == 2


def test_vanilla_after_saliency_makes_no_pass_at_all_in_explain_one(model):
    class Pred:  # what explain_one reads of a predictor
        names = ["a", "b", "c"]

    pred = Pred()
    pred.model = model
    model.cam_layer, model.submodule = "net.0", lambda path: model.net[0]
    forwards = []
    model.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
    x = torch.rand(1, 3, 32, 32)
    sal = explain_one(pred, x, "saliency", target=1)
    assert forwards == [1, 17, 17]             # one gradient, then deletion and insertion (16 steps + 1)
    van = explain_one(pred, x, "vanilla", target=1)
    assert forwards == [1, 17, 17]             # the same gradient and the same map's faithfulness
    assert van["faithfulness"] == sal["faithfulness"] and (van["attr"] < 0).any()
    explain_one(pred, x, "guided", target=1)   # another map: its own passes
    assert forwards == [1, 17, 17, 1, 17, 17]


def test_new_weights_drop_the_shared_gradient(model):
    x = torch.rand(1, 3, 32, 32)
    before = explain(model, x, 0, "vanilla")
    with torch.no_grad():
        model.net[0].weight.mul_(-2.0)         # in place, as an optimiser step or load_state_dict does
    after = explain(model, x, 0, "vanilla")
    assert CountBackward.calls == 2
    ref = Saliency(model).attribute(x.clone().requires_grad_(True), target=0, abs=False)
    assert torch.equal(after, ref) and not torch.equal(after, before)


def test_every_method_leaves_no_weight_gradients_and_keeps_the_flags(model):
    model.net[4].bias.requires_grad_(False)    # a frozen parameter stays frozen, the rest trainable
    for m in METHODS:
        explain(model, torch.rand(1, 3, 32, 32), 1, m)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]
    assert METHODS["smoothgrad"].note == "16 noisy samples" and METHODS["integrated_gradients"].note == "32 steps"


def test_classify_runs_top5_once_while_the_methods_change(use_trained_home, monkeypatch):
    calls = []
    real = Predictor.top
    monkeypatch.setattr(Predictor, "top", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("../pages/classify.py")
    at.run()
    buf = io.BytesIO()
    Image.effect_noise((48, 48), 60).convert("RGB").save(buf, "PNG")
    at.file_uploader(key="clf_upload").set_value([("noise.png", buf.getvalue(), "image/png")]).run()
    at.multiselect(key="clf_methods").set_value(["saliency"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(calls) == 1
    at.multiselect(key="clf_methods").set_value(["saliency", "vanilla", "smoothgrad"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(calls) == 1                     # the methods changed, the prediction did not rerun
    assert any(c.value.startswith("Top-5 in ") for c in at.caption)
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith("SmoothGrad · 16 noisy samples · class “") for c in captions), captions
