"""Issue 21: class model images of all chosen classes in one batch, with a step/class/ETA progress line."""
from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest
import torch

from core.explain.class_model import MAX_BATCH_PIXELS, batches, class_models
from core.explain.files import class_model_path
from core.runs import tasks
from core.serve.predictor import Predictor
from core.train.config import TrainConfig
from core.train.models import build_model
from torchvision.transforms.functional import gaussian_blur


def _old_class_model(model, target, size, steps, lr=0.05, l2=1e-4, jitter=4, blur_every=4, blur_sigma=0.5, seed=0):
    """The per-class loop as it was before issue 21 (core/explain/class_model.py at 3f51721), kept
    verbatim in substance as the reference the batch must reproduce."""
    gen = torch.Generator().manual_seed(seed)
    img = (0.5 + 0.01 * torch.randn(1, 3, size, size, generator=gen)).clamp(0, 1)
    model.eval()
    for step in range(steps):
        dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
        shifted = torch.roll(img, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
        objective = model(shifted)[0, target] - l2 * (shifted - 0.5).pow(2).sum()
        (grad,) = torch.autograd.grad(objective, shifted)
        grad = torch.roll(grad, shifts=(-dy, -dx), dims=(2, 3))
        img = (img + lr * grad / (grad.abs().mean() + 1e-12)).detach()
        if (step + 1) % blur_every == 0:
            k = min(2 * math.ceil(3 * blur_sigma) + 1, (size - 1) | 1)
            img = gaussian_blur(img, kernel_size=[k, k], sigma=[blur_sigma, blur_sigma])
        img = img.clamp(0.0, 1.0)
    return img[0]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(3)
    return build_model("small_cnn", 3, weights="none").eval()


def test_batched_images_equal_the_per_class_loop(net):
    calls = []
    imgs = class_models(net, [2, 0, 1], size=32, steps=5, progress=lambda s, n, sc: calls.append((s, n, sc)))
    assert imgs.shape == (3, 3, 32, 32)
    for img, t in zip(imgs, [2, 0, 1]):
        ref = _old_class_model(net, t, 32, 5)
        assert (img - ref).abs().max() < 1e-4
    assert (imgs[0] - imgs[1]).abs().max() > 1e-3              # each image went towards its own class
    assert [c[:2] for c in calls] == [(s, 5) for s in range(1, 6)] and all(len(c[2]) == 3 for c in calls)
    assert all(p.grad is None for p in net.parameters())


def test_batches_are_chosen_by_pixels():
    assert [len(b) for b in batches(list(range(40)), 224)] == [16, 16, 8]
    assert batches(list(range(5)), 64) == [[0, 1, 2, 3, 4]]
    assert batches([7, 8], 4096) == [[7], [8]]                  # never an empty batch
    assert MAX_BATCH_PIXELS // (64 * 64) == 196


class FakeContext:
    """What a job's function gets, recording every progress call (core.runs.jobs.Context's shape)."""

    def __init__(self, args):
        self.args, self.run, self.calls = args, None, []

    def progress(self, force=False, **fields):
        self.calls.append(fields)

    def should_stop(self):
        return False

    def check_stop(self):
        pass


def test_job_progress_carries_step_class_total_and_eta(net, tmp_path, monkeypatch):
    pred = Predictor("r1", net, ["10", "20", "30"], ["Louvre", "Eiffel", "Duomo"],
                     TrainConfig(model="small_cnn", image_size=32))
    monkeypatch.setattr("core.serve.predictor.load_predictor", lambda run: pred)
    monkeypatch.setattr(sys.modules["core.explain.class_model"], "MAX_BATCH_PIXELS", 2 * 32 * 32)  # two a batch
    ctx = FakeContext({"classes": ["30", "Louvre", "20"], "steps": 3, "size": 32, "out": str(tmp_path)})
    out = tasks.class_models(ctx)
    assert [r["class"] for r in out["results"]] == [2, 0, 1]
    assert all(class_model_path(tmp_path, t, 3, 32).exists() for t in range(3))
    keys = [(c["step"], c["steps"], c["first"], c["last"], c["classes"], c["done"], c["total"]) for c in ctx.calls]
    assert keys == [(1, 3, 1, 2, 3, 1, 6), (2, 3, 1, 2, 3, 2, 6), (3, 3, 1, 2, 3, 3, 6),
                    (1, 3, 3, 3, 3, 4, 6), (2, 3, 3, 3, 3, 5, 6), (3, 3, 3, 3, 3, 6, 6)]
    assert [c["eta_s"] is None for c in ctx.calls] == [True, True, False, False, False, False]
    assert ctx.calls[-1]["eta_s"] == 0
    line = tasks.class_models_line({**ctx.calls[1], "eta_s": 83.4})
    assert line == "step 2/3 · class 1–2/3 · ETA 01:23"
    assert tasks.class_models_line({**ctx.calls[4], "eta_s": None}) == "step 2/3 · class 3/3 · ETA …"
    ctx.calls.clear()
    tasks.class_models(ctx)                                    # all cached: nothing drawn again
    assert ctx.calls == []


def test_cli_prints_the_pages_progress_line(monkeypatch, capsys):
    from core.cli import inference
    seen = {}

    def run_here(a, kind_name, args, run_id=None, on_progress=None):
        seen.update(kind=kind_name, args=args, run_id=run_id)
        on_progress({"step": 1, "steps": 2, "first": 1, "last": 1, "classes": 1, "done": 1, "total": 2, "eta_s": None})
        on_progress({"step": 2, "steps": 2, "first": 1, "last": 1, "classes": 1, "done": 2, "total": 2, "eta_s": 0.0})
        return {"results": [{"class": 0, "name": "Louvre", "png": "x.png", "prob": 0.5}]}
    monkeypatch.setattr(inference, "_run_here", run_here)
    a = SimpleNamespace(cls="0", steps=2, size=32, out="cm", run="r1", runs=None, json=True)
    assert inference.cmd_class_model(a) == {"run_id": "r1", "class": 0, "name": "Louvre", "png": "x.png", "prob": 0.5}
    assert seen["kind"] == "class_models" and seen["args"]["classes"] == ["0"] and seen["run_id"] == "r1"
    err = capsys.readouterr().err
    assert err == "\rstep 1/2 · class 1/1 · ETA …\033[K\rstep 2/2 · class 1/1 · ETA 00:00\033[K\n"
