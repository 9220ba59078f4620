"""Training and evaluation: a few plain functions with explicit arguments
(torchvision references/classification/train.py is the model): `train_one_epoch`, `evaluate`,
`fit`. Progress leaves through a sink; the engine never prints.

On several processes (torchrun, core.train.distributed) every process runs `fit`: each trains
the DistributedDataParallel-wrapped model on its shard of every epoch, evaluates its shard of
each split, and rank 0 gathers the predictions in the split's order, writes the run (sink, split,
checkpoints, predictions) and decides when to stop.
"""
from __future__ import annotations

import os
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from torch.nn.parallel import DistributedDataParallel

from core.train import distributed, metrics
from core.train.config import TrainConfig
from core.data.readers import load_index
from core.errors import UserError
from core.files import atomic_output
from core.train.models import build_model, class_probs
from core.train.pipeline import (PreparedBatches, augment_batch, class_counts, class_weights, decode_on_device,
                                 plain_loader, to_float)
from core.train import recipes, speed
from core.data.prepared import SCAN_SIZE, choose_store, prepare  # SCAN_SIZE: the plain pipeline checks every file once at it
from core.train.sinks import Cancelled, NullSink
from core.data.splits import base_places, choose, load_manifest, make_manifest, save_manifest


def select_device(pref: str = "auto") -> torch.device:
    if pref in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if pref in ("auto", "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    if pref not in ("auto", "cpu"):
        raise UserError(f"Device {pref!r} is not available on this machine; use --device auto or cpu.")
    return torch.device("cpu")


@dataclass
class Data:
    manifest: pd.DataFrame
    labels: list            # class labels in target order
    names: list             # readable class names in target order
    store: np.ndarray | None    # prepared uint8 store, or a JpegStore (None for the plain pipeline)
    rows: np.ndarray | None     # row in `store` of each manifest entry
    skipped: list           # (path, reason) unreadable files left out
    synthetic: bool


def load_data(cfg: TrainConfig, folder, sink=NullSink(), ddp=None, device=None) -> Data:
    """Top-N classes, scan (decode once), drop unreadable files, split; reuse the manifest on resume.
    `folder`: the run's files (core.runs.store.RunFolder: split_file, classes_file...). On several
    processes (`ddp`) every one scans (the cache's lock makes them take turns on a machine: the
    first decodes, the others find it done) and rank 0 alone makes or reads the split and sends it
    to the others: a resumed run's split lives in the run folder, which only rank 0 may see."""
    ddp = ddp or distributed.Distributed()
    index = load_index(cfg.data, clean=cfg.clean)
    chosen = choose(index.samples, cfg.classes, cfg.max_images, cfg.data_seed)
    size = cfg.image_size if cfg.pipeline == "prepared" else SCAN_SIZE
    kind, why = choose_store(cfg.store, len(chosen), size) if cfg.pipeline == "prepared" else ("raw", "")
    sink.emit("info", {"message": f"preparing {len(chosen)} images at {size}px (decoded once, cached"
                                  f"{'; ' + why if why else ''})"})
    prep = prepare(chosen["path"].tolist(), size, key=str(index.root), workers=0, store=kind,
                   device=device if device is not None and device.type == "cuda" else None,   # nvJPEG
                   progress=lambda d, t: sink.emit("prepare", {"message": f"prepared {d}/{t}"}) if d % 2000 == 0 else None)
    rows = pd.Series(prep.rows, index=chosen["path"].to_numpy())
    good = chosen[prep.ok].reset_index(drop=True)
    split = None
    if ddp.is_main and folder.split_file.exists():
        split = _resumed_manifest(folder, set(good["path"]), sink)
    elif ddp.is_main:
        keep = None     # a data set version keeps its base's holdout unless asked otherwise (issue 22)
        if index.base is not None and not cfg.new_holdout:
            keep = base_places(index.base.samples, cfg.classes, cfg.holdout, cfg.val, cfg.data_seed, cfg.max_images,
                               unreadable=chosen["path"][~np.asarray(prep.ok)])
        split = make_manifest(good, 0, cfg.holdout, cfg.val, cfg.data_seed, keep=keep)
        save_manifest(split[0], folder.split_file)
        with atomic_output(folder.classes_file) as tmp:
            pd.DataFrame({"label": split[1], "name": [index.name(l) for l in split[1]]}).to_json(tmp)
    manifest, labels = ddp.broadcast(split)
    if not ddp.is_main:
        lost = ~manifest["path"].isin(set(good["path"]))
        if lost.any():
            raise UserError(f"Process {ddp.rank} cannot read {int(lost.sum())} image(s) of the split that process 0 "
                            f"reads (e.g. {manifest['path'][lost].iloc[0]}); every machine needs the same data at "
                            "the same path.")
    if len(labels) < 2:
        raise UserError("Training needs at least two classes with readable images.")
    store_rows = rows.loc[manifest["path"]].to_numpy() if cfg.pipeline == "prepared" else None
    if prep.reasons:
        sink.emit("info", {"message": f"skipped {len(prep.reasons)} unreadable file(s)"})
    names = [index.name(l) for l in labels]
    return Data(manifest, labels, names, prep.store if store_rows is not None else None, store_rows,
                prep.reasons, index.synthetic)


def _resumed_manifest(folder, readable: set, sink) -> tuple[pd.DataFrame, list]:
    """The run's own split, less the files that vanished or became unreadable since: their
    store rows would be blank images, so they leave training and evaluation (and are counted)."""
    manifest = load_manifest(folder.split_file)
    labels = list(pd.read_json(folder.classes_file)["label"].astype(str))
    keep = manifest["path"].isin(readable)
    if not keep.all():
        gone = manifest[~keep]
        by_split = ", ".join(f"{n} {s}" for s, n in gone["split"].value_counts().items())
        sink.emit("dropped", {"message": f"{len(gone)} image(s) of the split are missing or unreadable now "
                                         f"and were left out ({by_split})"})
        manifest = manifest[keep].reset_index(drop=True)
    return manifest, labels


def _loader(cfg, data: Data, split: str, train: bool, device, augment=None, ddp=None):
    """`augment`: the training loader's augmentations (the recipe's); default cfg.augment.
    `ddp`: this process's shard of the split (core.train.distributed.shard)."""
    rank, world = (ddp.rank, ddp.world_size) if ddp is not None else (0, 1)
    m = data.manifest
    sel = (m["split"] == split).to_numpy()
    pin = device.type == "cuda"
    balanced = train and cfg.balance == "sampler"
    if cfg.pipeline == "prepared":
        return PreparedBatches(_LazyRows(data.store, data.rows[sel]), m["target"].to_numpy()[sel],
                               cfg.batch_size, shuffle=train, seed=cfg.seed, pin=pin, balanced=balanced,
                               rank=rank, world=world, device_decode=decode_on_device(data.store, device))
    return plain_loader(m["path"][sel].tolist(), m["target"][sel].tolist(), cfg.image_size,
                        (cfg.augment if augment is None else augment) if train else (), cfg.batch_size, train,
                        cfg.workers, pin, cfg.seed, balanced=balanced, rank=rank, world=world)


class _LazyRows:
    """A view of selected rows of the store, without copying the data set into memory."""

    def __init__(self, images, rows):
        self.images, self.rows = images, rows

    def __getitem__(self, idx):
        return self.images[self.rows[idx]]

    def encoded(self, idx):
        """The compressed store's JPEG bytes of the selected rows (decoded on the device)."""
        return self.images.encoded(self.rows[idx])


def _batches(loader, epoch: int):
    if isinstance(loader, PreparedBatches):
        yield from loader.epoch(epoch)
    else:
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)          # the class-balanced sampler draws per (seed, epoch)
        for x, y in loader:
            yield x, y


