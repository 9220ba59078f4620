"""Margin heads (issue 23): class-size margins and the margin loss worked out by hand, the
sub-center max, GeM between the average and the max pool, a few training steps through the
engine, the poster recipe's refusal, the embedding features.embed returns, and an ArcFace
checkpoint loaded by the predictor and exported to ONNX (ONNX Runtime against PyTorch)."""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.cli import main
from core.errors import UserError
from core.serve.features import embed
from core.train import recipes
from core.train.config import TrainConfig
from core.train.heads import GeM, MarginLoss, SubCenterArcFace, margins
from core.train.models import REGISTRY, build_model

S = 30.0


def test_margins_follow_class_size():
    # m = 0.5 * n^(-1/4) + 0.05: n = 1 -> 0.55, n = 16 -> 0.5 * 0.5 + 0.05 = 0.30, n = 81 -> 0.5 / 3 + 0.05
    assert margins([1, 16, 81]) == pytest.approx([0.55, 0.30, 0.5 / 3 + 0.05])
    assert margins([0])[0] == pytest.approx(0.55)           # a class with no training photo: the widest


def test_margin_loss_two_classes_by_hand():
    loss = MarginLoss(margins([1, 16]), s=S, warmup=4)      # class 0: m = 0.55, class 1: m = 0.30
    logits = S * torch.tensor([[0.6, 0.8], [0.6, 0.8], [-0.9, 0.1]])
    y = torch.tensor([0, 1, 0])
    got = loss.margin_logits(logits, y) / S
    assert got[0].tolist() == pytest.approx([math.cos(math.acos(0.6) + 0.55), 0.8], abs=1e-6)
    assert got[1].tolist() == pytest.approx([0.6, math.cos(math.acos(0.8) + 0.30)], abs=1e-6)
    # theta + m past pi: the monotone fallback cos(theta) - m sin(m)
    assert got[2].tolist() == pytest.approx([-0.9 - 0.55 * math.sin(0.55), 0.1], abs=1e-6)
    # warm-up: no margin at step 0, half of it at step 2 of 4, all of it from step 4 on
    assert torch.allclose(loss.margin_logits(logits, y, step=0), logits, atol=1e-5)
    assert (loss.margin_logits(logits, y, step=2) / S)[0, 0].item() == pytest.approx(
        math.cos(math.acos(0.6) + 0.275), abs=1e-6)
    expected = F.cross_entropy(S * torch.tensor([[math.cos(math.acos(0.6) + 0.55), 0.8]]), y[:1])
    assert loss(logits[:1], y[:1], step=9).item() == pytest.approx(expected.item(), rel=1e-5)


