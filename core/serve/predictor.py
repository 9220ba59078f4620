"""Load a finished run's model once and classify images with it (CLI, Classify page, export).

`load_predictor(run)` takes a run object (core.runs.store.Run or anything with `.id`,
`.checkpoint`, `.config()` and `.class_names()`); callers get it from `store.require(run_id)`.
A run with a calibration (`.read_calibration()`, issue 23) gets its temperature and rejection
threshold applied: `top` gives calibrated probabilities and `answer` says whether to reject.
`calibrate_run(pred, run)` fits that calibration on the run's validation images (core.train.calibration):
at the end of training (core.runs.tasks.fit_job) and on demand (the `calibrate` job, `eval --calibrate`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from core.train.config import TrainConfig
from core.data.readers import open_image, resize_square
from core.train.engine import read_checkpoint
from core.errors import UserError
from core.train import calibration as cal
from core.train import metrics
from core.train.models import LandmarkNet, build_model, class_probs

BATCH = 64                      # images per forward pass while calibrating


@dataclass
class Predictor:
    run_id: str
    model: LandmarkNet
    labels: list
    names: list
    cfg: TrainConfig
    weights_mtime: float = 0.0      # when the checkpoint was written (cached images older than it are stale)
    calibration: dict | None = None  # the run's calibration.json (temperature, threshold), when it has one

    def tensor(self, image) -> torch.Tensor:
        """PIL image (or path / file object) -> (1,3,S,S) float in [0,1], as in training."""
        im = image if hasattr(image, "size") and hasattr(image, "mode") else open_image(image)
        arr = np.asarray(resize_square(im.convert("RGB"), self.cfg.image_size), dtype=np.float32) / 255
        return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()

    @torch.no_grad()
    def cam_grid(self) -> tuple[int, int]:
        """Height and width of the Grad-CAM layer's feature map at this run's image size."""
        if not hasattr(self, "_cam_grid"):
            seen = []
            layer = self.model.submodule(self.model.cam_layer)
            hook = layer.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
            try:
                self.model.eval()(torch.zeros(1, 3, self.cfg.image_size, self.cfg.image_size))
            finally:
                hook.remove()
            self._cam_grid = seen[-1]
        return self._cam_grid

    @torch.no_grad()
    def probs(self, x: torch.Tensor, tta: bool | None = None) -> np.ndarray:
        """Class probabilities of a batch. `tta` (default: the run's config): the mean of each
        image's and its mirror image's probabilities, as the run's evaluation did."""
        return class_probs(self.model, x, self.cfg.tta if tta is None else tta).numpy()

    @torch.no_grad()
    def logits(self, x: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """Logits shaped (views, n, C): the image, and with `tta` its mirror image too."""
        views = [x, x.flip(3)] if (self.cfg.tta if tta is None else tta) else [x]
        return torch.stack([self.model(v).float() for v in views])

    def with_calibration(self, calibration: dict | None) -> "Predictor":
        """The same model with another calibration (a shallow copy: the model is shared)."""
        return replace(self, calibration=calibration or None)

    def calibrated_probs(self, x: torch.Tensor, tta: bool | None = None) -> np.ndarray:
        """probs() through the run's temperature; probs() itself where the run has no calibration."""
        if not self.calibration:
            return self.probs(x, tta)
        return cal.calibrated_probs(self.logits(x, tta), self.calibration["temperature"]).numpy()

    def top(self, x: torch.Tensor, k: int = 5, tta: bool | None = None) -> list[dict]:
        p = self.calibrated_probs(x, tta)[0]
        order = np.argsort(-p)[:k]
        return [{"class": int(i), "label": self.labels[i], "name": self.names[i], "prob": float(p[i])} for i in order]

    def answer(self, x: torch.Tensor, k: int = 5, tta: bool | None = None) -> dict:
        """The top-k and whether to reject the photo: its best (calibrated) probability is below the
        run's threshold. A rejected photo still gets its best guesses."""
        rows = self.top(x, k, tta)
        threshold = (self.calibration or {}).get("threshold")
        return {"top": rows, "calibrated": bool(self.calibration), "threshold": threshold,
                "rejected": threshold is not None and bool(rows) and rows[0]["prob"] < threshold}

    def rejection_text(self) -> str:
        return f"None of the {len(self.labels)} landmarks this model knows"


def load_predictor(run) -> Predictor:
    """The run's model on the CPU in eval mode, with its labels, class names and config."""
    try:
        mtime = run.checkpoint.stat().st_mtime
    except OSError:
        raise UserError(f"Run {run.id} has no checkpoint yet; wait for its first epoch to finish.") from None
    state = read_checkpoint(run.checkpoint)
    cfg = run.config()
    labels = [str(l) for l in state["labels"]]
    model = build_model(cfg.model, len(labels), weights="none", head=cfg.head)
    model.load_state_dict(state["model"])
    model.eval()
    names = run.class_names()
    pred = Predictor(run.id, model, labels, [names.get(l, l) for l in labels], cfg, mtime)
    return pred.with_calibration(current_calibration(run))


def current_calibration(run) -> dict | None:
    """The run's stored calibration, or None: none written, or fitted on an older checkpoint (a
    resumed run must be calibrated again)."""
    read = getattr(run, "read_calibration", None)
    c = read() if read else None
    if not c or "temperature" not in c:
        return None
    try:
        mtime = run.checkpoint.stat().st_mtime
    except OSError:
        return None
    return c if abs(c.get("checkpoint_mtime", mtime) - mtime) < 1e-3 else None


# ------------------------------------------------------------------ fitting a run's calibration

FITTED = ("end of training", "on demand")       # when a calibration was fitted (calibration.json "fitted")


def iter_logits(pred: Predictor, paths, targets, tick=None):
    """(logits (views, b, C) on the CPU, targets) of each batch of readable images; `tick(k)` after
    every k images tried (read or not). Forward passes run where the predictor's model is."""
    device = next(pred.model.parameters()).device
    batch, ys, tried = [], [], 0

    def flush():
        out = pred.logits(torch.cat(batch).to(device)).cpu(), np.asarray(ys, dtype=np.int64)
        batch.clear()
        ys.clear()
        return out
    for p, y in zip(paths, targets):
        tried += 1
        try:
            batch.append(pred.tensor(p))
            ys.append(int(y))
        except (UserError, OSError, ValueError):
            pass                             # a photo gone or damaged since training: left out
        if len(batch) == BATCH:
            yield flush()
            if tick:
                tick(tried)
            tried = 0
    if batch:
        yield flush()
    if tick and tried:
        tick(tried)


def split_logits(pred: Predictor, paths, targets, tick=None) -> tuple[torch.Tensor, np.ndarray]:
    """Logits (views, n, C) of the images that can be read, and their targets."""
    parts = list(iter_logits(pred, paths, targets, tick))
    if not parts:
        return torch.zeros(1, 0, len(pred.labels)), np.zeros(0, np.int64)
    return torch.cat([z for z, _ in parts], 1), np.concatenate([y for _, y in parts])


def _split_report(before: dict, after: dict, y) -> dict:
    return {"n": int(len(y)), "ece_before": before["ece"], "ece_after": after["ece"],
            "gap_before": metrics.gap(y, before["pred"], before["conf"]) if len(y) else None,
            "gap_after": metrics.gap(y, after["pred"], after["conf"]) if len(y) else None,
            "acc_after": float(after["correct"].mean()) if len(y) else None,
            "bins_before": before["bins"], "bins_after": after["bins"], "_after": after}


def _report_of_logits(logits, y, t: float) -> dict:
    return _split_report(cal.summary(cal.calibrated_probs(logits, 1.0).numpy(), y),
                         cal.summary(cal.calibrated_probs(logits, t).numpy(), y), y)


def _chunked_report(pred: Predictor, paths, targets, t: float, tick=None) -> dict:
    """_report_of_logits over a whole split, batch by batch: only each image's top-1 is kept."""
    conf = {1.0: [], t: []}
    top = {1.0: [], t: []}
    ys = []
    for z, y in iter_logits(pred, paths, targets, tick):
        for temp in (1.0, t):
            c, p = cal.calibrated_probs(z, temp).max(1)
            conf[temp].append(c.double().numpy())
            top[temp].append(p.numpy())
        ys.append(y)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    s = {temp: cal.summary_of(np.concatenate(conf[temp]) if ys else np.zeros(0),
                              np.concatenate(top[temp]) if ys else np.zeros(0, np.int64), y) for temp in (1.0, t)}
    return _split_report(s[1.0], s[t], y)


def _top_conf(pred: Predictor, paths, t: float, tick=None) -> np.ndarray:
    """Each readable image's best calibrated confidence (distractors: every answer on them is wrong)."""
    parts = [cal.calibrated_probs(z, t).max(1).values.double().numpy()
             for z, _ in iter_logits(pred, paths, [0] * len(paths), tick)]
    return np.concatenate(parts) if parts else np.zeros(0)


def calibrate_run(pred: Predictor, run, target_precision: float = cal.TARGET_PRECISION,
                  distractors=(), progress=None, fitted: str = "on demand") -> dict:
    """Fit the temperature on the run's validation images (all of them, or a seeded subsample of at
    most cal.MAX_FIT_IMAGES: cal.fit_sample), choose the rejection threshold on them (plus
    `distractors`, photos of no known landmark: every answer on them is wrong), report ECE and GAP
    before/after on those validation images and on the whole holdout (batch by batch: no split's
    logits are held), and store it all with the run (write_calibration). `progress(done, total)`
    counts images; `fitted` says when (FITTED)."""
    import pandas as pd
    f = run.predictions_file("val")
    if not f.exists():
        raise UserError(f"Run {run.id} has no validation predictions yet; it can be calibrated once it has finished.")
    df = pd.read_parquet(f, columns=["path", "target"])
    fit = df.iloc[cal.fit_sample(len(df), len(pred.labels), 2 if pred.cfg.tta else 1, pred.cfg.seed)]
    h = run.predictions_file("holdout")
    dh = pd.read_parquet(h, columns=["path", "target"]) if h.exists() else None
    total = len(fit) + (len(dh) if dh is not None else 0) + len(distractors)
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        if progress:
            progress(done[0], total)
    logits, y = split_logits(pred, fit["path"].astype(str), fit["target"], tick)
    if len(y) == 0:
        raise UserError(f"None of run {run.id}'s {len(fit)} validation images can be read any more, so it cannot "
                        "be calibrated; restore its data set folder and try again.")
    t = cal.fit_temperature(logits, y)
    splits = {"val": _report_of_logits(logits, y, t)}
    del logits
    if dh is not None:
        splits["holdout"] = _chunked_report(pred, dh["path"].astype(str), dh["target"], t, tick)
    conf, correct = splits["val"]["_after"]["conf"], splits["val"]["_after"]["correct"]
    d_conf = _top_conf(pred, list(distractors), t, tick)
    thr = cal.choose_threshold(np.r_[conf, d_conf], np.r_[correct, np.zeros(len(d_conf), bool)], target_precision)
    on = "holdout" if splits.get("holdout", {}).get("n") else "val"
    out = {"temperature": t, "fitted_on": "val", "method": "temperature scaling: NLL minimised by Newton's method on 1/T",
           "fitted": fitted, "fitted_at": time.time(), "fit_images": int(len(y)), "val_images": int(len(df)),
           "ece_before": splits[on]["ece_before"], "ece_after": splits[on]["ece_after"], "ece_on": on,
           **thr, "target_precision": target_precision, "distractors_tune": int(len(d_conf)),
           "checkpoint_mtime": pred.weights_mtime,
           "splits": {s: {k: v for k, v in r.items() if k != "_after"} for s, r in splits.items()}}
    run.write_calibration(out)
    return out
