"""Run store: one folder per run (config, split manifest, checkpoints, log) and one SQLite
database in WAL mode for status and metrics, so a reader (the dashboard) sees progress live
while a writer (the worker) trains. Every write is one short transaction.
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

SCHEMA_VERSION = 2           # 2: runs.proc (worker identity, survives pid reuse after a reboot)
ACTIVE = ("queued", "starting", "running")
FINAL = ("done", "failed", "cancelled", "interrupted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created REAL, status TEXT, model TEXT, data TEXT, classes INTEGER,
    device TEXT, config TEXT, pid INTEGER, heartbeat REAL, started REAL, finished REAL,
    cancel INTEGER DEFAULT 0, resume INTEGER DEFAULT 0, error TEXT, progress TEXT, summary TEXT,
    queued_at REAL, proc TEXT);
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


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = runs_dir(root)
        self.db = self.root / "runs.db"
        try:
            with self._conn() as c:
                c.executescript(SCHEMA)
                c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                v = int(c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
                if v < SCHEMA_VERSION:
                    _migrate(c, v)
                    v = SCHEMA_VERSION
        except sqlite3.DatabaseError as e:
            raise UserError(f"Cannot open the run database {self.db} ({e}); the runs folder must be writable "
                            "and the file a database written by this program.") from None
        if v > SCHEMA_VERSION:
            raise UserError(f"{self.db} was written by a newer version (schema {v}); upgrade this program.")

    @contextmanager
    def _conn(self):
        c = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.row_factory = sqlite3.Row
        try:
            yield c
        finally:
            c.close()

    def execute(self, sql: str, args=()) -> None:
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            c.execute(sql, args)
            c.execute("COMMIT")

    def query(self, sql: str, args=()) -> list[dict]:
        with self._conn() as c:
            return [dict(r) for r in c.execute(sql, args).fetchall()]

    # ------------------------------------------------------------ runs
    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def create(self, config, status: str = "queued", device: str = "cpu") -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + f"{config.model}-" + uuid.uuid4().hex[:4]
        d = self.run_dir(run_id)
        d.mkdir(parents=True)
        _atomic_write(d / "config.json", config.to_json())
        now = time.time()
        self.execute("INSERT INTO runs (run_id, created, status, model, data, classes, device, config, queued_at)"
                     " VALUES (?,?,?,?,?,?,?,?,?)",
                     (run_id, now, status, config.model, config.data, config.classes, device, config.to_json(), now))
        self.event(run_id, "created", f"status {status}")
        return run_id

    def get(self, run_id: str) -> dict | None:
        rows = self.query("SELECT * FROM runs WHERE run_id=?", (run_id,))
        return _decode_run(rows[0]) if rows else None

    def list(self) -> list[dict]:
        self.reap()
        return [_decode_run(r) for r in self.query("SELECT * FROM runs ORDER BY created DESC")]

    def set(self, run_id: str, **fields) -> None:
        if "pid" in fields and "proc" not in fields:
            fields["proc"] = process_identity(fields["pid"])
        fields = {k: json.dumps(v) if k in ("progress", "summary") else v for k, v in fields.items()}
        cols = ", ".join(f"{k}=?" for k in fields)
        self.execute(f"UPDATE runs SET {cols} WHERE run_id=?", (*fields.values(), run_id))

    def event(self, run_id: str, kind: str, message: str = "") -> None:
        self.execute("INSERT INTO events VALUES (?,?,?,?)", (run_id, time.time(), kind, message))

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run and run["status"] in ("running", "starting") and _alive(run.get("pid")):
            raise RuntimeError(f"Run {run_id} is still running; cancel it before deleting.")
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            for t in ("runs", "epochs", "steps", "evals", "events"):
                c.execute(f"DELETE FROM {t} WHERE run_id=?", (run_id,))
            c.execute("COMMIT")
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def reap(self) -> list[str]:
        """Mark runs whose worker died (killed, machine rebooted) as interrupted."""
        rows = self.query("SELECT run_id, pid, proc, heartbeat FROM runs WHERE status IN ('running','starting')")
        dead = [r["run_id"] for r in rows
                if (not _alive(r["pid"]) and time.time() - (r["heartbeat"] or 0) > 5)
                or (r["proc"] and process_identity(r["pid"]) != r["proc"])]   # pid reused by another process
        for run_id in dead:
            self.set(run_id, status="interrupted")
            self.event(run_id, "interrupted", "worker process is gone")
        return dead

    # ------------------------------------------------------------ metrics
    def log_step(self, run_id: str, rows: list[tuple]) -> None:
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            c.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?)", [(run_id, *r) for r in rows])
            c.execute("COMMIT")

    def log_epoch(self, run_id: str, row: dict) -> None:
        keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
        # INSERT OR REPLACE: a resumed run re-logging an epoch never duplicates it
        self.execute("INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?,?)",
                     (run_id, *[row.get(k) for k in keys]))

    def log_eval(self, run_id: str, split: str, metrics: dict) -> None:
        self.execute("INSERT OR REPLACE INTO evals VALUES (?,?,?)", (run_id, split, json.dumps(metrics)))

    def epochs(self, run_id: str) -> pd.DataFrame:
        with self._conn() as c:
            return pd.read_sql_query("SELECT * FROM epochs WHERE run_id=? ORDER BY epoch", c, params=(run_id,))

    def steps(self, run_id: str) -> pd.DataFrame:
        with self._conn() as c:
            return pd.read_sql_query("SELECT * FROM steps WHERE run_id=? ORDER BY step", c, params=(run_id,))

    def evals(self, run_id: str) -> dict:
        return {r["split"]: json.loads(r["metrics"]) for r in self.query("SELECT * FROM evals WHERE run_id=?", (run_id,))}

    def events(self, run_id: str) -> list[dict]:
        return self.query("SELECT * FROM events WHERE run_id=? ORDER BY t", (run_id,))

    def truncate_after(self, run_id: str, epoch: int) -> None:
        """Drop metrics past `epoch` (resuming from its checkpoint re-runs what follows)."""
        self.execute("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, epoch))
        self.execute("DELETE FROM steps WHERE run_id=? AND epoch>?", (run_id, epoch))


def _decode_run(r: dict) -> dict:
    for k in ("config", "progress", "summary"):
        r[k] = json.loads(r[k]) if r.get(k) else {}
    return r


def _migrate(c, version: int) -> None:
    """Bring an older database up to SCHEMA_VERSION in place (runs and metrics are kept)."""
    if version < 2:
        cols = {r[1] for r in c.execute("PRAGMA table_info(runs)")}
        if "proc" not in cols:
            c.execute("ALTER TABLE runs ADD COLUMN proc TEXT")
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


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process is dead too
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _atomic_write(path: Path, text: str) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
