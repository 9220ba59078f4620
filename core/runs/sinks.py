"""Where progress and metrics go. The engine emits flat rows to one sink; the worker stores
them, the CLI also draws a progress bar on stderr. (Lightning's loggers are the model.)"""
from __future__ import annotations

import sys
import time


class Cancelled(Exception):
    """Raised by the engine when the sink asks it to stop (the run keeps its last checkpoint)."""


class NullSink:
    def emit(self, kind: str, row: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class StoreSink:
    """Writes rows to the run store; step rows are batched (one transaction a second)."""

    def __init__(self, store, run_id: str, flush_s: float = 1.0):
        self.store, self.run_id, self.flush_s = store, run_id, flush_s
        self._steps: list[tuple] = []
        self._last = 0.0
        self._stop_checked = 0.0
        self._stop = False

    def emit(self, kind: str, row: dict) -> None:
        if kind == "step":
            self._steps.append((row["step"], row["epoch"], row["loss"], row["acc"], row["lr"], time.time()))
            if time.time() - self._last > self.flush_s:
                self.flush(row.get("progress"))
        elif kind == "epoch":
            self.flush()
            self.store.log_epoch(self.run_id, row)
        elif kind == "eval":
            self.store.log_eval(self.run_id, row["split"], row["metrics"])
        elif kind == "progress":
            self.flush(row)
        elif kind == "resume":
            # resuming from epoch k's checkpoint re-runs what followed: drop those rows
            self.store.truncate_after(self.run_id, row["epoch"])
        else:
            self.store.event(self.run_id, kind, row.get("message", ""))

    def flush(self, progress: dict | None = None) -> None:
        if self._steps:
            self.store.log_step(self.run_id, self._steps)
            self._steps = []
        fields = {"heartbeat": time.time()}
        if progress:
            fields["progress"] = progress
        self.store.set(self.run_id, **fields)
        self._last = time.time()

    def should_stop(self) -> bool:
        if time.time() - self._stop_checked > 0.5:  # one cheap read every half second
            self._stop_checked = time.time()
            run = self.store.query("SELECT cancel FROM runs WHERE run_id=?", (self.run_id,))
            self._stop = bool(run and run[0]["cancel"])
        return self._stop


class TqdmSink:
    """Draws a progress bar and one line per epoch on stderr, and forwards to another sink."""

    def __init__(self, inner=None, file=sys.stderr):
        self.inner, self.file, self.bar = inner or NullSink(), file, None

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
        elif kind in ("info", "prepare"):
            print(row.get("message", ""), file=self.file, flush=True)

    def should_stop(self) -> bool:
        return self.inner.should_stop()
