"""Tests for core.explain: attribution methods checked against gradients computed by hand
(in the spirit of captum's tests/attr/test_saliency.py), resource hygiene (hooks, modes,
requires_grad), a model-randomisation sanity check (Adebayo et al. 2018), faithfulness,
class model visualisation and rendering. CPU only, generated tensors, no files."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import GuidedBackprop
from torch import nn

from core.errors import UserError
from core.explain import (
    METHODS,
    Faithfulness,
    class_model,
    colorize,
    default_target_layer,
    explain,
    faithfulness,
    overlay,
    render,
    signed_to_rgb,
    to_map,
    to_png_bytes,
)
from core.explain.render import _CMAPS

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
ALL = list(METHODS)


def hook_count(model: nn.Module) -> int:
    return sum(len(getattr(m, d)) for m in model.modules() for d in HOOK_DICTS)


def relu_flags(model: nn.Module) -> list[bool]:
    return [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]


# ---------------------------------------------------------------- models with known gradients
class LinearModel(nn.Module):
    """logits = W @ flatten(x) + b: dS_c/dx = W[c] everywhere."""

    def __init__(self, shape=(3, 5, 6), classes=4):
        super().__init__()
        self.shape = shape
        self.fc = nn.Linear(int(np.prod(shape)), classes)

    def forward(self, x):
        return self.fc(x.flatten(1))

    def w(self, c):
        return self.fc.weight[c].detach().view(self.shape)


class ReluMLP(nn.Module):
    """logits = W2 relu(W1 x + b1) + b2; the ReLU is a module so guided backprop hooks it."""

    def __init__(self, shape=(3, 4, 4), hidden=12, classes=3):
        super().__init__()
        self.shape = shape
        self.fc1, self.relu, self.fc2 = nn.Linear(int(np.prod(shape)), hidden), nn.ReLU(), nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


class ConvGap(nn.Module):
    """conv -> global average pool -> linear: the textbook CAM setting (Zhou et al. 2016)."""

    def __init__(self, k=5, classes=3, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 3, stride=stride, padding=1)
        self.fc = nn.Linear(k, classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


class ConstantModel(nn.Module):
    """Two equal logits whatever the input: probability 0.5 everywhere."""

    def forward(self, x):
        return torch.zeros(x.shape[0], 2)


class TinyCNN(nn.Module):
    """Small CNN with in-place ReLUs and BatchNorm (train/eval matters) for hygiene tests."""

    def __init__(self, classes=4, size=32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * (size // 4) ** 2, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class QuadrantNet(nn.Module):
    """Position-aware small CNN (flatten head, no GAP) for the quadrant task."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 8 * 8, 4)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


# ---------------------------------------------------------------- exact gradients
@pytest.fixture()
def linear():
    torch.manual_seed(0)
    return LinearModel(), torch.rand(2, 3, 5, 6), [1, 3]


def test_saliency_is_abs_weight(linear):
    model, x, t = linear
    attr = explain(model, x, t, "saliency")
    for i, c in enumerate(t):
        torch.testing.assert_close(attr[i], model.w(c).abs())
    # 2-D map: max |grad| over channels, normalised at the 99th percentile.
    m = model.w(t[0]).abs().amax(0).numpy().astype(np.float64)
    torch.testing.assert_close(to_map(attr[0]), np.clip(m / np.percentile(m, 99), 0, 1))


def test_vanilla_is_signed_weight(linear):
    model, x, t = linear
    attr = explain(model, x, t, "vanilla")
    for i, c in enumerate(t):
        torch.testing.assert_close(attr[i], model.w(c))


def test_integrated_gradients_linear_is_exact(linear):
    model, x, t = linear  # IG from a zero baseline of a linear model: x * W[c] exactly
    attr = explain(model, x, t, "integrated_gradients")
    for i, c in enumerate(t):
        torch.testing.assert_close(attr[i], x[i] * model.w(c), atol=1e-5, rtol=1e-4)


def test_smoothgrad_linear_equals_abs_weight(linear):
    model, x, t = linear  # noise cannot change a constant gradient
    attr = explain(model, x, t, "smoothgrad")
    for i, c in enumerate(t):
        torch.testing.assert_close(attr[i], model.w(c).abs())