def _switch(value: str, device) -> bool:
    """'auto' is on where the device gains from it (CUDA and the CPU), 'on'/'off' as said."""
    return value == "on" or (value == "auto" and device.type in ("cuda", "cpu"))


def channels_last(cfg, device) -> bool:
    """NHWC memory format: faster convolutions with cuDNN and with oneDNN on the CPU."""
    return _switch(cfg.channels_last, device)


def bf16(cfg, device) -> bool:
    """bf16 autocast: same accuracy as fp32 for these CNNs, 2-3x faster on tensor cores.
    'auto' uses it on CUDA only (on a CPU without AMX bf16 is slower than fp32)."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def _compile_key(cfg) -> str:
    return f"{cfg.image_size}/{cfg.batch_size}"


def speed_settings(cfg, device, compiled: bool = False) -> str:
    """What the speed fields resolved to on this device, for the run's events."""
    return (f"precision {'bf16' if bf16(cfg, device) else 'fp32'}, channels_last "
            f"{'on' if channels_last(cfg, device) else 'off'}, fused optimizer "
            f"{'on' if _switch(cfg.fused, device) else 'off'}, compile "
            f"{'on' if compiled else 'off'}")


def _inputs(cfg, x, device, train: bool, gen, augment=None):
    """A batch on the device as the model takes it; a prepared training batch is augmented here
    (`augment`: the recipe's list, default cfg.augment; the plain loader augmented it already)."""
    cl = channels_last(cfg, device)
    if cfg.pipeline == "prepared":
        x = to_float(x, device, cl)
        return augment_batch(x, cfg.augment if augment is None else augment, gen) if train else x
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if cl else x


