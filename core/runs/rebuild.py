"""Rebuild the run index (runs.db) from the run folders, which are the truth.

A damaged database is renamed `runs.db.damaged-<time>` (never deleted); a missing or empty one
is simply recreated. Every folder with a config.json becomes a run again, with its record,
per-epoch metrics, step log, evaluations and events. A run whose worker is gone is marked
interrupted (it can be resumed from its checkpoint).
"""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from pathlib import Path

from core.runs.store import (ACTIVE, EPOCH_KEYS, SCHEMA, SCHEMA_VERSION, STEP_KEYS, RunStore, alive)


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


def _read_steps(path: Path) -> list[tuple]:
    rows = []
    try:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                try:
                    rows.append(tuple(_num(r[k]) for k in STEP_KEYS))
                except (KeyError, TypeError, ValueError):
                    continue
    except OSError:
        pass
    return [(int(r[0]), int(r[1]), *r[2:]) for r in rows if r[0] is not None and r[1] is not None]


def _fresh_db(store: RunStore) -> None:
    """Move a damaged or empty database (and its WAL files) aside and create the schema."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(store.db) + suffix)
        if f.exists():
            os.replace(f, Path(f"{store.db}.damaged-{stamp}{suffix}"))
    c = sqlite3.connect(store.db, isolation_level=None)
    try:
        c.execute("PRAGMA journal_mode=WAL")
        c.executescript(SCHEMA)
        c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    finally:
        c.close()


def _insert_run(c, folder: Path) -> None:
    run_id = folder.name
    config = _read_json(folder / "config.json", {})
    rec = _read_json(folder / "run.json", {})
    created = rec.get("created") or folder.stat().st_mtime
    status = rec.get("status") or "interrupted"
    if status in ACTIVE and not (status == "queued" or alive(rec.get("pid"), rec.get("proc"))):
        status = "interrupted"           # its worker is gone
    c.execute("INSERT INTO runs (run_id, created, model, data, classes, config, summary, name, notes) "
              "VALUES (?,?,?,?,?,?,?,?,?)",
              (run_id, created, config.get("model"), config.get("data"), config.get("classes"),
               json.dumps(config), json.dumps(rec.get("summary") or {}), rec.get("name"), rec.get("notes")))
    c.execute("INSERT INTO jobs (job_id, kind, run_id, args, status, device, pid, proc, heartbeat, created, "
              "queued_at, started, finished, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
              (run_id, "train", run_id, json.dumps(rec.get("args") or {}), status, rec.get("device") or "cpu",
               rec.get("pid"), rec.get("proc"), time.time(), created, rec.get("queued_at") or created,
               rec.get("started"), rec.get("finished"), rec.get("error")))
    for e in _read_json(folder / "epochs.json", []):
        c.execute("INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?,?)", (run_id, *[e.get(k) for k in EPOCH_KEYS]))
    c.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?)",
                  [(run_id, *r) for r in _read_steps(folder / "steps.csv")])
    for split, m in _read_json(folder / "evals.json", {}).items():
        c.execute("INSERT OR REPLACE INTO evals VALUES (?,?,?)", (run_id, split, json.dumps(m)))
    c.executemany("INSERT INTO events VALUES (?,?,?,?)",
                  [(run_id, e.get("t"), e.get("kind"), e.get("message")) for e in _read_lines(folder / "events.jsonl")])


def rebuild(store: RunStore) -> dict:
    folders = store.run_folders()
    _fresh_db(store)
    c = sqlite3.connect(store.db, timeout=30, isolation_level=None)
    try:
        c.execute("BEGIN IMMEDIATE")
        for folder in folders:
            _insert_run(c, folder)
        c.execute("COMMIT")
    finally:
        c.close()
    return {"runs": len(folders), "database": str(store.db)}
