"""A live run's phase and a steady ETA, computed once, where its progress is written (the store's
sink of its job), and read by every page.

The engine reports its step, epoch and the current epoch's rate; on its own that gives a jumpy ETA
(the first steps of an epoch, or of a resumed run, are slow) that ignores validation and the final
evaluation. Here the rate comes from the timestamps of the last steps written (a sliding window of
recent training), and the time left adds one validation pass per remaining epoch and the final
evaluation of train, val and holdout (forward passes only, about a third of a training step per image).
"""
from __future__ import annotations

WINDOW_S = 60.0          # the rate is measured over the last minute of steps
FORWARD_SHARE = 1 / 3    # an evaluation image costs about a third of a training image


def step_rate(times: list[float], window_s: float = WINDOW_S) -> float | None:
    """Training steps per second over the last `window_s` of step timestamps (None: too few yet)."""
    if times is None or len(times) < 3:
        return None
    recent = [t for t in times if t >= times[-1] - window_s]
    if len(recent) < 3:
        recent = list(times[-3:])
    span = recent[-1] - recent[0]
    return (len(recent) - 1) / span if span > 0 else None


def steps_eta(done: int, total: int, times: list[float]) -> float | None:
    """Seconds left of a task of `total` steps of about equal cost (class model images: one batch
    step each), `done` so far, at the rate of the recent step timestamps (None: too few yet)."""
    rate = step_rate(times)
    return max(total - done, 0) / rate if rate else None


def phase_and_eta(progress: dict, times: list[float], cfg: dict) -> tuple[str, float | None]:
    """(what the run is doing, seconds left or None) from its progress fields, recent step
    timestamps and its config (epochs, batch_size, val, holdout)."""
    spe, epochs = progress.get("steps_per_epoch") or 0, progress.get("epochs") or cfg.get("epochs") or 1
    epoch, step = progress.get("epoch") or 1, progress.get("step_in_epoch") or 0
    batch = cfg.get("batch_size") or 1
    total, done = epochs * spe, (epoch - 1) * spe + step
    rate = step_rate(times)
    if rate is None and progress.get("images_per_s"):
        rate = progress["images_per_s"] / batch
    val, hold = float(cfg.get("val") or 0.2), float(cfg.get("holdout") or 0.0)
    val_images = spe * batch * val / max(1 - val, 1e-9)
    eval_images = (spe * batch + val_images) / max(1 - hold, 1e-9)        # + the holdout
    img_s = (rate or 0) * batch
    per_val = val_images * FORWARD_SHARE / img_s if img_s else None
    final = eval_images * FORWARD_SHARE / img_s if img_s else None
    if spe and done >= total:
        return "evaluating train, validation and holdout…", final
    phase = f"validating epoch {epoch}/{epochs}…" if spe and step >= spe else f"epoch {epoch}/{epochs} · step {step}/{spe}"
    if not rate:
        return phase, None
    return phase, (total - done) / rate + (epochs - epoch + 1) * per_val + final
