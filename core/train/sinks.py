"""Where progress and metrics go. The engine emits flat rows to one sink; the worker stores
them (core.runs.tasks.StoreSink), the CLI also draws a progress bar on stderr. (Lightning's loggers are the model.)"""
from __future__ import annotations

import sys

from core.errors import Cancelled  # noqa: F401 - raised by the engine when a sink asks it to stop


class NullSink:
    def emit(self, kind: str, row: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class TqdmSink:
    """Draws a progress bar and one line per epoch on stderr, and forwards to another sink."""

    def __init__(self, inner=None, file=None):
        self.inner, self.file, self.bar = inner or NullSink(), file or sys.stderr, None   # stderr as it is now

    def emit(self, kind: str, row: dict) -> None:
        from tqdm import tqdm
        self.inner.emit(kind, row)
        if kind == "step":
            p = row.get("progress") or {}
            total = p.get("steps_per_epoch")
            if self.bar is None or self.bar.total != total or p.get("step_in_epoch") == 1:
                if self.bar:
                    self.bar.close()
                self.bar = tqdm(total=total, desc=f"epoch {row['epoch']}", file=self.file, leave=False)
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{p.get('images_per_s', 0):.0f}")
        elif kind == "epoch":
            if self.bar:
                self.bar.close()
                self.bar = None
            print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
                  f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | {row['images_per_s']:.0f} img/s",
                  file=self.file, flush=True)
        elif kind in ("info", "prepare", "balance", "recipe"):
            print(row.get("message", ""), file=self.file, flush=True)

    def should_stop(self) -> bool:
        return self.inner.should_stop()
