"""Run store: the run folders are the truth, one SQLite database (WAL) is their index.

Every run has a folder that alone is enough to show, resume or rebuild it (config, record,
per-epoch metrics, step log, evaluations, events, split, checkpoint). The database makes
listing and live queries fast; `rebuild()` (`python -m core runs rebuild`) recreates it from
the folders. A database that is missing, empty or damaged while run folders exist is never
silently replaced by an empty one: opening the store raises `IndexDamaged`, which says so.

Only `Run` knows the folder's file names; only this module writes SQL. Long tasks (training
included) are rows of the `jobs` table, driven by core.runs.jobs; a training run's job has
the run's id, and `get()`/`list()` return a run with its job's status, progress and error.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from core.errors import UserError
from core.paths import runs_dir

SCHEMA_VERSION = 3           # 2: runs.proc; 3: one jobs table for every long task, run folders are the truth
ACTIVE = ("queued", "starting", "running")
FINAL = ("done", "failed", "cancelled", "interrupted", "pruned")   # pruned: stopped early by its sweep
RUN_FIELDS = ("run_id", "created", "model", "data", "classes", "config", "summary", "name", "notes")
JOB_FIELDS = ("job_id", "kind", "run_id", "args", "status", "device", "pid", "proc", "heartbeat", "created",
              "queued_at", "started", "finished", "cancel", "progress", "result", "error")
JSON_FIELDS = ("config", "summary", "args", "progress", "result")
RECORD_FIELDS = ("status", "device", "pid", "proc", "started", "finished", "error", "queued_at")  # in run.json
EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
STEP_KEYS = ("step", "epoch", "loss", "acc", "lr", "t")
START_GRACE_S = 60           # a job claimed by a scheduler whose worker never reported back is dead after this

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created REAL, model TEXT, data TEXT, classes INTEGER, config TEXT, summary TEXT,
    name TEXT, notes TEXT);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, kind TEXT, run_id TEXT, args TEXT, status TEXT, device TEXT, pid INTEGER,
    proc TEXT, heartbeat REAL, created REAL, queued_at REAL, started REAL, finished REAL,
    cancel INTEGER DEFAULT 0, progress TEXT, result TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id, kind);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT, epoch INTEGER, train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL,
    lr REAL, seconds REAL, images_per_s REAL, PRIMARY KEY (run_id, epoch));
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT, step INTEGER, epoch INTEGER, loss REAL, acc REAL, lr REAL, t REAL,
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS evals (
    run_id TEXT, split TEXT, metrics TEXT, PRIMARY KEY (run_id, split));
CREATE TABLE IF NOT EXISTS events (run_id TEXT, t REAL, kind TEXT, message TEXT);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id);
"""
_RUN_SELECT = ("SELECT r.*, j.status, j.device, j.pid, j.proc, j.heartbeat, j.queued_at, j.started, j.finished, "
               "j.cancel, j.progress, j.error, j.args FROM runs r LEFT JOIN jobs j ON j.job_id = r.run_id")


