"""Run store: the run folders (core.runs.folder) are the truth, the index (core.runs.index) their
SQLite database. `RunStore` keeps the two in step; `Run` is one run as pages and workers see it.

Creating a run writes its folder first (an exclusive mkdir: an id already on disk is never taken
twice), then both index rows in one transaction. A crash between the two leaves a folder without
a row, which `list()` adopts once its creator is gone (and `runs rebuild` anyway); never a row
without a folder. A failed creation removes only what that very call made. A database that is
missing, empty or damaged while run folders exist is never silently replaced by an empty one:
opening the store raises `IndexDamaged`, which says so.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid


from typing import TYPE_CHECKING

from core.errors import UserError
from core.files import atomic_write
from core.paths import runs_dir
from core.runs import provenance
from core.runs.folder import EPOCH_KEYS, RECORD_FIELDS, STEP_KEYS, RunFolder  # noqa: F401 - re-exported
from core.runs.index import (ACTIVE, FINAL, JOB_FIELDS, RUN_FIELDS, SCHEMA, SCHEMA_VERSION,  # noqa: F401
                             IdTaken, IndexDamaged, RunIndex, is_run_job)
from core.runs.proc import START_GRACE_S, alive, gone, me, process_identity  # noqa: F401 - re-exported

ID_HEX = 8                   # random hex digits in a run id (after the second and the model's name)
TAG_MAX = 40                 # characters in a tag


def new_run_id(model: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + f"{model}-" + uuid.uuid4().hex[:ID_HEX]


if TYPE_CHECKING:
    import pandas as pd


class Run(RunFolder):
    """One run: its folder's files, and the queries pages need, through the store."""

    def __init__(self, store: "RunStore", run_id: str):
        super().__init__(store.root / run_id)
        self.store, self.id = store, run_id

    # ---------------------------------------------------------------- reads
    def exists(self) -> bool:
        return self.get() is not None and self.dir.is_dir()

    def get(self) -> dict | None:
        return self.store.get(self.id)

    def config(self):
        """The run's one stored configuration (config.json), as resume and the predictor read it."""
        from core.train.config import TrainConfig
        try:
            return TrainConfig.load(self.config_file)
        except (OSError, ValueError, TypeError) as e:
            raise UserError(f"Run {self.id} has no readable config.json ({type(e).__name__}); "
                            "its folder is damaged.") from None

    def has_checkpoint(self) -> bool:
        return self.checkpoint.exists()

    def checkpoint_mtime(self) -> float:
        try:
            return self.checkpoint.stat().st_mtime
        except OSError:
            return 0.0

    def class_names(self) -> dict:
        """label -> readable name, as chosen when the run started; percent-decoded, as runs made
        before issue 20 stored GLDv2's names encoded ("Marb%C3%A4cks kyrka")."""
        if not self.classes_file.exists():
            return {}
        import pandas as pd

        from core.data.readers import decode_name
        df = pd.read_json(self.classes_file)
        return dict(zip(df["label"].astype(str), map(decode_name, df["name"].astype(str))))

    def class_count(self) -> int | None:
        """How many classes the run trains on (known once it has started), from classes.json."""
        try:
            return len(json.loads(self.classes_file.read_text())["label"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def predictions(self, split: str) -> pd.DataFrame | None:
        f = self.predictions_file(split)
        import pandas as pd
        return pd.read_parquet(f) if f.exists() else None

    def curve_stamp(self) -> tuple:
        """Changes when metric rows are added or rewritten (a resumed run replaces rows in place)."""
        return self.store.curve_stamp(self.id)

    def queue_position(self) -> int:
        """Jobs ahead of this run on its device (queued earlier, or running there)."""
        return self.store.jobs_ahead(self.id)

    def log_tail(self, lines: int) -> list[str] | None:
        if not self.log_file.exists():
            return None
        return self.log_file.read_text(errors="replace").splitlines()[-lines:]

    # ---------------------------------------------------------------- writes (worker side)
    def set(self, **fields) -> None:
        self.store.set(self.id, **fields)

    def update_config(self, cfg) -> None:
        """Replace the stored configuration (both the folder's copy and the index)."""
        atomic_write(self.config_file, cfg.to_json())
        self.store.update("runs", "run_id", self.id, {"config": cfg.to_json()})

    def write_record(self, record: dict | None = None) -> None:
        """run.json: everything the index holds about the run but its metrics."""
        if record is None:
            run = self.get()
            if run is None:
                return
            record = {k: run.get(k) for k in ("run_id", "created", "model", "data", "classes", "summary", "name",
                                               "notes", "tags")}
            record.update({k: run.get(k) for k in RECORD_FIELDS}, args=run.get("args") or {})
        super().write_record(record)


class RunStore(RunIndex):
    def __init__(self, root: str | os.PathLike | None = None, check: bool = True):
        super().__init__(runs_dir(root))
        if check:
            self.open_index()

    def migrated(self) -> None:
        for run_id in self.ids():
            self.export_folder(run_id)           # an older index: give its runs their folder files

    # ---------------------------------------------------------------- runs
    def run(self, run_id: str) -> Run:
        return Run(self, run_id)

    def require(self, run_id: str) -> Run:
        """The run, or one sentence saying there is none."""
        run = Run(self, run_id)
        if not run.exists():
            raise UserError(f"There is no run {run_id!r} in {self.root}.")
        return run

    def create(self, config, device: str = "cpu", status: str = "queued", args: dict | None = None,
               kind: str = "train") -> str:
        """A new run: its folder (config.json, provenance.json, run.json) first, then its index rows. Returns its id."""
        record = provenance.collect(config)   # what the run is made from (issue 24); never fails
        for _ in range(16):
            run_id = new_run_id(config.model)
            run = self.run(run_id)
            try:
                run.dir.mkdir(parents=True)      # exclusive: an id on disk is never taken twice
            except FileExistsError:
                continue
            except OSError as e:
                raise _cannot_create(self.root, e) from None
            now = time.time()
            try:
                atomic_write(run.config_file, config.to_json())
                run.write_provenance(record)
                run.write_record({"run_id": run_id, "created": now, "model": config.model, "data": config.data,
                                  "classes": config.classes, "summary": {}, "name": None, "notes": None, "tags": [],
                                  "status": status, "device": device, "queued_at": now, "kind": kind,
                                  "args": args or {}, "creator": me()})
                self.insert_run(run_id, now, config, status, device, args or {}, kind)
            except IdTaken:
                shutil.rmtree(run.dir, ignore_errors=True)     # ours: made by this call a moment ago
                continue
            except BaseException as e:
                if self.get(run_id) is None:                   # the rows were not written: the folder is ours
                    shutil.rmtree(run.dir, ignore_errors=True)
                if isinstance(e, OSError):
                    raise _cannot_create(self.root, e) from None
                raise
            run.write_record()
            self.event(run_id, "created", f"status {status}")
            return run_id
        raise UserError(f"Could not find a free run id in {self.root}; try again.")

    def adopt_orphans(self) -> list[str]:
        """Folders whose creator died before writing their index rows become runs (crash leftovers)."""
        known = set(self.ids())
        try:                             # names first (scandir: no stat per run), files only for strangers
            strangers = [self.root / e.name for e in os.scandir(self.root) if e.name not in known and e.is_dir()]
        except OSError:
            return []
        adopted = []
        for folder in strangers:
            if not (folder / "config.json").is_file():
                continue
            rec = RunFolder(folder).read_record()
            if not gone(rec.get("creator"), heartbeat=rec.get("created") or 0):
                continue                     # its creator may still be writing the rows
            try:
                with self.transaction() as c:
                    self.insert_folder(c, RunFolder(folder))
            except Exception:  # noqa: BLE001 - another process adopted it first, or it is unreadable
                continue
            adopted.append(folder.name)
        return adopted

    def list(self) -> list[dict]:
        self.reap()
        self.adopt_orphans()
        return [self._all_classes(r) for r in self.list_rows()]

    def get(self, run_id: str) -> dict | None:
        r = super().get(run_id)
        return self._all_classes(r) if r else None

    def _all_classes(self, r: dict) -> dict:
        """`classes` 0 means every class of the data set: `classes_all` says how many that was."""
        r["classes_all"] = self.run(r["run_id"]).class_count() if not r.get("classes") else None
        return r

    def set(self, run_id: str, **fields) -> None:
        """Update a run and its own job; run.json follows whenever its content changes."""
        run_cols = {k: v for k, v in fields.items() if k in RUN_FIELDS}
        job_cols = {k: v for k, v in fields.items() if k in JOB_FIELDS}
        unknown = set(fields) - set(run_cols) - set(job_cols)
        if unknown:
            raise KeyError(f"unknown run field(s): {', '.join(sorted(unknown))}")
        if run_cols:
            self.update("runs", "run_id", run_id, run_cols)
        if job_cols:
            self.set_job(run_id, **job_cols)   # rewrites run.json itself when a recorded field changed
        if run_cols:
            self.run(run_id).write_record()

    def set_job(self, job_id: str, **fields) -> None:
        super().set_job(job_id, **fields)
        if set(fields) & set(RECORD_FIELDS):
            job = self.job(job_id)
            if job and is_run_job(job):
                self.run(job["run_id"]).write_record()

    def claim_queued(self, slots, max_per_device: int, need=lambda device: 1) -> list[tuple[str, str | None]]:
        started = super().claim_queued(slots, max_per_device, need)
        for job_id, _ in started:
            job = self.job(job_id)
            if job and is_run_job(job):
                self.run(job["run_id"]).write_record()
        return started

    def tag(self, run_id: str, tag: str, remove: bool = False) -> list[str]:
        """Add (or remove) one tag of a run; returns the run's tags. Kept in the index and in
        run.json, so `runs rebuild` restores them."""
        tag = check_tag(tag)
        tags = self.change_tags(run_id, remove=[tag]) if remove else self.change_tags(run_id, add=[tag])
        if tags is None:
            raise UserError(f"There is no run {run_id!r} in {self.root}.")
        self.run(run_id).write_record()
        return tags

    def event(self, run_id: str, kind: str, message: str = "") -> None:
        t = time.time()
        self.insert_event(run_id, t, kind, message)
        self.run(run_id).append_event(t, kind, message)

    def delete(self, run_id: str) -> None:
        self.reap()
        run = self.get(run_id)
        if run and run["status"] in ACTIVE and run["status"] != "queued":
            raise UserError(f"Run {run_id} is still {run['status']}; cancel it before deleting.")
        try:
            self.forget_rows(run_id)
        except UserError:
            pass
        shutil.rmtree(self.root / run_id, ignore_errors=True)

    # ---------------------------------------------------------------- metrics
    def log_step(self, run_id: str, rows: list[tuple]) -> None:
        self.insert_steps(run_id, rows)
        self.run(run_id).append_steps(rows)

    def log_epoch(self, run_id: str, row: dict) -> None:
        self.upsert_epoch(run_id, row)
        self.run(run_id).write_epochs(self.epoch_rows(run_id))

    def log_eval(self, run_id: str, split: str, metrics: dict) -> None:
        self.upsert_eval(run_id, split, metrics)
        self.run(run_id).write_evals(self.evals(run_id))

    def truncate_after(self, run_id: str, epoch: int) -> None:
        """Drop metrics past `epoch` (resuming from its checkpoint re-runs what follows)."""
        self.delete_after(run_id, epoch)
        run = self.run(run_id)
        run.write_epochs(self.epoch_rows(run_id))
        run.write_steps(self.step_rows(run_id))

    # ---------------------------------------------------------------- folder files
    def export_folder(self, run_id: str) -> None:
        """Write every file a run folder should hold from the index (used when migrating an old index)."""
        run = self.run(run_id)
        if not run.dir.is_dir():
            return
        r = self.get(run_id)
        if r and not run.config_file.exists():
            atomic_write(run.config_file, json.dumps(r["config"], indent=2, sort_keys=True))
        run.write_record()
        run.write_epochs(self.epoch_rows(run_id))
        run.write_steps(self.step_rows(run_id))
        run.write_evals(self.evals(run_id))
        run.write_events(self.events(run_id))

    @classmethod
    def rebuild(cls, root: str | os.PathLike | None = None) -> dict:
        """Recreate the index from the run folders (rows without a folder are gone with the old one).
        A damaged database is kept beside, renamed `runs.db.damaged-<time>`."""
        store = cls(root, check=False)
        folders = store.run_folders()
        store.rebuild_from(folders)
        cls(root)                           # opens and checks the new index
        return {"runs": len(folders), "database": str(store.db)}


def check_tag(tag: str) -> str:
    """A tag as stored (spaces at the ends dropped), or one sentence saying why it cannot be one."""
    t = str(tag).strip()
    if not t or len(t) > TAG_MAX or "," in t or not t.isprintable():
        raise UserError(f"{tag!r} is not a usable tag: use 1-{TAG_MAX} printable characters without commas.")
    return t


def _cannot_create(root, e: OSError) -> UserError:
    return UserError(f"Cannot create a run in {root} ({e.strerror or e}); free space or choose a writable runs folder.")