def _autocast(cfg, device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16(cfg, device) else nullcontext()


def train_one_epoch(model, loader, optimizer, cfg, device, epoch: int, step0: int, sink,
                    class_weight: torch.Tensor | None = None, recipe: recipes.Recipe | None = None,
                    scheduler=None, ddp=None, criterion=None) -> dict:
    """One pass over `loader`. `class_weight`: per-class cross-entropy weights (--balance weighted).
    `criterion(logits, targets, step)`: the loss of a margin head (core.train.heads.MarginLoss, which
    holds its own class weights), else cross-entropy.
    `recipe` (default: the config's): augmentation and label smoothing; `scheduler` is stepped
    after every optimizer step when the recipe's schedule is per step. On several processes
    (`ddp`) rank 0's sink decides to stop, every STOP_EVERY steps, for all of them at the same
    step; the epoch's loss and accuracy are over every process's images."""
    recipe = recipe or recipes.recipe_for(cfg)
    ddp = ddp or distributed.Distributed()
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 7919 * ddp.rank)   # per process: own crops
    tally = _Tally(cfg, epoch, step0, len(loader), optimizer, ddp.world_size)
    for i, (x, y) in enumerate(_batches(loader, epoch), start=1):
        if ddp.enabled:
            stop = (i - 1) % distributed.STOP_EVERY == 0 and ddp.agree_stop(sink.should_stop())
        else:
            stop = sink.should_stop()
        if stop:
            raise Cancelled()
        x, y = _inputs(cfg, x, device, True, gen, recipe.augment), y.to(device, non_blocking=True)
        with _autocast(cfg, device):
            logits = model(x)
            if criterion is None:
                loss = F.cross_entropy(logits, y, weight=class_weight, label_smoothing=recipe.label_smoothing)
            else:
                loss = criterion(logits, y, step0 + i - 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None and recipe.per_step:
            scheduler.step()
        tally.add(i, loss.detach(), (logits.argmax(1) == y).sum(), len(y))
        if tally.due():
            tally.flush(sink)
    tally.flush(sink)
    return tally.result(ddp)


class _Tally:
    """Per-step loss/accuracy kept on the device and read back in bulk about 4 times a
    second: a `.item()` per step would stall the GPU queue at every step. Step rows are this
    process's batches; images/s counts every process's (`world` of them)."""

    def __init__(self, cfg, epoch, step0, steps, optimizer, world: int = 1):
        self.cfg, self.epoch, self.step0, self.steps, self.opt = cfg, epoch, step0, steps, optimizer
        self.world = world
        self.pending: list = []
        self.n = self.correct = 0
        self.loss_sum = 0.0
        self.t0 = self.last = time.time()

    def add(self, i, loss, correct, b):
        self.pending.append((i, loss, correct, b))

    def due(self) -> bool:
        return time.time() - self.last > 0.25

    def flush(self, sink) -> None:
        if not self.pending:
            return
        losses = torch.stack([p[1] for p in self.pending]).float().cpu().tolist()
        corrects = torch.stack([p[2] for p in self.pending]).cpu().tolist()
        for (i, _, _, b), loss, c in zip(self.pending, losses, corrects):
            self.n, self.correct, self.loss_sum = self.n + b, self.correct + c, self.loss_sum + loss * b
            rate = self.n / max(time.time() - self.t0, 1e-9)     # the ETA is the run store's (core.runs.eta)
            progress = {"epoch": self.epoch, "epochs": self.cfg.epochs, "step_in_epoch": i,
                        "steps_per_epoch": self.steps, "images_per_s": rate * self.world}
            sink.emit("step", {"step": self.step0 + i, "epoch": self.epoch, "loss": loss, "acc": c / b,
                               "lr": self.opt.param_groups[0]["lr"], "progress": progress})
        self.pending, self.last = [], time.time()

    def result(self, ddp=None) -> dict:
        secs = time.time() - self.t0
        loss_sum, correct, n = self.loss_sum, self.correct, self.n
        if ddp is not None and ddp.enabled:           # every process's images (padding repeats a few)
            loss_sum, correct, n = ddp.sum([loss_sum, correct, n])
        return {"train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1), "seconds": secs,
                "images_per_s": n / max(secs, 1e-9), "steps": self.steps}


@torch.no_grad()
def predict_batches(model, loader, cfg, device, tta: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(targets, class probabilities). `tta` (default cfg.tta): the mean of the probabilities of
    each image and its horizontal mirror."""
    tta = cfg.tta if tta is None else tta
    model.eval()
    ys, ps = [], []
    for x, y in _batches(loader, 0):
        x = _inputs(cfg, x, device, False, None)
        with _autocast(cfg, device):
            p = class_probs(model, x, tta)
        ps.append(p.cpu().numpy())
        ys.append(y.numpy())
    if not ys:
        return np.zeros(0, np.int64), np.zeros((0, 0))
    return np.concatenate(ys), np.concatenate(ps)


@torch.no_grad()
def predict_outputs(model, loader, cfg, device, tta: bool | None = None) -> metrics.Outputs:
    """Per-image outputs reduced batch by batch to what the metrics keep (metrics.Outputs): memory
    grows with the images, not images × classes (issue 20: a 60,000-image split at 81,313 classes
    would hold 19 GB of probabilities)."""
    tta = cfg.tta if tta is None else tta
    model.eval()
    parts = []
    for x, y in _batches(loader, 0):
        x = _inputs(cfg, x, device, False, None)
        with _autocast(cfg, device):
            p = class_probs(model, x, tta).float()
        y_dev = y.to(p.device)
        conf, pred = p.max(dim=1)
        top = p.topk(min(metrics.TOP_K, p.shape[1]), dim=1).indices
        p_true = p.gather(1, y_dev[:, None])[:, 0]
        parts.append(metrics.Outputs(y.numpy().astype(np.int64), pred.cpu().numpy().astype(np.int64),
                                     conf.cpu().double().numpy(), top.cpu().numpy().astype(np.int64),
                                     p_true.cpu().double().numpy()))
    return metrics.Outputs.concat(parts)


def evaluate(model, loader, cfg, device, n_classes: int, tta: bool | None = None,
             ddp=None) -> tuple[dict, metrics.Outputs | None, metrics.Confusion | None]:
    """Metrics, per-image outputs, confusion cells. On several processes (`ddp`, `loader` a shard)
    rank 0 gets every process's rows in the split's order, as one process would; the others get
    ({}, None, None)."""
    out = predict_outputs(model, loader, cfg, device, tta)
    if ddp is not None and ddp.enabled:
        out = out.map(ddp.gather_rows)
        if out is None:
            return {}, None, None
    if len(out) == 0:
        return {"n": 0, "acc": None, "top5": None, "gap": None, "balanced_acc": None, "macro_f1": None,
                "loss": None}, out, None
    m, confusion = metrics.evaluation(out, n_classes)
    return m, out, confusion


# ------------------------------------------------------------------ checkpoints

def save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, cfg: TrainConfig, labels,
                    elapsed: float = 0.0) -> None:
    """Everything needed to continue exactly: written to a temp file, then renamed (atomic).
    `elapsed`: the run's seconds so far, over all its segments (a resume goes on counting)."""
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": epoch, "labels": list(labels), "elapsed": float(elapsed),
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _numpy_state():
    """numpy's RNG state with its key array as a tensor: loadable with weights_only=True."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))


def read_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True: a checkpoint can hold tensors and plain values, never code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"The checkpoint {path} cannot be read safely ({type(e).__name__}); it is damaged or "
                        "was not written by this version of the workbench.") from None


def load_checkpoint(path: Path, model, optimizer=None, scheduler=None) -> tuple[int, float]:
    """Restore model, optimizer, scheduler and RNG; returns (epoch, elapsed seconds so far)."""
    return apply_checkpoint(read_checkpoint(path), model, optimizer, scheduler)


def apply_checkpoint(state: dict, model, optimizer=None, scheduler=None) -> tuple[int, float]:
    """load_checkpoint from a checkpoint's content (read by rank 0, sent to every process)."""
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["epoch"]), float(state.get("elapsed", 0.0))


def make_optimizer(cfg: TrainConfig, model, steps_per_epoch: int = 1):
    """(optimizer, scheduler) as the run's recipe says (core.train.recipes); the scheduler steps
    per epoch under poster (a constant rate) and per step under finetune."""
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel updates every parameter (CPU and CUDA); same update as the default
    # for-each loop, measured 1.1x faster per ResNet-18 training step on 2 CPU cores
    fused = bool(params) and params[0].device.type in ("cpu", "cuda") and _switch(cfg.fused, params[0].device)
    opt, sched, _ = recipes.make_optimizer(cfg, model, steps_per_epoch, fused)
    return opt, sched


# ------------------------------------------------------------------ fit

def fit(cfg: TrainConfig, folder, sink=NullSink(), resume: bool = False, ddp=None) -> dict:
    """Train (or continue) one run whose files are `folder` (a RunFolder), then evaluate
    train/val/holdout. Under torchrun every process calls it (`ddp`, default: found from
    torchrun's variables, core.train.distributed.setup); rank 0's `cfg`, `folder`, `sink` and
    `resume` count, the others may pass None and NullSink()."""
    ddp = ddp or distributed.setup()
    if ddp.enabled:
        cfg, resume = ddp.broadcast((cfg, resume))
        if not ddp.is_main:
            folder, sink = None, NullSink()
    cfg.validate()
    device = ddp.place(select_device(cfg.device))
    with deterministic(cfg.deterministic, device):
        return _fit(cfg, folder, sink, resume, ddp, device)


@contextmanager
def deterministic(on: bool, device):
    """--deterministic: torch's deterministic algorithms (an op without a deterministic version
    warns, in the run's log, rather than failing the run), cuDNN's autotuner off and its
    deterministic kernels on, and, on CUDA, the cuBLAS workspace setting its reproducible
    GEMMs need (https://pytorch.org/docs/stable/notes/randomness.html). The data order,
    augmentation and DataLoader workers are seeded from the run's seed in any case (the
    plain loader's seeded generator gives every worker base_seed + worker_id for random,
    numpy and torch). The previous settings come back afterwards: a test or a CLI seed group
    runs several fits in one process."""
    if not on:
        yield
        return
    was = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = was[2], was[3]


def _fit(cfg: TrainConfig, folder, sink, resume: bool, ddp, device) -> dict:
    """fit() once the configuration and the device are settled."""
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    data = load_data(cfg, folder, sink, ddp, device)
    model = build_model(cfg.model, len(data.labels), cfg.weights, cfg.freeze, cfg.head).to(device)
    if channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    recipe = recipes.recipe_for(cfg)
    recipes.prepare_model(model, recipe)       # a resumed run's checkpoint then overwrites the weights
    train = _loader(cfg, data, "train", True, device, recipe.augment, ddp)
    val = _loader(cfg, data, "val", False, device, ddp=ddp)
    if len(train) == 0:
        raise UserError("The training split is empty; use more images or smaller --holdout/--val fractions.")
    optimizer, scheduler = make_optimizer(cfg, model, len(train))
    start, before = _restore(folder, resume, model, optimizer, scheduler, ddp)
    if ddp.enabled and not ddp.is_main:
        torch.manual_seed(cfg.seed + 1000 * ddp.rank + start)   # same weights everywhere, own dropout masks
    t_start -= before                      # duration counts the earlier segments of a resumed run too
    if resume:
        sink.emit("resume", {"epoch": start})
    compiled, why = speed.compile_choice(cfg.compile, device, (cfg.epochs - start) * len(train), cfg.model,
                                         warm=speed.warm_cache(cfg.model, _compile_key(cfg)))
    net = torch.compile(model, **speed.COMPILE_KWARGS) if compiled else model
    trained = net                          # `model` (unwrapped) is what checkpoints and evaluations use
    if ddp.enabled:
        trained = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    sink.emit("speed", {"message": f"{speed_settings(cfg, device, compiled)}; {why}"})
    if ddp.enabled:
        sink.emit("info", {"message": f"{ddp.describe(device)}: each process takes --batch-size "
                                             f"{cfg.batch_size} images per step, so one optimizer step averages the "
                                             f"gradients of {ddp.world_size * cfg.batch_size} images; the learning "
                                             f"rate is --lr as given (not scaled)"})
    sink.emit("recipe", {"message": recipe.describe() + ("; evaluation averages each image with its mirror image"
                                                          if cfg.tta else "")})
    if cfg.deterministic:
        sink.emit("info", {"message": "deterministic: torch's deterministic algorithms, cuDNN autotuning off"})
    weight = balance(cfg, data, device, sink)
    criterion = margin_loss(model, recipe, data, device, weight, len(train), sink)
    sink.emit("info", {"message": f"device {device}, {len(data.labels)} classes, "
                                  f"{(data.manifest['split'] == 'train').sum()} training images, starting at epoch {start + 1}"})
    rates = []
    for epoch in range(start + 1, cfg.epochs + 1):
        cpu0 = _cpu_seconds()
        row = train_one_epoch(trained, train, optimizer, cfg, device, epoch, (epoch - 1) * len(train), sink,
                              class_weight=weight, recipe=recipe, scheduler=scheduler, ddp=ddp, criterion=criterion)
        if not recipe.per_step:
            scheduler.step()
        ddp.sync_buffers(model)
        v, _, _ = evaluate(model, val, cfg, device, len(data.labels), ddp=ddp)   # eager: no eval-mode graphs
        rates.append(row["images_per_s"])
        sink.emit("epoch", {"epoch": epoch, **row, "val_loss": v.get("loss"), "val_acc": v.get("acc"),
                            "lr": optimizer.param_groups[0]["lr"], **resource_use(device, cpu0)})
        if ddp.is_main:
            save_checkpoint(folder.checkpoint, model, optimizer, scheduler, epoch, cfg, data.labels,
                            time.time() - t_start)
    if compiled:
        speed.note_compiled(cfg.model, _compile_key(cfg))   # Inductor's caches make the next compile quick
    summary = final_evaluation(model, cfg, data, device, folder, sink, ddp)
    summary.update(epochs_completed=cfg.epochs, images_per_s=float(np.mean(rates)) if rates else None,
                   seconds=time.time() - t_start, device=str(device), skipped=len(data.skipped))
    if ddp.enabled:
        summary["processes"] = ddp.world_size
    return summary


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system              # this process, every thread of it (not its loader workers)


def resource_use(device, cpu0: float) -> dict:
    """What an epoch used (the epoch rows' RESOURCE_KEYS): the process's CPU seconds since `cpu0`,
    its peak resident memory and, on CUDA, PyTorch's peak allocated memory so far, in MiB."""
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # KiB on Linux, bytes on macOS
    rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"cpu_s": _cpu_seconds() - cpu0, "rss_mb": rss_mb, "gpu_mb": gpu_mb}


