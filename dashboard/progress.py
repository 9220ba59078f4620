"""A live run's progress line: what it is doing and a steady ETA (no Streamlit here, so it is tested
directly).

The worker reports its step, epoch and the current epoch's rate; on its own that gives a jumpy ETA
(the first steps of an epoch, or of a resumed run, are slow) that ignores validation and the final
evaluation. Here the rate comes from the timestamps of the last steps written to the store (a
sliding window of recent training, warm-up excluded once there is enough of it), and the time left
adds one validation pass per remaining epoch and the final evaluation of train, val and holdout
(forward passes only, about a third of a training step per image).
"""
from __future__ import annotations

import pandas as pd

WINDOW_S = 60.0          # the rate is measured over the last minute of steps
FORWARD_SHARE = 1 / 3    # an evaluation image costs about a third of a training image


def step_rate(steps: pd.DataFrame, window_s: float = WINDOW_S) -> float | None:
    """Training steps per second over the last `window_s` of written steps (None: too few yet)."""
    if steps is None or len(steps) < 3:
        return None
    t = steps["t"].to_numpy()
    recent = t[t >= t[-1] - window_s]
    if len(recent) < 3:
        recent = t[-3:]
    span = recent[-1] - recent[0]
    return (len(recent) - 1) / span if span > 0 else None


def phase_and_eta(progress: dict, steps: pd.DataFrame, cfg: dict) -> tuple[str, float | None]:
    """(what the run is doing, seconds left or None) from its job progress, step rows and config."""
    spe, epochs = progress.get("steps_per_epoch") or 0, progress.get("epochs") or cfg.get("epochs") or 1
    epoch, step = progress.get("epoch") or 1, progress.get("step_in_epoch") or 0
    total = epochs * spe
    done = (epoch - 1) * spe + step
    rate = step_rate(steps)
    if rate is None and progress.get("images_per_s"):
        rate = progress["images_per_s"] / max(cfg.get("batch_size") or 1, 1)
    val, hold = float(cfg.get("val") or 0.2), float(cfg.get("holdout") or 0.0)
    train_images = spe * (cfg.get("batch_size") or 1)
    val_images = train_images * val / max(1 - val, 1e-9)
    eval_images = (train_images + val_images) / max(1 - hold, 1e-9)        # + the holdout
    img_s = (rate or 0) * (cfg.get("batch_size") or 1)
    per_val = val_images * FORWARD_SHARE / img_s if img_s else None
    final = eval_images * FORWARD_SHARE / img_s if img_s else None
    if spe and done >= total:
        return "evaluating train, validation and holdout…", final
    if spe and step >= spe:
        phase = f"validating epoch {epoch}/{epochs}…"
    else:
        phase = f"epoch {epoch}/{epochs} · step {step}/{spe}"
    if not rate:
        return phase, None
    left_epochs = epochs - epoch + 1                                        # validation passes still to come
    return phase, (total - done) / rate + left_epochs * per_val + final
