"""The run folder, the bottom layer of core/runs: every file name, writing them atomically, and
reading a folder back (what `runs rebuild` and the index's reconciliation insert).

A run folder alone is enough to show, resume or rebuild its run: config.json (the one stored
configuration), run.json (status and summary), epochs.json, steps.csv, evals.json, events.jsonl,
split.csv, classes.json, provenance.json (what the run was made from: core.runs.provenance),
checkpoints/last.pt, log.txt, per split confusion_<split>.parquet (the confusion matrix's non-zero
cells), predictions_<split>.parquet and distractors_<split>.json (the split scored with a distractor
folder: GAP with distractors, the coverage curve), once calibrated calibration.json (temperature,
rejection threshold, ECE: core.train.calibration), once embedded embeddings.npy + embeddings.parquet
(+ embeddings.ivf, a faiss inverted file, for a large train split; core.serve.embeddings), and once inspected inspect.json (label issues of every image, near-duplicates,
leaks: core.serve.inspect). Only this class spells those names.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from core.files import append, atomic_write

RESOURCE_KEYS = ("cpu_s", "rss_mb", "gpu_mb")   # the epoch's CPU seconds; peak resident and CUDA memory so far, MiB
EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s",
              *RESOURCE_KEYS)
STEP_KEYS = ("step", "epoch", "loss", "acc", "lr", "t")
RECORD_FIELDS = ("status", "device", "pid", "proc", "started", "finished", "error", "queued_at")  # in run.json


class RunFolder:
    """The file names of a run folder (the engine writes through these, nothing else)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    config_file = property(lambda self: self.dir / "config.json")
    record_file = property(lambda self: self.dir / "run.json")
    epochs_file = property(lambda self: self.dir / "epochs.json")
    steps_file = property(lambda self: self.dir / "steps.csv")
    evals_file = property(lambda self: self.dir / "evals.json")
    events_file = property(lambda self: self.dir / "events.jsonl")
    split_file = property(lambda self: self.dir / "split.csv")
    classes_file = property(lambda self: self.dir / "classes.json")
    provenance_file = property(lambda self: self.dir / "provenance.json")
    checkpoint = property(lambda self: self.dir / "checkpoints" / "last.pt")
    log_file = property(lambda self: self.dir / "log.txt")
    class_models_dir = property(lambda self: self.dir / "class_models")
    exports_dir = property(lambda self: self.dir / "exports")
    ddp_dir = property(lambda self: self.dir / "ddp")           # a several-process run's reports
    calibration_file = property(lambda self: self.dir / "calibration.json")   # temperature + threshold (issue 23)
    embeddings_file = property(lambda self: self.dir / "embeddings.npy")      # float16 [n, D] (core.serve.embeddings)
    embedding_rows_file = property(lambda self: self.dir / "embeddings.parquet")  # one row a vector, map x/y; written last
    embedding_index_file = property(lambda self: self.dir / "embeddings.ivf")  # faiss IVF of the train rows, large runs
    inspect_file = property(lambda self: self.dir / "inspect.json")   # label issues, duplicates, leaks (issue 22)

    def predictions_file(self, split: str) -> Path:
        return self.dir / f"predictions_{split}.parquet"

    def confusion_file(self, split: str) -> Path:
        return self.dir / f"confusion_{split}.parquet"

    def distractors_file(self, split: str) -> Path:
        return self.dir / f"distractors_{split}.json"

    # ---------------------------------------------------------------- writing
    def write_record(self, record: dict) -> None:
        if self.dir.is_dir():            # a folder removed under us (deleted run): nothing to keep in step
            atomic_write(self.record_file, json.dumps(record, indent=1, default=str))

    def write_epochs(self, rows: list[dict]) -> None:
        atomic_write(self.epochs_file, json.dumps(rows))          # json keeps every float digit

    def write_steps(self, rows: list[tuple]) -> None:
        atomic_write(self.steps_file, ",".join(STEP_KEYS) + "\n" + "".join(_csv_row(r) for r in rows))

    def append_steps(self, rows: list[tuple]) -> None:
        header = "" if self.steps_file.exists() else ",".join(STEP_KEYS) + "\n"
        append(self.steps_file, header + "".join(_csv_row(r) for r in rows))

    def write_evals(self, evals: dict) -> None:
        atomic_write(self.evals_file, json.dumps(evals))

    def write_provenance(self, record: dict) -> None:
        atomic_write(self.provenance_file, json.dumps(record, indent=1, default=str))

    def write_confusion(self, split: str, confusion) -> None:
        """A split's confusion matrix (a metrics.Confusion) as its non-zero cells: true, pred, count."""
        from core.files import atomic_output
        with atomic_output(self.confusion_file(split)) as tmp:
            confusion.frame().to_parquet(tmp, index=False)

    def write_calibration(self, calibration: dict) -> None:
        atomic_write(self.calibration_file, json.dumps(calibration, indent=1))

    def write_distractors(self, split: str, result: dict) -> None:
        atomic_write(self.distractors_file(split), json.dumps(result))

    def write_inspect(self, result: dict) -> None:
        """The whole inspection at once (a cancelled one leaves the previous file, or none)."""
        atomic_write(self.inspect_file, json.dumps(result))

    def append_event(self, t: float, kind: str, message: str) -> None:
        if self.dir.is_dir():
            append(self.events_file, json.dumps({"t": t, "kind": kind, "message": message}) + "\n")

    def write_events(self, events: list[dict]) -> None:
        atomic_write(self.events_file, "".join(json.dumps({k: e[k] for k in ("t", "kind", "message")}) + "\n"
                                               for e in events))

    # ---------------------------------------------------------------- reading back
    def read_config(self) -> dict:
        return _read_json(self.config_file, {})

    def read_record(self) -> dict:
        return _read_json(self.record_file, {})

    def read_epochs(self) -> list[dict]:
        return _read_json(self.epochs_file, [])

    def read_provenance(self) -> dict:
        return _read_json(self.provenance_file, {})

    def read_evals(self) -> dict:
        return _read_json(self.evals_file, {})

    def read_confusion(self, split: str, evaluation: dict | None = None):
        """The split's confusion matrix as a metrics.Confusion of its non-zero cells, or None.
        A run evaluated before issue 20 has no confusion file but a dense `confusion` in its
        evaluation (`evaluation`, else evals.json): it is converted here, the one place that reads
        the old format."""
        from core.train.metrics import Confusion
        ev = self.read_evals().get(split, {}) if evaluation is None else evaluation
        f = self.confusion_file(split)
        if f.exists():
            import pandas as pd
            return Confusion.from_cells(pd.read_parquet(f), len(ev.get("labels") or ev.get("support") or ()))
        return Confusion.from_dense(ev["confusion"]) if ev.get("confusion") else None

    def read_calibration(self) -> dict | None:
        return _read_json(self.calibration_file, None)

    def read_distractors(self, split: str) -> dict | None:
        """The split's last distractor evaluation (core.serve.distractors.evaluate), or None."""
        return _read_json(self.distractors_file(split), None)

    def read_inspect(self) -> dict | None:
        """The last finished inspection (core.serve.inspect.inspect), or None."""
        return _read_json(self.inspect_file, None)

    def read_events(self) -> list[dict]:
        return _read_lines(self.events_file)

    def read_steps(self) -> list[tuple]:
        """Step rows; a row cut short by a crash, or a step seen twice, is kept once."""
        rows = {}
        try:
            with open(self.steps_file, newline="") as f:
                for r in csv.DictReader(f):
                    try:
                        row = tuple(_num(r[k]) for k in STEP_KEYS)
                    except (KeyError, TypeError, ValueError):
                        continue
                    if row[0] is not None and row[1] is not None:
                        rows[int(row[0])] = (int(row[0]), int(row[1]), *row[2:])
        except OSError:
            pass
        return [rows[k] for k in sorted(rows)]


def _csv_row(r: tuple) -> str:
    return ",".join(map(repr, r)) + "\n"


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _read_lines(path: Path) -> list[dict]:
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue                     # a line cut short by a crash
    return out


def _num(v):
    if v in ("", "None", "nan", None):
        return None
    return float(v)
