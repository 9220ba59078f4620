"""Training recipes: what the optimizer, the learning-rate schedule, the loss, the augmentation,
batch norm and the new head's initialisation do during a run, resolved once from the run's
configuration (`recipe_for`) and said in the run's events (`Recipe.describe`).

finetune  (the default) what transfer learning uses. With pretrained weights (ImageNet or a
          weight file): the new head at --lr and the pretrained layers at --lr x 0.3 (parameter
          groups); the new head starts at zero, so the backbone gets no gradient until the head
          has learnt something; the backbone's batch-norm layers keep their pretrained running
          statistics (eval mode; their scale and shift still learn), which suits batches of a
          few dozen images. With --freeze the head alone trains, at --lr x 5. From scratch
          (--weights none) every layer trains at --lr with batch norm updating. Always: AdamW
          (decoupled weight decay 0.05, none on biases and norm layers; --weight-decay replaces
          0.05), linear warm-up over the first 10% of the steps then cosine decay to 0 (per
          step), label smoothing 0.1, random horizontal flips on the device (--augment, when
          given, replaces the flip).
poster    the seed poster's recipe, exactly as before recipes existed: one parameter group at
          --lr, Adam (or --optimizer sgd) with --weight-decay, a constant learning rate, plain
          cross-entropy, only the --augment list, batch norm in training mode. `reproduce` uses it.

--head arcface (finetune only; core.train.heads) changes three things: the head (GeM pool,
embedding, ArcFace layer) trains at --lr x 3, which is 10x the pretrained layers' --lr x 0.3 (the
new layers start from random, not from zero: a zero ArcFace centre has no direction); no label
smoothing (the margin already keeps the target logit from saturating); the margins grow linearly
from 0 over the first epoch's steps (MarginLoss.ramp).

A configuration saved before recipes existed has no `recipe` key: it loads as `poster`
(config.LEGACY), so resuming or retraining an old run changes nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.train.config import RECIPES  # noqa: F401 - finetune | poster

# finetune's numbers, in one place (the config's help text and the Train page quote them)
FINETUNE = dict(
    head_lr_factor=1.0,        # the new head trains at --lr x this
    body_lr_factor=0.3,        # pretrained layers train at --lr x this
    frozen_lr_factor=5.0,      # --freeze: the head alone trains at --lr x this (a linear layer)
    weight_decay=0.05,         # AdamW, decoupled; 0 on biases and norm layers (--weight-decay replaces it)
    label_smoothing=0.1,
    warmup=0.1,                # fraction of all steps with a linear warm-up (at least one step)
    augment=("hflip",),        # when --augment is empty
    freeze_bn=True,            # pretrained backbone: BN layers in eval mode (running statistics kept)
    zero_head=True,            # a new head on pretrained layers starts at zero
)
ARCFACE = dict(
    head_lr_factor=3.0,        # the margin head trains at --lr x this (10x the pretrained layers' 0.3)
    label_smoothing=0.0,
    margin_warmup_epochs=1,    # margins grow linearly from 0 over this many epochs' steps
)


def pretrained(cfg) -> bool:
    """ImageNet weights or a weight file (a run's checkpoint counts)."""
    return str(cfg.weights or "none") not in ("none", "")


@dataclass(frozen=True)
class Recipe:
    name: str                  # finetune | poster
    optimizer: str             # adam | adamw | sgd
    head_lr: float             # the classifier head
    body_lr: float             # every other layer (== head_lr unless pretrained under finetune)
    weight_decay: float
    label_smoothing: float
    schedule: str              # constant (stepped per epoch) | warmup_cosine (stepped per step)
    warmup: float              # fraction of all steps
    augment: tuple             # names in pipeline.AUGMENT, applied in this order
    freeze_bn: bool            # backbone BN layers kept in eval mode (running statistics frozen)
    zero_head: bool            # a new head's weights and bias start at zero
    head: str = "softmax"      # softmax | arcface (trained through heads.MarginLoss)
    margin_warmup: int = 0     # epochs over which the ArcFace margins grow from 0

    @property
    def per_step(self) -> bool:
        return self.schedule != "constant"

    def describe(self) -> str:
        groups = (f"lr {self.head_lr:g}" if self.head_lr == self.body_lr
                  else f"head lr {self.head_lr:g}, pretrained layers lr {self.body_lr:g}")
        sched = ("constant learning rate" if self.schedule == "constant"
                 else f"linear warm-up over {self.warmup:.0%} of the steps then cosine decay to 0 (per step)")
        return (f"recipe {self.name}: {self.optimizer} ({groups}, weight decay {self.weight_decay:g}), {sched}, "
                f"label smoothing {self.label_smoothing:g}, augmentation {', '.join(self.augment) or 'none'}, "
                f"batch-norm statistics {'frozen in the backbone' if self.freeze_bn else 'updated'}"
                + (", new head initialised to zero" if self.zero_head else "")
                + (", ArcFace head (class-size margins growing from 0 over the first "
                   + ("epoch" if self.margin_warmup == 1 else f"{self.margin_warmup} epochs") + ")"
                   if self.head == "arcface" else ""))


def recipe_for(cfg) -> Recipe:
    if cfg.recipe == "poster":
        return Recipe("poster", cfg.optimizer, cfg.lr, cfg.lr, cfg.weight_decay, 0.0, "constant", 0.0,
                      tuple(cfg.augment), False, False)
    f, pre = FINETUNE, pretrained(cfg)
    arc = getattr(cfg, "head", "softmax") == "arcface"
    head = cfg.lr * (f["frozen_lr_factor"] if cfg.freeze else f["head_lr_factor"]) if pre else cfg.lr
    if arc and not cfg.freeze:
        head = cfg.lr * ARCFACE["head_lr_factor"]
    body = cfg.lr * f["body_lr_factor"] if pre else cfg.lr
    return Recipe("finetune", "sgd" if cfg.optimizer == "sgd" else "adamw", head, body,
                  cfg.weight_decay or f["weight_decay"], ARCFACE["label_smoothing"] if arc else f["label_smoothing"],
                  "warmup_cosine", f["warmup"], tuple(cfg.augment) or tuple(f["augment"]),
                  pre and bool(f["freeze_bn"]), pre and bool(f["zero_head"]) and not arc,
                  "arcface" if arc else "softmax", ARCFACE["margin_warmup_epochs"] if arc else 0)


def param_groups(model, r: Recipe) -> list[dict]:
    """poster: every trainable parameter in one group (as before). finetune: head/body x decayed/
    not decayed (biases and norm layers, every 1-d tensor, are not decayed); the head's decayed
    group comes first, so param_groups[0]['lr'] is the head's learning rate."""
    if r.name == "poster":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": r.head_lr,
                 "weight_decay": r.weight_decay}]
    head = getattr(model, "head", None)
    named = model.net.named_parameters() if head else model.named_parameters()
    in_head = getattr(model, "in_head", lambda n: n.startswith(head + "."))
    buckets: dict[tuple, list] = {}
    for name, p in named:
        if p.requires_grad:
            body = bool(head) and not in_head(name)
            buckets.setdefault((body, p.ndim <= 1), []).append(p)
    return [{"params": ps, "lr": r.body_lr if body else r.head_lr, "weight_decay": 0.0 if flat else r.weight_decay,
             "name": ("body" if body else "head") + ("_no_decay" if flat else "")}
            for (body, flat), ps in sorted(buckets.items())]


