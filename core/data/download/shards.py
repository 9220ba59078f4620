"""Bookkeeping: the chosen rows cut into shards, each shard's outcomes kept in OUT/.download, and
the counters of one download() call.

The chosen rows, in CSV order, are cut into shards of SHARD_SIZE images; with shard=(K, N) this
machine takes shards K-1, K-1+N, ... so several machines split one CSV. Each shard's outcome
(id -> status) is written atomically to `OUT/.download/shard_00012.json`, and
`shard_00012.success` marks it finished: a rerun skips a finished shard (after checking its images
are still on disk), never retries its dead links or non-images, and revisits it only for its
transient failures (timeouts, 5xx, broken transfers) and for URLs the address policy refused.
`OUT/.download/plan.json` holds a hash of the chosen ids: a different --top/--clean/CSV starts the
bookkeeping afresh (the images on disk are kept and still count)."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pandas as pd

from core.data.download.base import OK, STATE, STATUSES, permanent
from core.data.download.images import target
from core.files import atomic_write


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj))     # .<name>.<pid>.tmp: what images._FILE_TMP cleans up


class Shard:
    """A slice of the work: rows [start, stop) of the chosen images (or one tar file)."""

    def __init__(self, name: str, rows: range, state: Path):
        self.name, self.rows = name, rows
        self.file, self.success = state / f"{name}.json", state / f"{name}.success"
        self.status: dict[str, str] = {}      # id -> outcome
        self.why: dict[str, str] = {}         # id -> detail of a failure
        self.pending = 0
        self.queued_all = False
        self.dirty = False
        self.finished = False

    def load(self) -> None:
        try:
            d = json.loads(self.file.read_text())
            self.status, self.why = dict(d.get("status") or {}), dict(d.get("why") or {})
        except (OSError, ValueError):
            self.status, self.why = {}, {}

    def record(self, image_id: str, status: str, why: str = "") -> None:
        self.status[image_id] = status
        if why:
            self.why[image_id] = why
        self.dirty = True

    def save(self, finished: bool) -> None:
        write_json(self.file, {"shard": self.name, "status": self.status, "why": self.why,
                               "counts": {s: sum(1 for v in self.status.values() if v == s) for s in STATUSES},
                               "finished": finished, "time": time.time()})
        if finished:
            self.success.write_text(f"{len(self.status)}\n")
            self.finished = True
        self.dirty = False

    def worth_a_visit(self) -> bool:
        """Something a rerun could still get: a transient failure or a refused URL."""
        return any(st not in OK and not permanent(st, self.why.get(i, "")) for i, st in self.status.items())


class Run:
    """Counters, shards and callbacks of one download() call."""

    def __init__(self, work: pd.DataFrame, out: Path, progress, should_stop):
        self.ids = work["id"].tolist()
        self.urls = work["url"].tolist()
        self.labels = work["landmark_id"].tolist()
        self.out = out
        self.tmp: Path | None = None     # where images are written before their rename
        self.counts = dict.fromkeys(STATUSES, 0)
        self.done = self.total = 0
        self._progress, self._should_stop = progress, should_stop
        self.stopping = False
        self.fatal: BaseException | None = None
        self.t0 = time.monotonic()
        self.resolved_now = 0            # outcomes decided by network/decoding in this run
        self._last = 0.0
        self.lock = threading.Lock()

    def add(self, status: str, now: bool = True) -> None:
        with self.lock:
            self.counts[status] += 1
            self.done += 1
            if now and status != "already":
                self.resolved_now += 1

    def stop_requested(self) -> bool:
        if not self.stopping and self._should_stop is not None and self._should_stop():
            self.stopping = True
        return self.stopping

    def report(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        rate = self.resolved_now / max(now - self.t0, 1e-6)
        left = self.total - self.done
        eta = round(left / rate, 1) if rate > 0 and left else (0.0 if not left else None)
        extra = {"rate": round(rate, 2), "eta_s": eta, "seconds": round(now - self.t0, 2)}
        self._progress(self.done, self.total, {**self.counts, **extra})


def plan_key(work: pd.DataFrame, shard_size: int, source: str) -> str:
    h = hashlib.sha1(f"{source}|{shard_size}|".encode())
    h.update("\n".join(work["id"]).encode())
    h.update("\n".join(work["landmark_id"]).encode())
    return h.hexdigest()[:20]


def state_dir(out: Path, key: str) -> Path:
    """OUT/.download for this plan; bookkeeping of another plan is cleared (images are kept)."""
    state = out / STATE
    state.mkdir(exist_ok=True)
    plan = state / "plan.json"
    try:
        old = json.loads(plan.read_text()).get("key")
    except (OSError, ValueError):
        old = None
    if old != key:
        for f in state.iterdir():
            if f.is_file() and (f.name.startswith(("shard_", "tar_"))):
                f.unlink(missing_ok=True)
        write_json(plan, {"key": key, "time": time.time()})
    return state


def url_shards(n_rows: int, shard_size: int, k: int, n: int, state: Path) -> list[Shard]:
    """This machine's shards (K of N) of `n_rows` chosen rows."""
    count = -(-n_rows // shard_size)
    return [Shard(f"shard_{j:05d}", range(j * shard_size, min(n_rows, (j + 1) * shard_size)), state)
            for j in range(count) if j % n == k - 1]


def still_there(run: Run, s: Shard) -> bool:
    return all(target(run.out, run.ids[i]).exists() for i in s.rows if s.status.get(run.ids[i]) in OK)


def carry_over(s: Shard, run: Run) -> None:
    """A shard to (re)visit: keep its permanent failures, forget the rest (timeouts, 5xx and
    refused URLs are tried again; what is on disk counts as already there)."""
    keep = {i: st for i, st in s.status.items() if permanent(st, s.why.get(i, ""))}
    s.why = {i: w for i, w in s.why.items() if i in keep}
    s.status = keep
    if keep:
        todo = []
        for i in s.rows:
            st = keep.get(run.ids[i])
            if st is None:
                todo.append(i)
            else:
                run.add(st, now=False)
        s.rows = todo