class IndexDamaged(UserError):
    """The database is missing, empty or unreadable while run folders exist: rebuild it."""


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
    checkpoint = property(lambda self: self.dir / "checkpoints" / "last.pt")
    log_file = property(lambda self: self.dir / "log.txt")
    class_models_dir = property(lambda self: self.dir / "class_models")
    exports_dir = property(lambda self: self.dir / "exports")

    def predictions_file(self, split: str) -> Path:
        return self.dir / f"predictions_{split}.parquet"


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
        """label -> readable name, as chosen when the run started."""
        if not self.classes_file.exists():
            return {}
        df = pd.read_json(self.classes_file)
        return dict(zip(df["label"].astype(str), df["name"].astype(str)))

    def class_count(self) -> int | None:
        """How many classes the run trains on (known once it has started), from classes.json."""
        try:
            return len(json.loads(self.classes_file.read_text())["label"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def predictions(self, split: str) -> pd.DataFrame | None:
        f = self.predictions_file(split)
        return pd.read_parquet(f) if f.exists() else None

    def curve_stamp(self) -> tuple:
        """Changes when metric rows are added or rewritten (a resumed run replaces rows in place)."""
        e = self.store._query("SELECT COUNT(*) AS n, TOTAL(seconds) AS s FROM epochs WHERE run_id=?", (self.id,))[0]
        s = self.store._query("SELECT COUNT(*) AS n, MAX(t) AS t FROM steps WHERE run_id=?", (self.id,))[0]
        return e["n"], e["s"], s["n"], s["t"]

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
        _atomic_write(self.config_file, cfg.to_json())
        self.store._write("UPDATE runs SET config=? WHERE run_id=?", (cfg.to_json(), self.id))

    def write_record(self) -> None:
        """run.json: everything the index holds about the run but its metrics."""
        run = self.get()
        if run is None:
            return
        rec = {k: run.get(k) for k in ("run_id", "created", "model", "data", "classes", "summary", "name", "notes")}
        rec.update({k: run.get(k) for k in RECORD_FIELDS}, args=run.get("args") or {})
        _atomic_write(self.record_file, json.dumps(rec, indent=1, default=str))


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None, check: bool = True):
        self.root = runs_dir(root)
        self.db = self.root / "runs.db"
        if check:
            self._open()

    # ---------------------------------------------------------------- database
    def _open(self) -> None:
        folders = self.run_folders()
        if folders and not self.db.exists():
            raise IndexDamaged(f"The run database {self.db} is missing but {len(folders)} run folder(s) exist; "
                               f"rebuild it with `python -m core runs rebuild` (or the Rebuild button in the app).")
        try:
            with self._conn() as c:
                if c.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("quick_check failed")
                c.executescript(SCHEMA)
                c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                v = int(c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
                if v < SCHEMA_VERSION:
                    _migrate(c, v)
                n = c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        except sqlite3.OperationalError as e:
            if "locked" in str(e):
                raise UserError(f"The run database {self.db} is locked by another program; try again.") from None
            raise self._damaged(e) from None
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None
        if v > SCHEMA_VERSION:
            raise UserError(f"{self.db} was written by a newer version (schema {v}); upgrade this program.")
        if v < SCHEMA_VERSION:
            for run_id in self._ids():
                self.export_folder(run_id)           # an older index: give its runs their folder files
        if folders and n == 0:
            raise IndexDamaged(f"The run database {self.db} is empty but {len(folders)} run folder(s) exist; "
                               f"rebuild it with `python -m core runs rebuild` (or the Rebuild button in the app).")

    def _damaged(self, e) -> UserError:
        if not os.access(self.root, os.W_OK):
            return UserError(f"Cannot open the run database {self.db} ({e}); the runs folder must be writable.")
        return IndexDamaged(f"The run database {self.db} is damaged ({e}); rebuild it from the run folders with "
                            f"`python -m core runs rebuild` (or the Rebuild button in the app).")

    @contextmanager
    def _conn(self):
        c = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        try:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.row_factory = sqlite3.Row
            yield c
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise
            raise self._damaged(e) from None
        finally:
            c.close()

    def _write(self, sql: str, args=()) -> None:
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            c.execute(sql, args)
            c.execute("COMMIT")

    def _query(self, sql: str, args=()) -> list[dict]:
        with self._conn() as c:
            return [dict(r) for r in c.execute(sql, args).fetchall()]

    def _scalar(self, sql: str, args=()):
        rows = self._query(sql, args)
        return next(iter(rows[0].values())) if rows else None

    @contextmanager
    def transaction(self):
        """One writer at a time (BEGIN IMMEDIATE); used by the scheduler to claim queued jobs."""
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def _ids(self) -> list[str]:
        return [r["run_id"] for r in self._query("SELECT run_id FROM runs")]

    def run_folders(self) -> list[Path]:
        """Folders that hold a run (a config.json), whatever the database says."""
        try:
            return sorted(d for d in self.root.iterdir() if (d / "config.json").is_file())
        except OSError:
            return []

    # ---------------------------------------------------------------- runs
    def run(self, run_id: str) -> Run:
        return Run(self, run_id)

    def require(self, run_id: str) -> Run:
        """The run, or one sentence saying there is none."""
        run = Run(self, run_id)
        if not run.exists():
            raise UserError(f"There is no run {run_id!r} in {self.root}.")
        return run

    def create(self, config, device: str = "cpu", status: str = "queued", args: dict | None = None) -> str:
        """A new run folder and its training job. A failure leaves no orphan folder."""
        run_id = time.strftime("%Y%m%d-%H%M%S-") + f"{config.model}-" + uuid.uuid4().hex[:4]
        run = self.run(run_id)
        now = time.time()
        try:   # the index row first: a folder is never seen (by _open) without its row
            with self.transaction() as c:
                c.execute("INSERT INTO runs (run_id, created, model, data, classes, config) VALUES (?,?,?,?,?,?)",
                          (run_id, now, config.model, config.data, config.classes, config.to_json()))
                c.execute("INSERT INTO jobs (job_id, kind, run_id, args, status, device, created, queued_at, "
                          "heartbeat) VALUES (?,?,?,?,?,?,?,?,?)",
                          (run_id, "train", run_id, json.dumps(args or {}), status, device, now, now, now))
            run.dir.mkdir(parents=True)
            _atomic_write(run.config_file, config.to_json())
            run.write_record()
        except OSError as e:
            self._forget(run_id)
            raise UserError(f"Cannot create a run in {self.root} ({e.strerror or e}); "
                            "free space or choose a writable runs folder.") from None
        except BaseException:
            self._forget(run_id)
            raise
        self.event(run_id, "created", f"status {status}")
        return run_id

    def _forget(self, run_id: str) -> None:
        try:
            with self.transaction() as c:
                for t in ("runs", "epochs", "steps", "evals", "events"):
                    c.execute(f"DELETE FROM {t} WHERE run_id=?", (run_id,))
                c.execute("DELETE FROM jobs WHERE run_id=?", (run_id,))
        except UserError:
            pass
        shutil.rmtree(self.root / run_id, ignore_errors=True)

    def get(self, run_id: str) -> dict | None:
        rows = self._query(_RUN_SELECT + " WHERE r.run_id=?", (run_id,))
        return self._all_classes(_decode(rows[0])) if rows else None

    def _all_classes(self, r: dict) -> dict:
        """`classes` 0 means every class of the data set: `classes_all` says how many that was."""
        r["classes_all"] = self.run(r["run_id"]).class_count() if not r.get("classes") else None
        return r

    def list(self) -> list[dict]:
        from core.runs.jobs import reap
        reap(self)
        return [self._all_classes(_decode(r)) for r in self._query(_RUN_SELECT + " ORDER BY r.created DESC")]

    def set(self, run_id: str, **fields) -> None:
        """Update a run and its training job; run.json follows whenever its content changes."""
        run_cols = {k: v for k, v in fields.items() if k in RUN_FIELDS}
        job_cols = {k: v for k, v in fields.items() if k in JOB_FIELDS}
        unknown = set(fields) - set(run_cols) - set(job_cols)
        if unknown:
            raise KeyError(f"unknown run field(s): {', '.join(sorted(unknown))}")
        if run_cols:
            self._update("runs", "run_id", run_id, run_cols)
        if job_cols:
            self.set_job(run_id, **job_cols)   # rewrites run.json itself when a recorded field changed
        if run_cols:
            self.run(run_id).write_record()

    def _update(self, table: str, key: str, value: str, fields: dict) -> None:
        fields = {k: json.dumps(v) if k in JSON_FIELDS and not isinstance(v, str) else v for k, v in fields.items()}
        cols = ", ".join(f"{k}=?" for k in fields)
        self._write(f"UPDATE {table} SET {cols} WHERE {key}=?", (*fields.values(), value))

    def event(self, run_id: str, kind: str, message: str = "") -> None:
        t = time.time()
        self._write("INSERT INTO events VALUES (?,?,?,?)", (run_id, t, kind, message))
        run = self.run(run_id)
        if run.dir.is_dir():
            _append(run.events_file, json.dumps({"t": t, "kind": kind, "message": message}) + "\n")

    def delete(self, run_id: str) -> None:
        from core.runs.jobs import reap
        reap(self)
        run = self.get(run_id)
        if run and run["status"] in ACTIVE and run["status"] != "queued":
            raise UserError(f"Run {run_id} is still {run['status']}; cancel it before deleting.")
        self._forget(run_id)

    # ---------------------------------------------------------------- jobs (rows; core.runs.jobs drives them)
    def add_job(self, kind: str, args: dict, run_id: str | None = None, device: str | None = None) -> str:
        job_id = f"{kind}-" + time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        now = time.time()
        self._write("INSERT INTO jobs (job_id, kind, run_id, args, status, device, created, queued_at, heartbeat)"
                    " VALUES (?,?,?,?,?,?,?,?,?)", (job_id, kind, run_id, json.dumps(args), "queued", device,
                                                   now, now, now))
        return job_id

    def job(self, job_id: str) -> dict | None:
        rows = self._query("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        return _decode(rows[0]) if rows else None

    def jobs(self, kind: str | None = None, run_id: str | None = None, statuses=None) -> list[dict]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        for col, val in (("kind", kind), ("run_id", run_id)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += list(statuses)
        return [_decode(r) for r in self._query(sql + " ORDER BY created DESC", args)]

    def set_job(self, job_id: str, **fields) -> None:
        if "pid" in fields and "proc" not in fields:
            fields["proc"] = process_identity(fields["pid"])
        self._update("jobs", "job_id", job_id, fields)
        if set(fields) & set(RECORD_FIELDS):
            job = self.job(job_id)
            if job and job["kind"] == "train" and job["run_id"]:
                self.run(job["run_id"]).write_record()

    def claim_queued(self, slots, max_per_device: int, need=lambda device: 1) -> list[tuple[str, str | None]]:
        """Mark startable queued jobs 'starting' in one transaction; returns (job id, slot).
        `slots(device)` lists the slots of a device queue ([None] for a job that needs none);
        `need(device)` how many of them a job holds at once (an N-GPU run: N, stored "cuda:0,cuda:1")."""
        started = []
        with self.transaction() as c:      # one scheduler at a time claims queued jobs
            busy: dict = {}
            for r in c.execute("SELECT device FROM jobs WHERE status IN ('starting','running')"):
                for part in str(r["device"]).split(","):
                    busy[part] = busy.get(part, 0) + 1
            waiting = set()                  # device families whose first queued job must wait: the rest wait too
            for r in c.execute("SELECT job_id, device FROM jobs WHERE status='queued' ORDER BY queued_at").fetchall():
                family = str(r["device"]).split("*")[0]
                free = [k for k in slots(r["device"]) if k is None or busy.get(k, 0) < max_per_device]
                n = need(r["device"])
                if family in waiting or len(free) < n:
                    waiting.add(family)      # first come, first served: a 2-GPU run is not starved by 1-GPU runs
                else:                        # one job per GPU: a queued "cuda" job takes the first free one(s)
                    held = free[:n]
                    for k in held:
                        busy[k] = busy.get(k, 0) + 1
                    slot = None if held == [None] else ",".join(held)
                    c.execute("UPDATE jobs SET status='starting', device=?, heartbeat=?, pid=NULL, proc=NULL "
                              "WHERE job_id=?", (slot, time.time(), r["job_id"]))
                    started.append((r["job_id"], slot))
        for job_id, _ in started:
            job = self.job(job_id)
            if job["kind"] == "train" and job["run_id"]:
                self.run(job["run_id"]).write_record()
        return started

    def jobs_ahead(self, job_id: str) -> int:
        """Active jobs of the same device family ("cuda", "cuda*2", "cuda:0,cuda:1" are one family)
        started or queued before this one."""
        me = self.job(job_id)
        if me is None or me["device"] is None:
            return 0
        family = lambda d: str(d).split(":")[0].split("*")[0]  # noqa: E731
        return sum(1 for a in self.jobs(statuses=("queued", "starting", "running"))
                   if a["job_id"] != job_id and family(a["device"]) == family(me["device"])
                   and (a["status"] != "queued" or (a["queued_at"] or 0) < (me["queued_at"] or 0)))

    # ---------------------------------------------------------------- metrics
    def log_step(self, run_id: str, rows: list[tuple]) -> None:
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?)", [(run_id, *r) for r in rows])
        f = self.run(run_id).steps_file
        header = "" if f.exists() else ",".join(STEP_KEYS) + "\n"
        _append(f, header + "".join(",".join(map(repr, r)) + "\n" for r in rows))

    def log_epoch(self, run_id: str, row: dict) -> None:
        # INSERT OR REPLACE: a resumed run re-logging an epoch never duplicates it
        self._write("INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?,?)",
                    (run_id, *[row.get(k) for k in EPOCH_KEYS]))
        self._export_epochs(run_id)

    def log_eval(self, run_id: str, split: str, metrics: dict) -> None:
        self._write("INSERT OR REPLACE INTO evals VALUES (?,?,?)", (run_id, split, json.dumps(metrics)))
        _atomic_write(self.run(run_id).evals_file, json.dumps(self.evals(run_id)))

    def epochs(self, run_id: str) -> pd.DataFrame:
        with self._conn() as c:
            return pd.read_sql_query("SELECT * FROM epochs WHERE run_id=? ORDER BY epoch", c, params=(run_id,))

    def steps(self, run_id: str) -> pd.DataFrame:
        with self._conn() as c:
            return pd.read_sql_query("SELECT * FROM steps WHERE run_id=? ORDER BY step", c, params=(run_id,))

    def evals(self, run_id: str) -> dict:
        return {r["split"]: json.loads(r["metrics"])
                for r in self._query("SELECT * FROM evals WHERE run_id=?", (run_id,))}

    def events(self, run_id: str) -> list[dict]:
        return self._query("SELECT * FROM events WHERE run_id=? ORDER BY t", (run_id,))

    def best_val_accs(self) -> dict:
        return {r["run_id"]: r["best"] for r in self._query(
            "SELECT run_id, MAX(val_acc) AS best FROM epochs GROUP BY run_id")}

    def truncate_after(self, run_id: str, epoch: int) -> None:
        """Drop metrics past `epoch` (resuming from its checkpoint re-runs what follows)."""
        with self.transaction() as c:
            c.execute("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, epoch))
            c.execute("DELETE FROM steps WHERE run_id=? AND epoch>?", (run_id, epoch))
        self._export_epochs(run_id)
        self._export_steps(run_id)

    # ---------------------------------------------------------------- folder files
    def _export_epochs(self, run_id: str) -> None:
        rows = self.epochs(run_id).drop(columns="run_id").to_dict("records")   # json keeps every float digit
        _atomic_write(self.run(run_id).epochs_file, json.dumps(rows))

    def _export_steps(self, run_id: str) -> None:
        f = self.run(run_id).steps_file
        tmp = f.with_name(f.name + ".tmp")
        self.steps(run_id)[list(STEP_KEYS)].to_csv(tmp, index=False)
        os.replace(tmp, f)

    def export_folder(self, run_id: str) -> None:
        """Write every file a run folder should hold from the index (used when migrating an old index)."""
        run = self.run(run_id)
        if not run.dir.is_dir():
            return
        r = self.get(run_id)
        if r and not run.config_file.exists():
            _atomic_write(run.config_file, json.dumps(r["config"], indent=2, sort_keys=True))
        run.write_record()
        self._export_epochs(run_id)
        self._export_steps(run_id)
        _atomic_write(run.evals_file, json.dumps(self.evals(run_id)))
        ev = self.events(run_id)
        _atomic_write(run.events_file, "".join(json.dumps({k: e[k] for k in ("t", "kind", "message")}) + "\n"
                                               for e in ev))

    @classmethod
    def rebuild(cls, root: str | os.PathLike | None = None) -> dict:
        """Recreate the index from the run folders. A damaged database is kept beside, renamed."""
        from core.runs.rebuild import rebuild
        out = rebuild(cls(root, check=False))
        cls(root)                           # opens and checks the new index
        return out


def _decode(r: dict) -> dict:
    for k in JSON_FIELDS:
        if k in r:
            r[k] = json.loads(r[k]) if r.get(k) else {}
    if r.get("status") is None:        # a run whose job row is missing: nothing is running it
        r["status"] = "interrupted"
    return r


def _migrate(c, version: int) -> None:
    """Bring an older database up to SCHEMA_VERSION in place (runs and metrics are kept)."""
    cols = {r[1] for r in c.execute("PRAGMA table_info(runs)")}
    if version < 3 and "status" in cols:
        proc = "proc" if "proc" in cols else "NULL"
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT OR IGNORE INTO jobs (job_id, kind, run_id, args, status, device, pid, proc, heartbeat, "
                  "created, queued_at, started, finished, cancel, progress, error) SELECT run_id, 'train', run_id, "
                  "json_object('resume', resume), status, device, pid, " + proc + ", heartbeat, created, queued_at, "
                  "started, finished, cancel, progress, error FROM runs")
        c.execute("CREATE TABLE runs_v3 (run_id TEXT PRIMARY KEY, created REAL, model TEXT, data TEXT, "
                  "classes INTEGER, config TEXT, summary TEXT, name TEXT, notes TEXT)")
        c.execute("INSERT INTO runs_v3 (run_id, created, model, data, classes, config, summary) "
                  "SELECT run_id, created, model, data, classes, config, summary FROM runs")
        c.execute("DROP TABLE runs")
        c.execute("ALTER TABLE runs_v3 RENAME TO runs")
        c.execute("COMMIT")
    c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))


def process_identity(pid) -> str | None:
    """'boot id:start time' of a live process, which a pid alone is not: after a reboot or a
    wrap-around the same pid can belong to another program. None where /proc is missing."""
    if not pid:
        return None
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        with open(f"/proc/{int(pid)}/stat") as f:
            start = f.read().rsplit(")", 1)[-1].split()[19]      # field 22: start time since boot
    except (OSError, IndexError, ValueError):
        return None
    return f"{boot}:{start}"


def alive(pid, proc: str | None = None) -> bool:
    """Is this the process that was recorded? Its pid exists, is not a zombie, and (where the
    identity was recorded) it is the same process, not a later one that reused the pid."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "Z":     # a zombie child of this process is dead too
                return False
    except OSError:
        pass
    return not proc or process_identity(pid) in (None, proc)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _append(path: Path, text: str) -> None:
    """Appended in one write; a line cut by a crash is skipped when the folder is read back."""
    with open(path, "a") as f:
        f.write(text)