class WarmupCosine:
    """Multiplier of each group's learning rate after `s` optimizer steps: a linear warm-up to 1
    over the first `warm` steps, then cosine decay to 0 at `total`. An object, not a lambda, so
    that the scheduler's state in a checkpoint holds it."""

    def __init__(self, total: int, warmup: float):
        self.total = max(int(total), 1)
        self.warm = min(max(1, round(warmup * self.total)), self.total)

    def __call__(self, s: int) -> float:
        if s < self.warm:
            return (s + 1) / self.warm
        t = (s - self.warm + 1) / (self.total - self.warm + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def _constant(_):
    return 1.0


def make_optimizer(cfg, model, steps_per_epoch: int, fused: bool = False):
    """(optimizer, scheduler, recipe). Under poster the scheduler is constant and steps once per
    epoch (as before); under finetune it steps once per optimizer step (recipe.per_step)."""
    r = recipe_for(cfg)
    groups = param_groups(model, r)
    kw = {"fused": True} if fused else {}
    if r.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=r.head_lr, momentum=cfg.momentum, weight_decay=r.weight_decay, **kw)
    elif r.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=r.head_lr, weight_decay=r.weight_decay, **kw)
    else:
        opt = torch.optim.Adam(groups, lr=r.head_lr, weight_decay=r.weight_decay, **kw)
    if r.per_step:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(steps_per_epoch * cfg.epochs, r.warmup))
    else:  # constant learning rate, as in the seed; kept as a scheduler so checkpoints carry its state
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _constant)
    return opt, sched, r


def prepare_model(model, r: Recipe) -> None:
    """What the recipe does to a freshly built model before training: the backbone's batch-norm
    statistics frozen (LandmarkNet.train keeps those layers in eval mode) and a new head set to zero.
    Resuming loads the checkpoint after this, so only the BN setting matters there."""
    model.freeze_bn = bool(r.freeze_bn)
    if r.zero_head and getattr(model, "new_head", False):
        with torch.no_grad():
            for p in model.submodule(model.head).parameters():
                p.zero_()
