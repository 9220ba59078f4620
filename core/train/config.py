"""Run configuration: a frozen dataclass saved as config.json beside the run.

A run can be reproduced or resumed from its folder alone. Defaults are the seed poster's final
settings: Adam, lr 0.001, 10 epochs, cross-entropy, no augmentation, no frozen features.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError

AUGMENTATIONS = ("crop", "hflip", "vflip", "rot90")
OPTIMIZERS = ("adam", "sgd")
PIPELINES = ("prepared", "plain")
DEVICES = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True)
class TrainConfig:
    data: str                          # dataset directory (any supported layout)
    model: str = "resnet18"            # name in core.models.REGISTRY
    weights: str = "imagenet"          # imagenet | none | path to a state dict
    classes: int = 10                  # N most frequent classes; 0 = all
    epochs: int = 10
    batch_size: int = 32               # images per step
    lr: float = 1e-3
    optimizer: str = "adam"            # adam | sgd (momentum 0.9)
    momentum: float = 0.9              # SGD only
    weight_decay: float = 0.0
    image_size: int = 224              # pixels, square
    augment: tuple[str, ...] = ()      # subset of AUGMENTATIONS
    freeze: bool = False               # train only the classifier head
    holdout: float = 0.01              # fraction split off first (stratified)
    val: float = 0.2                   # fraction of the rest used for validation
    seed: int = 0
    device: str = "auto"               # auto | cuda | mps | cpu
    pipeline: str = "prepared"         # prepared (decode once, batched GPU augment) | plain (PIL per epoch)
    workers: int = -1                  # DataLoader workers for the plain pipeline; -1 = auto
    compile: bool = False              # torch.compile the model (CUDA only pays off)
    max_images: int = 0                # cap on images used (0 = all), for quick looks
    clean: bool = False                # GLDv2: only the images listed in train_clean.csv
    extra: dict = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        bad = [a for a in self.augment if a not in AUGMENTATIONS]
        if bad:
            raise UserError(f"Unknown augmentation {bad[0]!r}; choose from {', '.join(AUGMENTATIONS)}.")
        checks = [
            (self.optimizer in OPTIMIZERS, f"Unknown optimizer {self.optimizer!r}; choose adam or sgd."),
            (self.pipeline in PIPELINES, f"Unknown pipeline {self.pipeline!r}; choose prepared or plain."),
            (self.device in DEVICES, f"Unknown device {self.device!r}; choose auto, cuda, mps or cpu."),
            (self.epochs >= 1, "--epochs must be at least 1."),
            (self.batch_size >= 1, "--batch-size must be at least 1."),
            (self.lr > 0, "--lr must be positive."),
            (self.classes >= 0, "--classes must be 0 (all) or a positive number."),
            (self.classes != 1, "--classes must be at least 2 to train a classifier."),
            (16 <= self.image_size <= 1024, "--image-size must be between 16 and 1024 pixels."),
            (0 <= self.holdout < 0.5, "--holdout must be a fraction in [0, 0.5)."),
            (0 < self.val < 0.9, "--val must be a fraction in (0, 0.9)."),
        ]
        from core.train.models import REGISTRY
        checks.insert(0, (self.model in REGISTRY, f"Unknown model {self.model!r}; choose one of: {', '.join(REGISTRY)}."))
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "augment" in d:
            d["augment"] = parse_augment(d["augment"])
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def parse_augment(value) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    return tuple(v for v in value if v)
