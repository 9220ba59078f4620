"""Attribution methods: one small class per method, each a thin wrapper over captum.

Every classifier takes float images in [0, 1] shaped (N, 3, H, W) and normalises inside
itself, so all attributions live in image space. Pixel methods return (N, 3, H, W);
Grad-CAM returns (N, 1, H, W) upsampled to the input size.

Attribution borrows the model: it is switched to eval mode, in-place ReLUs are made
out-of-place and captum registers hooks. ``model_guard`` gives all of that back, on
success and on error alike (hooks are resources too).

Saliency and vanilla backpropagation are the same gradient (its size and its sign): ``input_gradient``
computes it once per model, image and class and both methods read it (a small cache, dropped when the
model's weights change).

Each method is one class that also says how it is shown (label, kind, legend, cost);
``@register`` puts it in ``METHODS``, which the CLI, the renderer and the Classify page read.
Adding a method is one decorated class here (or in any module imported before use).
"""
from __future__ import annotations

import numbers
import threading
import warnings
import weakref
from contextlib import contextmanager
from typing import Iterator, Sequence, Union

import torch
from captum.attr import (
    GuidedBackprop,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from captum._utils.common import _register_backward_hook
from torch import Tensor, nn

from core.errors import UserError

Target = Union[int, Sequence[int], Tensor]
# Rectifiers guided backprop guides through: captum hooks nn.ReLU only, so on EfficientNet-Lite0
# (ReLU6 throughout) "guided" would silently be the plain gradient (found through identical
# faithfulness scores for saliency, vanilla and guided on the Classify page).
RELUS = (nn.ReLU, nn.ReLU6)

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
# Bookkeeping dicts keyed by the same hook ids; cleaned together with the hooks.
_HOOK_SIDE_DICTS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                    "_forward_pre_hooks_with_kwargs")

_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _lock_for(model: nn.Module) -> threading.RLock:
    # A cached model may be shared by several dashboard sessions (threads); toggling its
    # mode and hooks concurrently would corrupt both runs, so attributions on one model
    # are serialised. Re-entrant so that e.g. faithfulness may call explain inside.
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


def _hook_ids(model: nn.Module) -> dict:
    return {m: {d: set(getattr(m, d, {})) for d in _HOOK_DICTS} for m in model.modules()}


def _drop_new_hooks(model: nn.Module, before: dict) -> None:
    """Remove every hook registered since `before` (captum normally does this itself)."""
    for m in model.modules():
        known = before.get(m, {})
        for d in _HOOK_DICTS:
            hooks = getattr(m, d, None)
            if hooks is None:
                continue
            for hid in [h for h in hooks if h not in known.get(d, ())]:
                hooks.pop(hid, None)
                for side in _HOOK_SIDE_DICTS:
                    getattr(m, side, {}).pop(hid, None)


@contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, out-of-place ReLUs and grad enabled for the block; everything restored after.

    ReLUs: captum's GuidedBackprop hooks nn.ReLU modules and in-place ReLU (torchvision
    ResNet/VGG use ``ReLU(inplace=True)``) breaks its tensor hooks, so ``inplace`` is
    switched off for the duration. Per-module training flags are restored individually so
    mixed states (e.g. a frozen BatchNorm kept in eval) survive.
    """
    with _lock_for(model):
        modes = [(m, m.training) for m in model.modules()]
        grads = [(p, p.requires_grad) for p in model.parameters()]
        relus = [m for m in model.modules() if isinstance(m, RELUS) and m.inplace]
        hooks = _hook_ids(model)
        try:
            model.eval()
            for m in relus:
                m.inplace = False
            with torch.enable_grad(), warnings.catch_warnings():
                # captum warns about every hook it sets and every input it marks as
                # requiring grad; core never prints, and these are expected here.
                warnings.filterwarnings("ignore", module=r"captum")
                yield model
        finally:
            for m in relus:
                m.inplace = True
            for p, flag in grads:
                p.requires_grad_(flag)
            for m, flag in modes:
                m.training = flag
            _drop_new_hooks(model, hooks)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def default_target_layer(model: nn.Module) -> nn.Module:
    """Grad-CAM layer: the last convolutional feature map (Selvaraju et al. 2017, §3).

    A model that names its own (``LandmarkNet.cam_layer`` + ``submodule``, e.g. ResNet's
    ``layer4``, VGG's rectified ``features.29``) is taken at its word; otherwise the last
    nn.Conv2d in ``model.modules()`` order. Callers may always pass another module.
    """
    named = getattr(model, "cam_layer", None)
    if isinstance(named, str) and named and callable(getattr(model, "submodule", None)):
        return model.submodule(named)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("The model has no Conv2d layer; pass target_layer explicitly for Grad-CAM.")
    return convs[-1]


_GRADS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_GRADS_PER_MODEL = 8  # (image, class) pairs kept per model; the Classify page explains one at a time


def _weights_version(model: nn.Module) -> int:
    """Grows whenever a parameter or buffer is changed in place (optimizer step, load_state_dict)."""
    return sum(t._version for t in model.parameters()) + sum(t._version for t in model.buffers())


def _grad_key(model: nn.Module, x: Tensor, target: Target) -> tuple:
    t = target.detach().cpu().numpy().tobytes() if isinstance(target, Tensor) else target
    data = x.detach().cpu().contiguous().numpy().tobytes()
    return (_weights_version(model), tuple(x.shape), str(x.device), hash(data), data, repr(t))


def input_gradient(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """The signed gradient dS_target/dx (captum's Saliency with abs=False), computed once per model,
    image batch and target: saliency (its size) and vanilla backpropagation (it, signed) share it.
    ``x`` as ``Method.attribute`` passes it (on the model's device, requiring grad; the caller holds
    ``model_guard``). Returns a detached tensor that callers must not modify in place."""
    key = _grad_key(model, x, target)
    with _lock_for(model):
        cache = _GRADS.setdefault(model, {})
        hit = cache.get(key)
        if hit is None:
            hit = Saliency(model).attribute(x, target=target, abs=False).detach()
            if len(cache) >= _GRADS_PER_MODEL or any(k[0] != key[0] for k in cache):
                cache.clear()      # new weights make every entry stale; otherwise keep it small
            cache[key] = hit
        return hit


KINDS = ("signed", "heat")
"""How a method's map is drawn: "signed" has a sign (more or less of the class score), drawn as a
diverging map centred on zero; "heat" is a magnitude (|gradient|, Grad-CAM's ReLU), dark to bright."""

METHODS: dict[str, type[Method]] = {}
"""The attribution registry, name -> class, in registration order: the CLI, the renderer and the
Classify page read every method, its label, kind, legend and cost from here."""


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: offer ``cls`` everywhere (CLI ``--explain``, the renderer, Classify) under
    ``cls.name``. Checks what the pages need, so a half-described method fails here, not on a page."""
    if not cls.name or not cls.label or not cls.legend:
        raise ValueError(f"{cls.__name__} needs a name, a label and a legend to be registered.")
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}.kind is {cls.kind!r}; it must be one of: {', '.join(KINDS)}.")
    if not isinstance(cls.cost, int) or cls.cost < 0:
        raise ValueError(f"{cls.__name__}.cost must be a whole number of passes (>= 0); got {cls.cost!r}.")
    if METHODS.get(cls.name, cls) is not cls:
        raise ValueError(f"An attribution method named {cls.name!r} is registered already "
                         f"({METHODS[cls.name].__name__}).")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The registered class called ``name``, or one sentence listing the known names."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise UserError(
            f"Unknown explanation method {name!r}; choose one of: {', '.join(METHODS)}.") from None


class Method:
    """Binds a model; ``attribute(x, target)`` returns a detached attribution tensor.

    A subclass implements ``_attribute`` and says, as class attributes, what every consumer shows;
    decorated with ``@register`` it appears in the CLI, the renderer and the Classify page.
    """

    name = ""    # registry key and CLI spelling (`--explain NAME`)
    label = ""   # what pages call it (option, caption, faithfulness table row)
    kind = "heat"  # one of KINDS: how the renderer draws it and which colour bar the page shows
    legend = ""  # one sentence under the map on the Classify page: what the colours mean
    cost = 1     # forward+backward passes through the model per image (Classify's help and spinner say it)
    pixel = True  # False: a layer's coarse map upsampled (Grad-CAM, (N, 1, H, W)); True: (N, 3, H, W)
    same_ranking_as = ""  # a method whose map ranks pixels identically, so faithfulness scores match
    note = ""    # a short count shown after the label in captions, e.g. "16 noisy samples"

    def __init__(self, model: nn.Module, target_layer: nn.Module | None = None) -> None:
        self.model = model
        self.target_layer = target_layer

    def attribute(self, x: Tensor, target: Target) -> Tensor:
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"Expected images shaped (N, 3, H, W); got {tuple(x.shape)}.")
        if isinstance(target, numbers.Integral):
            target = int(target)  # numpy ints: captum only recognises Python int
        elif isinstance(target, Tensor):
            target = target.to(model_device(self.model))
        inp = x.detach().to(model_device(self.model), torch.float32).clone().requires_grad_(True)
        with model_guard(self.model):
            attr = self._attribute(inp, target).detach().to(x.device)
        return attr[0] if single else attr

    def _attribute(self, x: Tensor, target: Target) -> Tensor:  # pragma: no cover
        raise NotImplementedError


@register
class SaliencyMethod(Method):
    """Image-specific class saliency (Simonyan et al. 2014, §3): |dS_c/dI|; the 2-D map is
    the max over colour channels, done at render time."""

    name = "saliency"
    label = "Saliency map (Simonyan et al. 2014)"
    legend = ("Bright: a small change of the pixel moves the class score most (the size of the gradient, "
              "largest over the colour channels); dark: it hardly matters.")

    def _attribute(self, x, target):
        return input_gradient(self.model, x, target).abs()   # = Saliency(model).attribute(abs=True)


@register
class VanillaMethod(Method):
    """Vanilla backpropagation: the signed gradient dS_c/dI, rendered as a colour image."""

    name = "vanilla"
    label = "Vanilla backpropagation"
    kind = "signed"
    legend = ("Red: brightening the pixel raises the class score; blue: it lowers it; no colour: no effect "
              "(the gradient, summed over the colour channels).")
    # faithfulness ranks pixels by max |.| over channels: |gradient|, exactly the saliency map
    same_ranking_as = "saliency"

    def _attribute(self, x, target):
        return input_gradient(self.model, x, target).clone()  # = Saliency(model).attribute(abs=False)


class _GuidedBackprop(GuidedBackprop):
    """captum's GuidedBackprop, also guiding through ReLU6 (whose own backward already zeroes the
    gradient outside 0 < x < 6; the guide then keeps only its positive part, as for ReLU)."""

    def _register_hooks(self, module: nn.Module) -> None:
        if isinstance(module, RELUS):
            self.backward_hooks.extend(_register_backward_hook(module, self._backward_hook, self))


@register
class GuidedMethod(Method):
    """Guided backpropagation (Springenberg et al. 2015): only positive gradients pass ReLUs
    (and ReLU6s)."""

    name = "guided"
    label = "Guided backpropagation"
    kind = "signed"
    legend = ("Red: the pixel's pattern raises the class score; blue: it lowers it; no colour: no effect. "
              "Like vanilla backpropagation, but only signals the network passes on positively, so edges "
              "are sharper.")

    def _attribute(self, x, target):
        return _GuidedBackprop(self.model).attribute(x, target=target)


@register
class GradCamMethod(Method):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k alpha_k A^k), alpha_k = mean grad over
    the layer's spatial positions; bilinearly upsampled to the input size."""

    name = "gradcam"
    label = "Grad-CAM"
    legend = ("Bright: regions whose features raise the class score; dark: no positive evidence. Coarse: "
              "one value per cell of the last feature map, smoothed to the image.")
    pixel = False

    def _attribute(self, x, target):
        layer = self.target_layer or default_target_layer(self.model)
        cam = LayerGradCam(self.model, layer).attribute(x, target=target, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
        return cam.clamp_min(0)  # bilinear of a ReLU'd map is >= 0 already; guards rounding


@register
class IntegratedGradientsMethod(Method):
    """Integrated gradients (Sundararajan et al. 2017) from a black (all-zero) baseline.
    32 steps keep it fast on CPU; ``internal_batch_size`` bounds memory per forward."""

    N_STEPS = 32
    name = "integrated_gradients"
    label = "Integrated gradients"
    kind = "signed"
    legend = ("Red: the pixel adds to the class score compared with a black image; blue: it takes away; "
              "no colour: no part (summed over the colour channels; the total is the score difference).")
    cost = N_STEPS
    note = f"{N_STEPS} steps"

    def __init__(self, model, target_layer=None, n_steps: int = N_STEPS, internal_batch_size: int = 32):
        super().__init__(model, target_layer)
        self.n_steps, self.internal_batch_size = n_steps, internal_batch_size

    def _attribute(self, x, target):
        batch = max(self.internal_batch_size, x.shape[0])  # captum needs >= N
        return IntegratedGradients(self.model).attribute(
            x, baselines=torch.zeros_like(x), target=target,
            n_steps=self.n_steps, internal_batch_size=batch)


@register
class SmoothGradMethod(Method):
    """SmoothGrad (Smilkov et al. 2017): mean |gradient| over noisy copies of the input;
    sigma = 0.15 * (max - min), the paper's recommended 10-20 % noise level.
    Seeded on a forked RNG so the dashboard shows the same map on every rerun."""

    NT_SAMPLES = 16
    name = "smoothgrad"
    label = "SmoothGrad"
    legend = (f"Bright: as the saliency map (size of the gradient), averaged over {NT_SAMPLES} noisy copies "
              "of the image, so less speckled; dark: it hardly matters.")
    cost = NT_SAMPLES
    note = f"{NT_SAMPLES} noisy samples"

    def __init__(self, model, target_layer=None, nt_samples: int = NT_SAMPLES, stdev_frac: float = 0.15,
                 batch_size: int = 16, seed: int | None = 0):
        super().__init__(model, target_layer)
        self.nt_samples, self.stdev_frac = nt_samples, stdev_frac
        self.batch_size, self.seed = batch_size, seed

    def _attribute(self, x, target):
        sigma = self.stdev_frac * float(x.detach().max() - x.detach().min())
        cpu = x.device.type == "cpu"
        with torch.random.fork_rng(devices=[] if cpu else [x.device.index or 0],
                                   device_type="cuda" if cpu else x.device.type):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            return NoiseTunnel(Saliency(self.model)).attribute(
                x, nt_type="smoothgrad", nt_samples=self.nt_samples, stdevs=sigma,
                nt_samples_batch_size=max(1, self.batch_size // x.shape[0]),
                target=target, abs=True)
