"""download(): choose the images, then fetch them (or extract them from tars), keep the books and
write the report. Resumable: an image whose file exists is never fetched again ("already"); a file
only exists once complete (written to OUT/.download/tmp, then `os.replace`d). A stopped or
interrupted run writes its unfinished shards' outcomes too (without the success file), so a rerun
fetches only the transient failures (timeouts, 5xx) and what was never tried; what a killed run
left in OUT/.download/tmp is removed at the next start."""
from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from core.data.download import report as rep
from core.data.download.base import DEFAULTS, MAX_BYTES, OK, REPORT, SHARD_SIZE, STATUSES, parse_shard, whole
from core.data.download.client import fetch_all
from core.data.download.guard import Policy, allowed_by_env
from core.data.download.images import clean_leftovers
from core.data.download.select import needs_urls, pick_top
from core.data.download.shards import Run, Shard, carry_over, plan_key, state_dir, still_there, url_shards, write_json
from core.data.download.tars import import_tars, tar_files
from core.errors import UserError, write_error
from core.paths import ensure_dir


def check(csv, out, top, clean: bool = False, max_side: int = DEFAULTS["max_side"],
          workers: int = DEFAULTS["workers"], shard=DEFAULTS["shard"], tars=None) -> tuple[Path, Path, list[Path]]:
    """Validate the arguments cheaply (no CSV body is read, only its header): (csv, out, tar files) or
    a UserError."""
    if not csv or not str(csv).strip():
        raise UserError("Give the Google Landmarks train.csv to download from (--csv).")
    csv = Path(str(csv).strip()).expanduser()
    if not csv.is_file():
        raise UserError(f"{csv} does not exist; pass the path of Google Landmarks' train.csv "
                        f"(id,url,landmark_id).")
    if not out or not str(out).strip():
        raise UserError("Give the folder to download into (--out).")
    top, max_side, workers = (whole(v, name) for v, name in ((top, "--top"), (max_side, "--max-side"),
                                                             (workers, "--workers")))
    if top < 1:
        raise UserError(f"--top must be at least 1 (the number of most frequent classes to get); got {top}.")
    if max_side != 0 and not 16 <= max_side <= 8192:
        raise UserError(f"--max-side must be 0 (keep the original size) or between 16 and 8192 px; got {max_side}.")
    if not 1 <= workers <= 1024:
        raise UserError(f"--workers must be between 1 and 1024; got {workers}.")
    parse_shard(shard)
    if clean and not (csv.parent / "train_clean.csv").is_file():
        raise UserError(f"--clean needs GLDv2's train_clean.csv beside {csv.name} in {csv.parent}; "
                        f"download it too, or leave --clean off.")
    files = tar_files(tars) if tars else []
    if not files:
        needs_urls(csv)
    out = Path(str(out).strip()).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"Cannot write the download folder {out} (it is a file); choose a folder.")
    return csv, out, files