def _restore(folder, resume: bool, model, optimizer, scheduler, ddp) -> tuple[int, float]:
    """(epoch, seconds so far) of the run's checkpoint, loaded into model, optimizer and scheduler;
    (0, 0.0) for a new run. Rank 0 reads it and sends it to the others (the runs folder may be on
    its machine only), so every process starts from the same state."""
    state = None
    if ddp.is_main:
        folder.checkpoint.parent.mkdir(exist_ok=True)
        if resume and folder.checkpoint.exists():
            state = read_checkpoint(folder.checkpoint)
    state = ddp.broadcast(state)
    return apply_checkpoint(state, model, optimizer, scheduler) if state is not None else (0, 0.0)


def balance(cfg, data: Data, device, sink) -> torch.Tensor | None:
    """What --balance does, said in the run's events; returns the loss's class weights for
    'weighted' (the sampler itself lives in the training loader, see _loader)."""
    if cfg.balance == "none":
        return None
    m = data.manifest
    targets = m.loc[m["split"] == "train", "target"].to_numpy()
    counts = class_counts(targets, len(data.labels))
    present = counts > 0
    lo, hi = int(counts[present].min()), int(counts[present].max())
    if cfg.balance == "weighted":
        w = class_weights(targets, len(data.labels))
        sink.emit("balance", {"message": f"balance weighted: cross-entropy with class weights ∝ 1/frequency over "
                                         f"{len(targets)} training images ({int(present.sum())} classes, {lo}–{hi} "
                                         f"images each), weights {w[present].min():.3g}–{w[present].max():.3g} "
                                         f"(mean 1 over the images)"})
        return torch.as_tensor(w, dtype=torch.float32, device=device)
    sink.emit("balance", {"message": f"balance sampler: each epoch draws {len(targets)} training images with "
                                     f"replacement, probability ∝ 1/class frequency ({int(present.sum())} classes, "
                                     f"{lo}–{hi} images each: about {len(targets) / max(int(present.sum()), 1):.0f} "
                                     f"draws per class), seeded by the run's seed and the epoch"})
    return None