def test_sub_center_logit_is_the_closest_centre():
    arc = SubCenterArcFace(2, classes=2, k=3, s=S)
    with torch.no_grad():   # rows: class 0's three centres, then class 1's
        arc.weight.copy_(torch.tensor([[0., 1.], [2., 0.], [-1., 0.], [1., 1.], [0., -1.], [-1., -1.]]))
    out = arc(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(out, S * torch.tensor([[1.0, math.sqrt(0.5)], [1.0, math.sqrt(0.5)]]), atol=1e-5)


def test_gem_is_average_pool_at_p1_and_tends_to_max_pool():
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1
    gem = GeM(p=1.0)
    assert gem(x).shape == (2, 3, 1, 1)
    assert torch.allclose(gem(x), F.adaptive_avg_pool2d(x, 1), atol=1e-6)
    maxed = F.adaptive_max_pool2d(x, 1)
    errors = []
    for p in (3.0, 30.0, 300.0):
        with torch.no_grad():
            gem.p.fill_(p)
        errors.append((gem(x) - maxed).abs().max().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01
    assert GeM().p.item() == 3.0 and GeM().p.requires_grad           # p learnable, init 3


def _batch(n=16, size=16, classes=4, seed=0):
    """Images whose class sets a colour: learnable in a step or two."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, 3, size, size, generator=g) * 0.3
    x[torch.arange(n), y % 3] += 0.5 + 0.2 * (y >= 3).float()[:, None, None]
    return x.clamp(0, 1), y


def test_training_steps_lower_the_margin_loss():
    from core.train.engine import train_one_epoch
    from core.train.sinks import NullSink
    torch.manual_seed(0)
    cfg = TrainConfig(data="unused", model="small_cnn", weights="none", head="arcface", lr=3e-3, epochs=1,
                      pipeline="plain", image_size=16, channels_last="off", precision="fp32").validate()
    model = build_model(cfg.model, 4, cfg.weights, head=cfg.head)
    r = recipes.recipe_for(cfg)
    assert (r.head, r.label_smoothing, r.zero_head, r.head_lr) == ("arcface", 0.0, False, pytest.approx(9e-3))
    opt, sched, _ = recipes.make_optimizer(cfg, model, steps_per_epoch=3)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}           # the head at 3x --lr, the backbone at --lr
    assert lrs == {"head": pytest.approx(9e-3), "head_no_decay": pytest.approx(9e-3), "body": pytest.approx(3e-3),
                   "body_no_decay": pytest.approx(3e-3)}
    head = {id(p) for g in opt.param_groups if g["name"].startswith("head") for p in g["params"]}
    assert head == {id(p) for p in [*model.net.pool.parameters(), *model.net.fc.parameters()]}   # GeM's p too
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    loss = MarginLoss(margins([4, 4, 4, 4]), S)
    x, y = _batch()
    model.eval()
    with torch.no_grad():
        before = loss(model(x), y).item()
    train_one_epoch(model, [(x, y)] * 3, opt, cfg, torch.device("cpu"), 1, 0, NullSink(), recipe=r,
                    scheduler=sched, criterion=loss)
    model.eval()
    with torch.no_grad():
        after = loss(model(x), y).item()
    assert after < before


def test_backbones_get_gem_and_the_margin_head():
    """Every registry backbone (built on the meta device: shapes only, no memory, no time)."""
    for name, spec in REGISTRY.items():
        with torch.device("meta"):
            model = build_model(name, 3, "none", head="arcface")
            out = model.eval()(torch.empty(2, 3, 64, 64))
        pool, block, _ = spec.arcface
        assert out.shape == (2, 3), name
        assert model.head == block + ".arc" and isinstance(model.submodule(model.head), SubCenterArcFace), name
        assert isinstance(model.submodule(pool), GeM) or isinstance(model.submodule(pool)[0], GeM), name


def test_poster_recipe_is_refused(tmp_path, capsys):
    msg = ("The ArcFace head needs the finetune recipe (the poster's recipe is plain Adam with a softmax head); "
           "use --recipe finetune or --head softmax.")
    with pytest.raises(UserError) as e:
        TrainConfig(data="x", model="small_cnn", recipe="poster", head="arcface").validate()
    assert str(e.value) == msg
    code = main(["train", "--data", str(tmp_path), "--model", "small_cnn", "--recipe", "poster", "--head", "arcface"])
    assert code != 0 and msg in capsys.readouterr().err
    assert TrainConfig(data="x").head == "softmax"                  # the default: runs as before


def _arcface_model(classes=3):
    torch.manual_seed(0)
    model = build_model("small_cnn", classes, "none", head="arcface")
    x, y = _batch(4, 16, classes)
    model.train()
    model(x)                                  # BatchNorm1d running statistics away from 0/1
    return model.eval(), x


def test_embed_returns_the_512d_embedding():
    model, x = _arcface_model()
    got = embed(model, x)
    fc, net = model.net.fc, model.net
    with torch.no_grad():
        e = fc.bn(fc.embed(torch.flatten(net.pool(net.features((x - model.mean) / model.std)), 1)))
    assert got.shape == (4, 512)
    np.testing.assert_allclose(got, F.normalize(e, dim=1).numpy(), atol=1e-5)
    # and the logits are s times the cosine of that embedding with each class's closest centre
    w = F.normalize(fc.arc.weight.detach(), dim=1).view(3, 3, 512)
    cos = torch.einsum("nd,ckd->nck", torch.from_numpy(got), w).amax(2)
    with torch.no_grad():
        assert torch.allclose(model(x), S * cos, atol=1e-4)


def _arcface_predictor(tmp_path):
    from core.serve.predictor import load_predictor
    model, x = _arcface_model()
    ckpt = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "labels": ["a", "b", "c"]}, ckpt)
    cfg = TrainConfig(data="x", model="small_cnn", weights="none", head="arcface", image_size=16)
    run = SimpleNamespace(id="arc1", checkpoint=ckpt, config=lambda: cfg, class_names=lambda: {"a": "Alpha"})
    return model, x, load_predictor(run)      # rebuilt from the config: no class counts needed


def test_arcface_checkpoint_loads_in_the_predictor(tmp_path):
    model, x, pred = _arcface_predictor(tmp_path)
    with torch.no_grad():
        assert torch.equal(pred.model(x), model(x))


@pytest.mark.e2e                              # the ONNX exporter's first use costs ~4.5 s: make e2e
def test_arcface_run_exports_to_onnx(tmp_path):
    from core.serve.export import _write_and_check
    model, x, pred = _arcface_predictor(tmp_path)
    side = _write_and_check(pred, "onnx", tmp_path / "m.onnx", x, "4 generated images", lambda i: None)
    assert side["check"]["max_abs_diff"] <= 1e-4 and side["check"]["top1_agree"] == 1.0
    assert side["output"]["shape"] == ["N", 3] and side["names"] == ["Alpha", "b", "c"]


def test_train_page_head_radio_refuses_arcface_under_poster(home, demo_root, monkeypatch):
    import shutil
    from streamlit.testing.v1 import AppTest
    from core.runs.store import RunStore
    from pages.train import HEAD_CAPTION
    shutil.copytree(demo_root, home / "datasets" / "demo")
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", str(home.parent))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "pages" / "train.py"), default_timeout=120).run()
    assert at.radio(key="train_head").value == "softmax" and at.radio(key="train_head").options == ["Softmax", "ArcFace"]
    assert HEAD_CAPTION in [c.value for c in at.caption]
    at.selectbox(key="train_recipe").select("poster")
    at.radio(key="train_head").set_value("arcface")
    at.button(key="train_launch").click().run()
    assert [e.value for e in at.error] == [str(pytest.raises(UserError, TrainConfig(
        data="x", recipe="poster", head="arcface").validate).value)]
    assert RunStore().list() == []


@pytest.mark.e2e                              # a whole job (train, evaluate, calibrate, embed): ~6 s, make e2e
def test_a_tiny_arcface_run_trains_evaluates_and_embeds(demo_root, home):
    """The whole path a user takes (issue 23's "train a tiny ArcFace run"): the job trains it through
    fit (margins from the split's class counts, said in the run's events), evaluates and calibrates it,
    and its embeddings are the margin head's 512-d input."""
    from core.runs.jobs import run_job
    from core.runs.store import RunStore
    from core.serve.embeddings import compute, load
    from tests.conftest import tiny_config
    store = RunStore()
    run_id = store.create(tiny_config(demo_root, head="arcface", recipe="finetune", epochs=2, image_size=16,
                                      classes=3), status="running")
    assert run_job(store, run_id)["status"] == "done"
    run = store.require(run_id)
    evals = store.evals(run_id)
    assert evals["holdout"]["n"] > 0 and 0 <= evals["holdout"]["acc"] <= 1
    assert any("margin" in e["message"].lower() for e in store.events(run_id))
    assert run.read_calibration()["temperature"] > 0
    compute(run)
    assert load(run).vectors.shape[1] == 512