def download(csv, out, top: int, clean: bool = False, max_side: int = DEFAULTS["max_side"],
             workers: int = DEFAULTS["workers"], shard=DEFAULTS["shard"], tars=None,
             progress: Callable | None = None, should_stop: Callable | None = None,
             client_factory: Callable | None = None, timeout: float = 20.0, retries: int = 2,
             backoff: float = 0.5, shard_size: int = SHARD_SIZE, threads: int | None = None,
             allow_private: bool | None = None, max_bytes: int = MAX_BYTES) -> dict:
    """Download (or, with `tars`, extract) the images of the `top` most frequent classes into `out`.

    progress(done, total, counts): counts has one entry per STATUSES outcome plus "rate" (images
    per second decided in this run), "eta_s" and "seconds". should_stop(): checked between images;
    when it turns true the run stops within STOP_GRACE_S, writes its bookkeeping and train.csv and
    returns with "stopped": True. client_factory(connections, timeout) -> httpx.AsyncClient, called
    once per client (workers are spread over clients of at most POOL_SPLIT connections).
    allow_private: fetch from loopback and private addresses too (None: LANDMARKS_ALLOW_PRIVATE);
    metadata and link-local addresses are refused whatever it says. max_bytes: one body's cap.
    Returns the report also written to OUT/download_report.json."""
    csv, out, files = check(csv, out, top, clean, max_side, workers, shard, tars)
    k, n = parse_shard(shard)
    ensure_dir(out, "download", "choose a folder you can write to")
    policy = Policy(allowed_by_env() if allow_private is None else allow_private)
    work = pick_top(csv, top, clean, urls=not files)
    classes = work.attrs["classes"]
    source = "tars" if files else "urls"
    threads = threads or min(8, max(2, os.cpu_count() or 2))
    run = Run(work, out, progress, should_stop)
    shards: list[Shard] = []
    rows: list[int] | None = None
    try:
        run.tmp, _ = clean_leftovers(out)
        state = state_dir(out, plan_key(work, shard_size, source))
        if files:
            files = [f for j, f in enumerate(files) if j % n == k - 1]
            run.total = len(work)
        else:
            shards = url_shards(len(work), shard_size, k, n, state)
            rows = [i for s in shards for i in s.rows]
            run.total = len(rows)
    except OSError as e:
        raise write_error(e, out, "download", any_error=True) from None
    run.report(force=True)
    stopped_by_signal = False
    with ThreadPoolExecutor(threads, thread_name_prefix="download") as pool:
        try:
            if files:
                shards = import_tars(run, files, state, pool, max_side, threads)
            else:
                todo = _to_visit(run, shards)
                if todo:
                    asyncio.run(fetch_all(run, todo, pool, max_side, int(workers), float(timeout), int(retries),
                                          float(backoff), client_factory, policy, int(max_bytes)))
                if run.fatal:
                    raise run.fatal
        except KeyboardInterrupt:
            stopped_by_signal = True
            raise
        except OSError as e:
            err = write_error(e, out, "download")
            if err is None:
                raise
            raise err from None
        finally:
            try:
                for s in shards:
                    if not s.finished and (s.dirty or s.status):
                        s.save(finished=False)
                on_disk = rep.write_index(out, work)
                names = rep.copy_names(csv, out, set(classes))
            except OSError as e:
                if not stopped_by_signal:
                    raise write_error(e, out, "download", any_error=True) from None
                raise
    if files and not run.stopping:
        run.counts["missing"] = max(0, run.total - run.done)
        run.done = run.total
    run.report(force=True)
    seconds = time.monotonic() - run.t0
    report = {
        "out": str(out), "csv": str(csv), "source": source, "top": int(top), "clean": bool(clean),
        "max_side": int(max_side), "workers": int(workers), "shard": f"{k}/{n}",
        "classes": len(classes), "listed": int(len(work)), "total": run.total,
        **{s: run.counts[s] for s in STATUSES},
        "on_disk": int(on_disk.sum()), "stopped": bool(run.stopping), "seconds": round(seconds, 2),
        "images_per_s": round(run.resolved_now / seconds, 2) if seconds > 0 else None,
        "names": names, "tars": [str(f) for f in files] if files else None,
        "per_class": rep.per_class(run, work, rows, shards, on_disk, classes,
                                   "missing" if files and not run.stopping else ""),
        "examples": rep.examples(run, shards),
    }
    report["short_classes"] = sum(1 for r in report["per_class"] if r["short"])
    try:
        write_json(out / REPORT, report)
    except OSError as e:
        raise write_error(e, out, "download", any_error=True) from None
    return report


def _to_visit(run: Run, shards: list[Shard]) -> list[Shard]:
    """The shards with something left to fetch; a finished one counts its outcomes as they were."""
    todo = []
    for s in shards:
        if s.file.exists():
            s.load()
        if s.success.exists() and still_there(run, s) and not s.worth_a_visit():
            for i in s.rows:               # finished earlier: nothing to fetch
                st = s.status.get(run.ids[i], "already")
                run.add("already" if st in OK else st, now=False)
            s.finished = True
            continue
        s.success.unlink(missing_ok=True)
        s.finished = False
        carry_over(s, run)               # permanent failures of a stopped run are kept
        todo.append(s)
    return todo


__all__ = ["check", "download"]