def margin_loss(model, recipe, data: Data, device, weight, steps_per_epoch: int, sink):
    """The ArcFace head's loss (None for softmax): per-class margins from the training split's class
    counts, growing from 0 over the recipe's warm-up epochs; said in the run's events."""
    if recipe.head != "arcface":
        return None
    from core.train.heads import MARGIN_A, MARGIN_B, MarginLoss, margins
    m = data.manifest
    counts = class_counts(m.loc[m["split"] == "train", "target"].to_numpy(), len(data.labels))
    mc = margins(counts)
    sink.emit("info", {"message": f"ArcFace margins {mc.min():.3f}–{mc.max():.3f} (m = {MARGIN_A:g} · n^-1/4 + {MARGIN_B:g}, n: "
                                  f"{int(counts.min())}–{int(counts.max())} training images per class), reached "
                                  f"after {recipe.margin_warmup * steps_per_epoch} steps"})
    return MarginLoss(mc, model.submodule(model.head).s, recipe.margin_warmup * steps_per_epoch, weight,
                      recipe.label_smoothing).to(device)


def final_evaluation(model, cfg, data: Data, device, folder, sink, ddp=None) -> dict:
    """The seed's table (train/val/holdout accuracy) plus top-5, GAP, per-class figures; the
    confusion cells of every split and the per-image predictions of val and holdout go to parquet
    files beside (written before the eval row, so a reader of the row finds them).
    On several processes each evaluates its shard and rank 0 writes what one process would have."""
    ddp = ddp or distributed.Distributed()
    ddp.sync_buffers(model)
    summary = {}
    for split in ("train", "val", "holdout"):
        m, out, confusion = evaluate(model, _loader(cfg, data, split, False, device, ddp=ddp), cfg, device,
                                     len(data.labels), ddp=ddp)
        if not ddp.is_main:
            continue
        if confusion is not None:
            folder.write_confusion(split, confusion)
        if split != "train" and len(out):
            save_predictions(folder.predictions_file(split), data.manifest, split, out)
        m["labels"], m["names"] = list(data.labels), list(data.names)
        sink.emit("eval", {"split": split, "metrics": m})
        for k in ("acc", "top5", "gap", "balanced_acc", "macro_f1"):
            summary[f"{split}_{k}"] = m.get(k)
    return summary


def save_predictions(path: Path, manifest, split: str, out: metrics.Outputs) -> None:
    """Per-image predictions (for the mistakes gallery and audits)."""
    m = manifest[manifest["split"] == split].reset_index(drop=True)
    df = pd.DataFrame({"path": m["path"], "target": out.target, "pred": out.pred, "conf": out.conf,
                       "top5": [list(map(int, t)) for t in out.top]})
    with atomic_output(path) as tmp:
        df.to_parquet(tmp)
