"""The run index: one SQLite database (WAL) over the run folders. All of core/runs' SQL is here.

The folders are the truth (core.runs.folder); this index makes listing and live queries fast and
can be rebuilt from them (`rebuild_from`). It knows nothing of job kinds or processes beyond the
one liveness rule (core.runs.proc): `reap` marks a job whose process is gone as interrupted.
A run's own job has the run's id as its job id (the store creates both at once): that, not a
kind's name, is how a job's end becomes an event of its run.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path


from typing import TYPE_CHECKING

from core.errors import UserError
from core.files import file_lock
from core.runs.folder import EPOCH_KEYS, RESOURCE_KEYS, STEP_KEYS, RunFolder
from core.runs.proc import gone, process_identity

SCHEMA_VERSION = 4           # 2: runs.proc; 3: one jobs table for every long task, run folders are the truth;
                             # 4: runs.tags, and the resources each epoch used (epochs.cpu_s, rss_mb, gpu_mb)
ACTIVE = ("queued", "starting", "running")
FINAL = ("done", "failed", "cancelled", "interrupted", "pruned")   # pruned: stopped early by its sweep
RUN_FIELDS = ("run_id", "created", "model", "data", "classes", "config", "summary", "name", "notes", "tags")
JOB_FIELDS = ("job_id", "kind", "run_id", "args", "status", "device", "pid", "proc", "heartbeat", "created",
              "queued_at", "started", "finished", "cancel", "progress", "result", "error")
JSON_FIELDS = ("config", "summary", "args", "progress", "result", "tags")
LIST_FIELDS = ("tags",)                      # JSON fields that hold a list ([] when empty)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created REAL, model TEXT, data TEXT, classes INTEGER, config TEXT, summary TEXT,
    name TEXT, notes TEXT, tags TEXT);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, kind TEXT, run_id TEXT, args TEXT, status TEXT, device TEXT, pid INTEGER,
    proc TEXT, heartbeat REAL, created REAL, queued_at REAL, started REAL, finished REAL,
    cancel INTEGER DEFAULT 0, progress TEXT, result TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id, kind);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT, epoch INTEGER, train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL,
    lr REAL, seconds REAL, images_per_s REAL, cpu_s REAL, rss_mb REAL, gpu_mb REAL, PRIMARY KEY (run_id, epoch));
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
_EPOCH_INSERT = (f"INSERT OR REPLACE INTO epochs (run_id, {', '.join(EPOCH_KEYS)}) "
                 f"VALUES ({', '.join('?' * (len(EPOCH_KEYS) + 1))})")     # by name: migrated tables add columns last
_REBUILD = "rebuild it with `python -m core runs rebuild` (or the Rebuild button in the app)"


if TYPE_CHECKING:
    import pandas as pd


class IndexDamaged(UserError):
    """The database is missing, empty or unreadable while run folders exist: rebuild it."""


class IdTaken(Exception):
    """The id is already in the index (another process took it first)."""


def is_run_job(job: dict) -> bool:
    """The job that trains a run has the run's id (see the module's docstring)."""
    return bool(job.get("run_id")) and job.get("job_id") == job.get("run_id")


class RunIndex:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.db = self.root / "runs.db"

    # ---------------------------------------------------------------- connection
    def open_index(self) -> None:
        """Check (and create or migrate) the database; IndexDamaged when it cannot stand for the folders."""
        folders = self.run_folders()
        if folders and not self.db.exists():
            raise IndexDamaged(f"The run database {self.db} is missing but {len(folders)} run folder(s) exist; "
                               f"{_REBUILD}.")
        try:
            with file_lock(self.root / ".runs.db.lock"), self._conn() as c:   # two first opens: one creates
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
        except OSError as e:             # the lock file: a runs folder that cannot be written
            raise UserError(f"Cannot open the run database {self.db} ({e.strerror or e}); the runs folder must "
                            "be writable.") from None
        if v > SCHEMA_VERSION:
            raise UserError(f"{self.db} was written by a newer version (schema {v}); upgrade this program.")
        if v < SCHEMA_VERSION:
            self.migrated()
        # a folder whose run.json still names its creator never had rows (a creation cut short: adopted by
        # the store); one without had its rows, so an empty index lost them
        if n == 0 and [f for f in folders if "creator" not in RunFolder(f).read_record()]:
            raise IndexDamaged(f"The run database {self.db} is empty but {len(folders)} run folder(s) exist; "
                               f"{_REBUILD}.")

    def migrated(self) -> None:
        """Called after an older index was migrated (the store gives its runs their folder files)."""

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
            if isinstance(e, (sqlite3.IntegrityError,)) or (isinstance(e, sqlite3.OperationalError)
                                                            and "locked" in str(e)):
                raise
            raise self._damaged(e) from None
        finally:
            c.close()

    def _write(self, sql: str, args=()) -> None:
        with self.transaction() as c:
            c.execute(sql, args)

    def _query(self, sql: str, args=()) -> list[dict]:
        with self._conn() as c:
            return [dict(r) for r in c.execute(sql, args).fetchall()]

    @contextmanager
    def transaction(self):
        """One writer at a time (BEGIN IMMEDIATE)."""
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def run_folders(self) -> list[Path]:
        """Folders that hold a run (a config.json), whatever the database says."""
        try:
            return sorted(d for d in self.root.iterdir() if (d / "config.json").is_file())
        except OSError:
            return []

    # ---------------------------------------------------------------- runs
    def insert_run(self, run_id: str, created: float, config, status: str, device: str, args: dict,
                   kind: str = "train") -> None:
        """The run's row and its own job's row, in one transaction; IdTaken if the id is in use."""
        try:
            with self.transaction() as c:
                c.execute("INSERT INTO runs (run_id, created, model, data, classes, config) VALUES (?,?,?,?,?,?)",
                          (run_id, created, config.model, config.data, config.classes, config.to_json()))
                c.execute("INSERT INTO jobs (job_id, kind, run_id, args, status, device, created, queued_at, "
                          "heartbeat) VALUES (?,?,?,?,?,?,?,?,?)",
                          (run_id, kind, run_id, json.dumps(args or {}), status, device, created, created, created))
        except sqlite3.IntegrityError:
            raise IdTaken(run_id) from None

    def ids(self) -> list[str]:
        return [r["run_id"] for r in self._query("SELECT run_id FROM runs")]

    def get(self, run_id: str) -> dict | None:
        rows = self._query(_RUN_SELECT + " WHERE r.run_id=?", (run_id,))
        return _decode(rows[0]) if rows else None

    def list_rows(self) -> list[dict]:
        return [_decode(r) for r in self._query(_RUN_SELECT + " ORDER BY r.created DESC")]

    def update(self, table: str, key: str, value: str, fields: dict) -> None:
        fields = {k: json.dumps(v) if k in JSON_FIELDS and not isinstance(v, str) else v for k, v in fields.items()}
        cols = ", ".join(f"{k}=?" for k in fields)
        self._write(f"UPDATE {table} SET {cols} WHERE {key}=?", (*fields.values(), value))

    def change_tags(self, run_id: str, add=(), remove=()) -> list[str] | None:
        """The run's tags with `add` added and `remove` removed, in one transaction (two taggers at
        once both count); None when there is no such run."""
        with self.transaction() as c:
            row = c.execute("SELECT tags FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return None
            tags = [t for t in json.loads(row["tags"] or "[]") if t not in remove]
            tags += [t for t in add if t not in tags]
            c.execute("UPDATE runs SET tags=? WHERE run_id=?", (json.dumps(tags), run_id))
        return tags

    def forget_rows(self, run_id: str) -> None:
        with self.transaction() as c:
            for t in ("runs", "epochs", "steps", "evals", "events"):
                c.execute(f"DELETE FROM {t} WHERE run_id=?", (run_id,))
            c.execute("DELETE FROM jobs WHERE run_id=?", (run_id,))

    def insert_event(self, run_id: str, t: float, kind: str, message: str) -> None:
        self._write("INSERT INTO events VALUES (?,?,?,?)", (run_id, t, kind, message))

    def events(self, run_id: str) -> list[dict]:
        return self._query("SELECT * FROM events WHERE run_id=? ORDER BY t", (run_id,))

    # ---------------------------------------------------------------- jobs
    def add_job(self, kind: str, args: dict, run_id: str | None = None, device: str | None = None,
                status: str = "queued") -> str:
        now = time.time()
        for _ in range(8):
            job_id = f"{kind}-" + time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
            try:
                self._write("INSERT INTO jobs (job_id, kind, run_id, args, status, device, created, queued_at, "
                            "heartbeat) VALUES (?,?,?,?,?,?,?,?,?)",
                            (job_id, kind, run_id, json.dumps(args), status, device, now, now, now))
                return job_id
            except sqlite3.IntegrityError:
                continue
        raise UserError(f"Could not find a free job id in {self.db}; try again.")

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
        self.update("jobs", "job_id", job_id, fields)

    def finish_job(self, job: dict, status: str, message: str = "", **fields) -> None:
        """Record how a job ended (and, for a run's own job, say it in the run's events)."""
        self.set_job(job["job_id"], status=status, finished=time.time(), **fields)
        if is_run_job(job):
            self.event(job["run_id"], status, message)

    def event(self, run_id: str, kind: str, message: str = "") -> None:
        self.insert_event(run_id, time.time(), kind, message)

    def reap(self) -> list[str]:
        """Mark jobs whose process is gone (killed, machine rebooted) as interrupted: the one rule."""
        dead = []
        for j in self.jobs(statuses=("starting", "running")):
            if gone({"pid": j["pid"], "proc": j["proc"]}, heartbeat=j["heartbeat"] or 0):
                dead.append(j["job_id"])
                self.finish_job(j, "interrupted", "the worker process is gone")
        return dead

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
        return started

    def jobs_ahead(self, job_id: str) -> int:
        """Active jobs of the same device family ("cuda", "cuda*2", "cuda:0,cuda:1" are one family)
        started or queued before this one."""
        me = self.job(job_id)
        if me is None or me["device"] is None:
            return 0
        family = lambda d: str(d).split(":")[0].split("*")[0]  # noqa: E731
        return sum(1 for a in self.jobs(statuses=ACTIVE)
                   if a["job_id"] != job_id and family(a["device"]) == family(me["device"])
                   and (a["status"] != "queued" or (a["queued_at"] or 0) < (me["queued_at"] or 0)))

    # ---------------------------------------------------------------- metrics
    def insert_steps(self, run_id: str, rows: list[tuple]) -> None:
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?)", [(run_id, *r) for r in rows])

    def last_step(self, run_id: str, before_epoch: int | None = None) -> int | None:
        sql, args = "SELECT MAX(step) AS s FROM steps WHERE run_id=?", [run_id]
        if before_epoch is not None:
            sql += " AND epoch<?"
            args.append(before_epoch)
        s = self._query(sql, args)[0]["s"]
        return None if s is None else int(s)

    def upsert_epoch(self, run_id: str, row: dict) -> None:
        # INSERT OR REPLACE: a resumed run re-logging an epoch never duplicates it
        self._write(_EPOCH_INSERT, (run_id, *[row.get(k) for k in EPOCH_KEYS]))

    def upsert_eval(self, run_id: str, split: str, metrics: dict) -> None:
        self._write("INSERT OR REPLACE INTO evals VALUES (?,?,?)", (run_id, split, json.dumps(metrics)))

    def epochs(self, run_id: str) -> pd.DataFrame:
        import pandas as pd              # not at import: `python -m core --help` stays light
        with self._conn() as c:
            return pd.read_sql_query("SELECT * FROM epochs WHERE run_id=? ORDER BY epoch", c, params=(run_id,))

    def steps(self, run_id: str) -> pd.DataFrame:
        import pandas as pd
        with self._conn() as c:
            return pd.read_sql_query("SELECT * FROM steps WHERE run_id=? ORDER BY step", c, params=(run_id,))

    def step_rows(self, run_id: str) -> list[tuple]:
        return [tuple(r[k] for k in STEP_KEYS) for r in
                self._query("SELECT * FROM steps WHERE run_id=? ORDER BY step", (run_id,))]

    def epoch_rows(self, run_id: str) -> list[dict]:
        return [{k: r[k] for k in EPOCH_KEYS} for r in
                self._query("SELECT * FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,))]

    def evals(self, run_id: str) -> dict:
        """split -> its evaluation; class names percent-decoded (runs evaluated before issue 20
        stored GLDv2's names encoded, as Run.class_names reads them too)."""
        from core.data.readers import decode_name
        out = {r["split"]: json.loads(r["metrics"]) for r in self._query("SELECT * FROM evals WHERE run_id=?", (run_id,))}
        for ev in out.values():
            names = ev.get("names")
            if isinstance(names, list):
                ev["names"] = [decode_name(n) for n in names]
            elif isinstance(names, dict):
                ev["names"] = {k: decode_name(n) for k, n in names.items()}
        return out

    def best_val_accs(self) -> dict:
        return {r["run_id"]: r["best"] for r in self._query(
            "SELECT run_id, MAX(val_acc) AS best FROM epochs GROUP BY run_id")}

    def last_val_accs(self) -> dict:
        """Run id -> the last epoch's validation accuracy (the checkpoint's; SQLite takes the bare
        column from the row that holds the MAX)."""
        return {r["run_id"]: r["val_acc"] for r in self._query(
            "SELECT run_id, val_acc, MAX(epoch) FROM epochs GROUP BY run_id")}

    def curve_stamp(self, run_id: str) -> tuple:
        e = self._query("SELECT COUNT(*) AS n, TOTAL(seconds) AS s FROM epochs WHERE run_id=?", (run_id,))[0]
        s = self._query("SELECT COUNT(*) AS n, MAX(t) AS t FROM steps WHERE run_id=?", (run_id,))[0]
        return e["n"], e["s"], s["n"], s["t"]

    def delete_after(self, run_id: str, epoch: int) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, epoch))
            c.execute("DELETE FROM steps WHERE run_id=? AND epoch>?", (run_id, epoch))

    # ---------------------------------------------------------------- from the folders
    def insert_folder(self, c, folder: RunFolder) -> None:
        """One run folder's rows, inside transaction `c` (rebuild, and adopting a folder whose
        creator died before its row was written)."""
        run_id = folder.dir.name
        config, rec = folder.read_config(), folder.read_record()
        created = rec.get("created") or folder.dir.stat().st_mtime
        status = rec.get("status") or "interrupted"
        if status in ACTIVE and status != "queued" and gone({"pid": rec.get("pid"), "proc": rec.get("proc")}, 0):
            status = "interrupted"           # its worker is gone
        c.execute("INSERT INTO runs (run_id, created, model, data, classes, config, summary, name, notes, tags) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (run_id, created, config.get("model"), config.get("data"), config.get("classes"),
                   json.dumps(config), json.dumps(rec.get("summary") or {}), rec.get("name"), rec.get("notes"),
                   json.dumps(rec.get("tags") or [])))
        c.execute("INSERT INTO jobs (job_id, kind, run_id, args, status, device, pid, proc, heartbeat, created, "
                  "queued_at, started, finished, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  (run_id, rec.get("kind") or "train", run_id, json.dumps(rec.get("args") or {}), status,
                   rec.get("device") or "cpu", rec.get("pid"), rec.get("proc"), time.time(), created,
                   rec.get("queued_at") or created, rec.get("started"), rec.get("finished"), rec.get("error")))
        c.executemany(_EPOCH_INSERT,
                      [(run_id, *[e.get(k) for k in EPOCH_KEYS]) for e in folder.read_epochs()])
        c.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?)",
                      [(run_id, *r) for r in folder.read_steps()])
        c.executemany("INSERT OR REPLACE INTO evals VALUES (?,?,?)",
                      [(run_id, s, json.dumps(m)) for s, m in folder.read_evals().items()])
        c.executemany("INSERT INTO events VALUES (?,?,?,?)",
                      [(run_id, e.get("t"), e.get("kind"), e.get("message")) for e in folder.read_events()])

    def rebuild_from(self, folders: list[Path]) -> None:
        """A fresh database holding exactly these folders' runs; a damaged one is kept beside, renamed."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            f = Path(str(self.db) + suffix)
            if f.exists():
                os.replace(f, Path(f"{self.db}.damaged-{stamp}{suffix}"))
        c = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        try:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(SCHEMA)
            c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            c.execute("BEGIN IMMEDIATE")
            for folder in folders:
                self.insert_folder(c, RunFolder(folder))
            c.execute("COMMIT")
        finally:
            c.close()


def _decode(r: dict) -> dict:
    for k in JSON_FIELDS:
        if k in r:
            r[k] = json.loads(r[k]) if r.get(k) else [] if k in LIST_FIELDS else {}
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
    added = {"runs": [("tags", "TEXT")], "epochs": [(k, "REAL") for k in RESOURCE_KEYS]}   # schema 4
    for table, new in added.items():
        have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
        for col, kind in new:
            if col not in have:
                c.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
    c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