def test_guided_backprop_by_hand():
    torch.manual_seed(1)
    model, x, c = ReluMLP(), torch.rand(2, 3, 4, 4), 2
    w1, b1, w2 = model.fc1.weight.detach(), model.fc1.bias.detach(), model.fc2.weight.detach()
    active = (x.flatten(1) @ w1.T + b1 > 0).float()
    # Guided: ReLU passes a gradient only where the input was positive AND the gradient is.
    expected = (F.relu(w2[c]) * active) @ w1
    vanilla = (w2[c] * active) @ w1
    attr = explain(model, x, c, "guided")
    torch.testing.assert_close(attr.flatten(1), expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(expected, vanilla)  # the test would be vacuous otherwise
    torch.testing.assert_close(explain(model, x, c, "vanilla").flatten(1), vanilla, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_gradcam_by_hand(stride):
    torch.manual_seed(2)
    model, x, c = ConvGap(stride=stride), torch.rand(2, 3, 8, 8), 1
    a = model.conv(x).detach()  # (N, K, h, w)
    # dS_c/dA_k(i,j) = w_ck / (h w), so alpha_k = w_ck / (h w) and CAM = ReLU(sum_k alpha_k A_k).
    cam = F.relu(torch.einsum("k,nkhw->nhw", model.fc.weight[c].detach(), a))[:, None] / a[0, 0].numel()
    expected = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)
    attr = explain(model, x, c, "gradcam")  # default layer = the only conv
    assert attr.shape == (2, 1, 8, 8)
    torch.testing.assert_close(attr, expected, atol=1e-6, rtol=1e-5)
    assert (attr >= 0).all()


def test_default_target_layer():
    model = TinyCNN()
    assert default_target_layer(model) is model.features[4]
    with pytest.raises(ValueError, match="target_layer"):
        default_target_layer(LinearModel())
    # A model that names its Grad-CAM layer (LandmarkNet's cam_layer / submodule) wins.
    model.cam_layer = "features.5"
    model.submodule = model.get_submodule
    assert default_target_layer(model) is model.features[5]


def test_unknown_method_message(linear):
    model, x, t = linear
    with pytest.raises(UserError, match=r"^Unknown explanation method 'nope'; choose one of: "
                                        r"saliency, vanilla, guided, gradcam, integrated_gradients, smoothgrad\.$"):
        explain(model, x, t, "nope")


def test_single_image_keeps_no_batch_dim(linear):
    model, x, t = linear
    assert explain(model, x[0], 1, "saliency").shape == (3, 5, 6)


# ---------------------------------------------------------------- hygiene, every method
@pytest.fixture()
def tiny():
    torch.manual_seed(3)
    model = TinyCNN()
    model.train()
    model.features[1].eval()  # a mixed state that must survive, e.g. a frozen BatchNorm
    model.features[0].weight.requires_grad_(False)  # a frozen parameter
    return model


def _state(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            relu_flags(model))


@pytest.mark.parametrize("method", ALL)
def test_every_method_shape_finite_and_restores(tiny, method):
    x = torch.rand(2, 3, 32, 32)
    before = _state(tiny)
    attr = explain(tiny, x, [0, 3], method)
    assert attr.shape == ((2, 3, 32, 32) if METHODS[method].pixel else (2, 1, 32, 32))
    assert torch.isfinite(attr).all() and not attr.requires_grad
    assert hook_count(tiny) == 0
    assert _state(tiny) == before
    assert all(p.grad is None for p in tiny.parameters())


@pytest.mark.parametrize("method", ALL)
def test_every_method_cleans_up_after_error(tiny, method):
    before = _state(tiny)
    with pytest.raises(IndexError):
        explain(tiny, torch.rand(1, 3, 32, 32), 99, method)  # 4 classes
    assert hook_count(tiny) == 0
    assert _state(tiny) == before


def test_preexisting_hooks_survive(tiny):
    calls = []
    handle = tiny.head.register_forward_hook(lambda *a: calls.append(1))
    for method in ALL:
        explain(tiny, torch.rand(1, 3, 32, 32), 0, method)
    assert hook_count(tiny) == 1 and calls
    handle.remove()


@pytest.mark.filterwarnings("ignore::UserWarning:captum")  # the direct captum reference call
def test_resnet18_every_method_inplace_relu():
    torch.manual_seed(4)
    model = torchvision.models.resnet18(num_classes=5)
    model.train()
    x = torch.rand(1, 3, 64, 64)
    assert all(relu_flags(model))
    for method in ALL:
        attr = explain(model, x, 2, method)
        assert attr.shape[-2:] == (64, 64) and torch.isfinite(attr).all()
    cam = explain(model, x, 2, "gradcam", target_layer=model.layer4)
    assert cam.shape == (1, 1, 64, 64) and torch.isfinite(cam).all()
    assert all(relu_flags(model)) and model.training and hook_count(model) == 0
    # Guided backprop must equal captum on an out-of-place copy of the same network.
    ref = copy.deepcopy(model).eval()
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    expected = GuidedBackprop(ref).attribute(x.clone().requires_grad_(True), target=2)
    torch.testing.assert_close(explain(model, x, 2, "guided"), expected)


# ---------------------------------------------------------------- trained model: sanity + faithfulness
def quadrant_data(n, gen, size=32, sq=8):
    """Class = quadrant holding a bright/dark checkerboard square on a mid-grey background.

    A checkerboard rather than a flat bright square: its local mean equals the background,
    so the blurred faithfulness baseline really removes the evidence.
    """
    y = torch.randint(0, 4, (n,), generator=gen)
    half = size // 2
    oy = (y // 2) * half + torch.randint(0, half - sq + 1, (n,), generator=gen)
    ox = (y % 2) * half + torch.randint(0, half - sq + 1, (n,), generator=gen)
    r = torch.arange(size)
    rows = (r[None] >= oy[:, None]) & (r[None] < oy[:, None] + sq)
    cols = (r[None] >= ox[:, None]) & (r[None] < ox[:, None] + sq)
    mask = rows[:, :, None] & cols[:, None, :]
    board = (((r[:, None] + r[None, :]) % 2).float() * 0.8 + 0.1).expand(n, 3, size, size)
    x = 0.5 + 0.1 * (torch.rand(n, 3, size, size, generator=gen) - 0.5)
    return torch.where(mask[:, None], board, x), y, mask


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(5)
    xs, ys, _ = quadrant_data(512, gen)
    model = QuadrantNet()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(120):  # stops early: a saturated softmax would flatten the curves
        idx = torch.randint(0, len(xs), (64,), generator=gen)
        loss = F.cross_entropy(model(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.05:
            break
    model.zero_grad(set_to_none=True)  # class_model must not leave .grad behind
    model.eval()
    x, y, mask = quadrant_data(8, gen)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.875
    return model, x, y, mask


def _spearman(a, b):
    ra, rb = (v.flatten().argsort().argsort().double() for v in (a, b))
    return torch.corrcoef(torch.stack([ra, rb]))[0, 1].item()


def test_sanity_randomised_weights_change_saliency(trained):
    model, x, y, mask = trained
    torch.manual_seed(6)
    random_model = QuadrantNet().eval()
    s_trained = explain(model, x, y, "saliency").amax(1)
    s_random = explain(random_model, x, y, "saliency").amax(1)
    corr = [_spearman(a, b) for a, b in zip(s_trained, s_random)]
    assert np.mean(corr) < 0.5, corr
    # The trained model looks at the square: more saliency per pixel inside than outside.
    ratios = [(s[m].mean() / s[~m].mean()).item() for s, m in zip(s_trained, mask)]
    assert min(ratios) > 1.5, ratios


def test_faithfulness_saliency_beats_random(trained):
    model, x, y, _ = trained
    gen = torch.Generator().manual_seed(7)
    sal = explain(model, x, y, "saliency")
    ours, rand = [], []
    for i in range(len(x)):
        ours.append(faithfulness(model, x[i], int(y[i]), sal[i]).score)
        rand.append(faithfulness(model, x[i], int(y[i]), torch.rand(32, 32, generator=gen)).score)
    assert np.mean(ours) > np.mean(rand) + 0.1, (ours, rand)


def test_faithfulness_curves_consistent(trained):
    model, x, y, _ = trained
    f = faithfulness(model, x[0], int(y[0]), torch.rand(32, 32), steps=8)
    assert isinstance(f, Faithfulness)
    assert f.deletion_curve.shape == f.insertion_curve.shape == f.fractions.shape == (9,)
    # Both curves join the full image and the (blurred) baseline at opposite ends.
    with torch.no_grad():
        p = F.softmax(model(x[:1]), 1)[0, int(y[0])].item()
    assert f.deletion_curve[0] == pytest.approx(p, abs=1e-5)
    assert f.insertion_curve[-1] == pytest.approx(p, abs=1e-5)
    assert f.deletion_curve[-1] == pytest.approx(f.insertion_curve[0], abs=1e-6)
    assert f.score == pytest.approx(f.insertion_auc - f.deletion_auc)
    assert 0 <= f.deletion_auc <= 1 and 0 <= f.insertion_auc <= 1
    # Trapezoid over [0, 1] of a constant curve is the constant.
    const = faithfulness(ConstantModel(), x[0], 0, torch.rand(32, 32))
    assert const.deletion_auc == pytest.approx(0.5) and const.score == pytest.approx(0.0)


# ---------------------------------------------------------------- class model visualisation
def test_class_model_raises_class_score(trained):
    model, *_ = trained
    model.train()
    calls = []
    start = class_model(model, 2, size=32, steps=0)
    img = class_model(model, 2, size=32, steps=40, progress=lambda s, n, sc: calls.append((s, n, sc)))
    assert img.shape == (3, 32, 32) and img.min() >= 0 and img.max() <= 1
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        assert model(img[None])[0, 2] > model(start[None])[0, 2]
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters()) and hook_count(model) == 0
    assert [c[0] for c in calls] == list(range(1, 41)) and all(c[1] == 40 for c in calls)


def test_class_model_should_stop(trained):
    model, *_ = trained
    steps = []
    class_model(model, 0, size=32, steps=50, progress=lambda s, n, sc: steps.append(s),
                should_stop=lambda: len(steps) >= 3)
    assert steps == [1, 2, 3]


# ---------------------------------------------------------------- rendering
def test_colorize_and_to_map():
    m = np.linspace(0, 1, 20).reshape(4, 5)
    rgb = colorize(m)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0, 0, 4) and tuple(rgb[-1, -1]) == (0xFC, 0xFF, 0xA4)
    assert colorize(m, "viridis").shape == (4, 5, 3)
    with pytest.raises(ValueError):
        colorize(m, "nope")
    tm = to_map(torch.randn(3, 6, 7))
    assert tm.shape == (6, 7) and tm.min() >= 0 and tm.max() == 1
    assert to_map(np.zeros((3, 4, 4))).max() == 0
    assert set(_CMAPS) >= {"inferno"}


def test_signed_overlay_png():
    grey = signed_to_rgb(torch.zeros(3, 4, 4))
    assert grey.shape == (4, 4, 3) and (grey == 128).all()
    g = torch.zeros(3, 4, 4)
    g[0, 0, 0], g[2, 1, 1] = 1.0, -1.0
    rgb = signed_to_rgb(g, percentile=100)
    assert tuple(rgb[0, 0]) == (255, 128, 128) and tuple(rgb[1, 1]) == (128, 128, 0)
    img = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    heat = colorize(np.random.default_rng(1).random((8, 9)))
    assert np.array_equal(overlay(img, heat, alpha=0.0), img)
    assert np.array_equal(overlay(img, heat, alpha=1.0), heat)
    assert overlay(img, colorize(np.zeros((4, 4))), 0.5).shape == (8, 9, 3)  # heat resized
    assert to_png_bytes(img).startswith(b"\x89PNG\r\n\x1a\n")
    assert to_png_bytes(np.zeros((5, 5))).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("method", ALL)
def test_render_every_method(tiny, method):
    x = torch.rand(1, 3, 32, 32)
    img = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = render(method, img, explain(tiny, x, 1, method)[0], alpha=0.5)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_render_unknown_method():
    with pytest.raises(UserError, match="^Unknown explanation method 'nope'; choose one of: saliency, "):
        render("nope", np.zeros((4, 4, 3), np.uint8), torch.zeros(3, 4, 4))


def test_saliency_of_a_trained_run_lands_on_the_landmark_not_the_sky(use_trained_home):
    """Issue 4's 'done when': on fresh demo photos (a seed the run never saw), the saliency map
    puts more of its mass on the landmark's pixels than on the sky and ground around it."""
    from core.explain import landmark_focus
    from core.runs.store import RunStore
    from core.serve.predictor import load_predictor
    home, run_ids = use_trained_home
    r = landmark_focus(load_predictor(RunStore().require(run_ids[0])), images=24, methods=("saliency",))["saliency"]
    assert r["images"] >= 20
    assert r["mass_on_landmark_vs_area"] > 1.15 and r["images_denser_on_landmark"] > 0.75   # measured 1.28, 1.0


# ---------------------------------------------------------------- display size, legend, signed maps (issue 10)
def test_render_resizes_the_map_smoothly_to_the_photo():
    from core.explain.render import upsample
    photo = np.full((96, 96, 3), 100, np.uint8)
    attr = torch.zeros(3, 32, 32)
    attr[:, 16, 16] = 1.0
    for method in ALL:
        out = render(method, photo, attr if method != "gradcam" else attr[:1].abs(), alpha=1.0)
        assert out.shape == (96, 96, 3), method                  # the photo's (display) size, not the model's
    m = upsample(to_map(attr), (96, 96))
    assert m.shape == (96, 96) and m.max() <= 1 and m.min() >= 0
    # bicubic on the values: the 3x3 block of the bright cell is not flat (no nearest/blocky upscale) ...
    block = m[48:51, 48:51]
    assert block.max() - block.min() > 0.05
    # ... and it fades over neighbouring cells instead of stopping at the cell's edge
    assert 0 < m[49, 47] < m[49, 48] < m[49, 49] and 0 < m[49, 51] < m[49, 49]


def test_signed_methods_use_a_diverging_map_centred_on_zero():
    from core.explain.render import colorbar, legend, signed_map
    SIGNED_METHODS = [m for m, cls in METHODS.items() if cls.kind == "signed"]
    assert set(SIGNED_METHODS) == {"vanilla", "guided", "integrated_gradients"}
    photo = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    a = torch.zeros(3, 40, 40)
    a[:, :20] = 1.0                                              # top half: raises the score
    a[:, 20:] = 0.0
    a[:, 30:, :10] = -1.0                                        # a corner: lowers it
    for method in SIGNED_METHODS:
        out = render(method, photo, a, alpha=1.0).astype(int)
        assert (out[:20, :, 0] > out[:20, :, 2] + 100).all()    # red
        assert (out[31:, :9, 2] > out[31:, :9, 0] + 100).all()  # blue
        assert np.array_equal(out[22:28], photo[22:28])          # zero: the photo, untouched
    m = signed_map(a)
    assert m.max() == 1 and m.min() == -1 and (m[22:28] == 0).all()
    bar = colorbar("integrated_gradients", width=101).astype(int)
    left, mid, right = bar[0, 0], bar[0, 50], bar[0, 100]
    assert left[2] > left[0] and right[0] > right[2] and (mid > 240).all()   # blue · white · red
    heat = colorbar("saliency", width=101)
    assert heat[0, 0].sum() < 20 and heat[0, 100].sum() > 600                # dark to bright
    for method in ALL:
        ends, sentence = legend(method)
        assert sentence and ends[0] and ends[-1]
    assert "Red" in legend("vanilla")[1] and "Bright" in legend("saliency")[1]


class Relu6Net(nn.Module):
    """conv -> ReLU6 -> conv -> ReLU6 -> pool -> linear, small enough that no activation reaches 6."""

    def __init__(self, act=nn.ReLU6):
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(3, 6, 3, padding=1), act(inplace=True)
        self.c2, self.a2 = nn.Conv2d(6, 6, 3, padding=1), act(inplace=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.a2(self.c2(self.a1(self.c1(x)))).mean((2, 3)))


def test_guided_backprop_guides_through_relu6():
    """EfficientNet-Lite0 uses ReLU6, which captum's GuidedBackprop does not hook: "guided" was the plain
    gradient there, so saliency, vanilla and guided had identical faithfulness scores."""
    torch.manual_seed(0)
    model = Relu6Net()
    ref = Relu6Net(act=nn.ReLU)
    ref.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert model.c1(x).max() < 6
    guided = explain(model, x, 1, "guided")
    assert not torch.allclose(guided, explain(model, x, 1, "vanilla"))
    with pytest.warns(UserWarning, match="backward hooks on ReLU"):    # captum's own note, on the reference
        expected = GuidedBackprop(ref).attribute(x.clone().requires_grad_(True), target=1)
    torch.testing.assert_close(guided, expected)
    assert model.a1.inplace and model.a2.inplace and hook_count(model) == 0   # all given back
