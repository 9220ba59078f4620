"""Training recipes (core.train.recipes): each sets what it says, poster is the seed's recipe
unchanged, old runs stay poster. That finetune learns faster than poster from pretrained weights
is a benchmark (it trains for many seconds): `python bench/learning.py finetune`."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from core.errors import UserError
from core.train import recipes
from core.train.config import TrainConfig
from core.train.engine import make_optimizer
from core.train.models import build_model


@pytest.fixture
def weight_file(tmp_path):
    """A small_cnn state dict on disk: --weights PATH, which counts as pretrained."""
    path = tmp_path / "w.pt"
    torch.save(build_model("small_cnn", 3, "none").state_dict(), path)
    return str(path)


def _groups(opt) -> dict:
    return {g["name"]: g for g in opt.param_groups}


def test_finetune_groups_learning_rates_optimizer_and_decay(weight_file):
    cfg = tiny_config(".", weights=weight_file, lr=2e-3, recipe="finetune")
    model = build_model("small_cnn", 4, weight_file)
    opt, _ = make_optimizer(cfg, model, steps_per_epoch=10)
    assert type(opt) is torch.optim.AdamW
    g = _groups(opt)
    assert set(g) == {"head", "head_no_decay", "body", "body_no_decay"}
    assert opt.param_groups[0]["name"] == "head"                       # the lr the step rows report
    assert g["head"]["initial_lr"] == g["head_no_decay"]["initial_lr"] == pytest.approx(2e-3)   # before warm-up
    assert g["body"]["initial_lr"] == g["body_no_decay"]["initial_lr"] == pytest.approx(2e-3 * 0.3)
    assert g["head"]["weight_decay"] == g["body"]["weight_decay"] == 0.05
    assert g["head_no_decay"]["weight_decay"] == g["body_no_decay"]["weight_decay"] == 0.0
    head = {id(p) for p in model.submodule("fc").parameters()}
    assert {id(p) for p in g["head"]["params"] + g["head_no_decay"]["params"]} == head
    assert all(p.ndim == 1 for p in g["body_no_decay"]["params"]) and all(p.ndim > 1 for p in g["body"]["params"])
    ids = [id(p) for grp in opt.param_groups for p in grp["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    # --weight-decay replaces the recipe's 0.05; --optimizer sgd keeps the groups and the schedule
    opt, _ = make_optimizer(tiny_config(".", weights=weight_file, weight_decay=0.01), model, 10)
    assert _groups(opt)["body"]["weight_decay"] == 0.01
    opt, _ = make_optimizer(tiny_config(".", weights=weight_file, optimizer="sgd"), model, 10)
    assert type(opt) is torch.optim.SGD and _groups(opt)["body"]["initial_lr"] == pytest.approx(3e-4)


def test_finetune_frozen_features_and_from_scratch(weight_file):
    frozen = build_model("small_cnn", 4, weight_file, freeze=True)
    opt, _ = make_optimizer(tiny_config(".", weights=weight_file, freeze=True), frozen, 10)
    assert set(_groups(opt)) == {"head", "head_no_decay"}
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(1e-3 * 5)   # a linear layer's rate
    scratch = recipes.recipe_for(tiny_config(".", weights="none"))
    assert (scratch.head_lr, scratch.body_lr, scratch.freeze_bn, scratch.zero_head) == (1e-3, 1e-3, False, False)
    assert (scratch.optimizer, scratch.label_smoothing, scratch.schedule) == ("adamw", 0.1, "warmup_cosine")


def test_finetune_schedule_warms_up_then_decays_by_cosine_per_step(weight_file):
    cfg = tiny_config(".", weights=weight_file, epochs=4)
    model = build_model("small_cnn", 4, weight_file)
    opt, sched = make_optimizer(cfg, model, steps_per_epoch=25)     # 100 steps, 10 of warm-up
    head, body = [], []
    for _ in range(100):
        head.append(opt.param_groups[0]["lr"])
        body.append(_groups(opt)["body"]["lr"])
        opt.step()
        sched.step()
    assert head[0] == pytest.approx(1e-3 / 10)
    assert all(a < b for a, b in zip(head[:10], head[1:10]))             # rising for 10% of the steps
    assert max(head) == pytest.approx(1e-3) and head.index(max(head)) == 9
    assert all(a >= b for a, b in zip(head[9:], head[10:]))             # then falling
    assert head[54] == pytest.approx(5e-4, rel=0.05)                    # cosine: half-way down half-way through
    assert 0 < head[-1] < 2e-5
    assert all(b == pytest.approx(0.3 * h) for h, b in zip(head, body))
    w = recipes.WarmupCosine(100, 0.1)
    assert [round(w(s), 3) for s in (0, 9, 10, 99)] == [0.1, 1.0, 1.0, 0.0]


def test_finetune_smoothing_augmentation_batchnorm_and_zero_head(weight_file):
    r = recipes.recipe_for(tiny_config(".", weights=weight_file))
    assert (r.name, r.label_smoothing, r.augment, r.freeze_bn, r.zero_head) == ("finetune", 0.1, ("hflip",), True, True)
    assert recipes.recipe_for(tiny_config(".", weights=weight_file, augment=("crop",))).augment == ("crop",)
    assert "label smoothing 0.1" in r.describe() and "frozen in the backbone" in r.describe()
    model = build_model("small_cnn", 4, weight_file)
    assert model.new_head                                   # 4 classes, the file's head has 3: a new one
    recipes.prepare_model(model, r)
    assert all((p == 0).all() for p in model.submodule("fc").parameters())
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)         # running statistics kept...
    assert all(m.weight.requires_grad for m in bns)         # ...scale and shift still learn
    same = build_model("small_cnn", 3, weight_file)         # the file's own head fits: kept, not zeroed
    recipes.prepare_model(same, r)
    assert not same.new_head and same.submodule("fc").weight.abs().sum() > 0


def test_poster_is_the_seeds_recipe_unchanged(weight_file):
    cfg = tiny_config(".", weights=weight_file, recipe="poster", channels_last="off", fused="off", pipeline="plain")
    r = recipes.recipe_for(cfg)
    assert (r.optimizer, r.label_smoothing, r.schedule, r.augment, r.freeze_bn, r.zero_head) == \
           ("adam", 0.0, "constant", (), False, False)
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, weight_file)
    ref = build_model("small_cnn", 4, weight_file)
    ref.load_state_dict(model.state_dict())
    recipes.prepare_model(model, r)
    opt, sched = make_optimizer(cfg, model, 10)
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (1e-3, 0.0)
    # the same steps as the code before recipes: Adam on every parameter, plain cross-entropy
    ref_opt = torch.optim.Adam([p for p in ref.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    batches = [(torch.rand(8, 3, 32, 32), torch.randint(0, 4, (8,))) for _ in range(3)]
    from core.train.engine import train_one_epoch
    from core.train.sinks import NullSink
    train_one_epoch(model, batches, opt, cfg, torch.device("cpu"), 1, 0, NullSink(), scheduler=sched)
    ref.train()
    for x, y in batches:
        loss = F.cross_entropy(ref(x), y)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    for _ in range(5):
        sched.step()
    assert opt.param_groups[0]["lr"] == 1e-3                # constant


def test_config_field_cli_validation_and_old_runs_load_as_poster(tmp_path):
    from core.cli import build_parser
    from core.train.config import DEFAULTS, LEGACY, from_arguments
    assert DEFAULTS["recipe"] == "finetune" and DEFAULTS["tta"] is False
    a = build_parser().parse_args(["train", "--recipe", "poster", "--tta"])
    assert (from_arguments(a).recipe, from_arguments(a).tta) == ("poster", True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--recipe", "fancy"])
    with pytest.raises(UserError, match="Unknown recipe 'fancy'"):
        TrainConfig(recipe="fancy").validate()
    old = json.loads(TrainConfig(data="x").to_json())
    del old["recipe"], old["tta"]                            # a config.json written before recipes
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert TrainConfig.load(tmp_path / "config.json").recipe == "poster" == LEGACY["recipe"]
    assert TrainConfig.load(tmp_path / "config.json").tta is False
    (tmp_path / "config.json").write_text(TrainConfig(data="x").to_json())
    assert TrainConfig.load(tmp_path / "config.json").recipe == "finetune"
    from core.runs import reproduce                          # the poster's table keeps the poster's recipe
    _, cfg, _, _ = reproduce.plan(str(tmp_path), [10], ["efficientnet_lite0"])
    assert cfg.recipe == "poster"
    from core.runs.sweeps import trial_config                # a sweep stored before recipes: poster too
    assert trial_config(old, {"lr": 0.01}).recipe == "poster"


def test_flip_averaging_in_evaluation_and_the_predictor():
    from core.train.engine import predict_batches
    torch.manual_seed(0)
    model = build_model("small_cnn", 3, "none").eval()
    x = torch.rand(4, 3, 32, 32)
    cfg = tiny_config(".", pipeline="plain", channels_last="off")
    _, plain = predict_batches(model, [(x, torch.zeros(4, dtype=torch.long))], cfg, torch.device("cpu"))
    _, tta = predict_batches(model, [(x, torch.zeros(4, dtype=torch.long))], cfg, torch.device("cpu"), tta=True)
    with torch.no_grad():
        want = (torch.softmax(model(x), 1) + torch.softmax(model(x.flip(3)), 1)) / 2
    assert torch.allclose(torch.from_numpy(tta), want, atol=1e-6) and not torch.allclose(torch.from_numpy(plain), want)
    from core.serve.predictor import Predictor
    pred = Predictor("r", model, ["a", "b", "c"], ["a", "b", "c"], tiny_config(".", tta=True))
    assert torch.allclose(torch.from_numpy(pred.probs(x)), want, atol=1e-6)               # the run's setting
    assert torch.allclose(torch.from_numpy(pred.probs(x, tta=False)), torch.softmax(model(x), 1).detach(), atol=1e-6)
