"""Decoding on the CPU: one image (`_decode`), runs of images written straight into the store
(`_decode_rows`), in this process or in a pool of worker processes.

Scaling (issue 11). A process pool of one worker per usable core decodes runs of paths and
writes each row itself, at the offset the index will give it, returning only (ok, reason, crc)
per image: the parent no longer unpickles, checksums and writes every 150 KB row and looks its
file up in pandas (that serial work, 0.5-0.8 ms an image on a 2-core VM, is what held 16 cores to
5x one core in issue 11). Workers are forked from a forkserver that imported this package once,
instead of each spawned worker importing pandas and re-running the caller's main module.
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal a process gets when its parent dies
WATCH_S = 0.5  # s between a worker's checks that its caller still runs
TASK = 32  # images per pool task: 32 paths out, 32 (ok, reason, crc) back
last_stats: dict = {}  # how the last prepare() decoded: {"how": "gpu"|"pool"|"serial", "gpu": n, "cpu": n}


def _decode(args):
    """Worker: path -> (bytes | None, reason). Kept import-light for spawned workers."""
    path, size = args
    from core.data.readers import open_image, resize_square
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file (0 bytes)"
        im = resize_square(open_image(path, draft=size), size)
        return im.tobytes(), ""               # packed RGB rows: what np.asarray(im).tobytes() gave
    except FileNotFoundError:
        return None, "file not found"
    except Exception as e:  # noqa: BLE001 - any decoder failure makes the file unusable
        return None, f"{type(e).__name__}: {e}".strip()[:200]


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:                 # macOS
        n = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _pwrite(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _decode_rows(args):
    """Worker: decode each (row, path) and write it into images.u8 at its row; returns
    [(ok, reason, crc)]. The parent commits the rows to the index after this returns."""
    data, size, items = args
    row_bytes = size * size * 3
    blank = bytes(row_bytes)
    out = []
    fd = os.open(data, os.O_WRONLY)
    try:
        for row, path in items:
            buf, reason = _decode((path, size))
            ok = buf is not None
            buf = buf if ok else blank
            _pwrite(fd, buf, row * row_bytes)
            out.append((ok, reason, zlib.crc32(buf)))
    finally:
        os.close(fd)
    return out


def _context():
    """forkserver: each worker is forked from a clean server process that imported this module
    once (spawn made every worker import pandas and re-run the caller's __main__); never fork the
    caller itself, which may hold CUDA/OpenMP state."""
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        ctx.set_forkserver_preload(["core.data.prepared.pool", "core.data.readers"])
    return ctx


def _executor(workers: int):
    """The CPU pool (the GPU path shares whole batches with it). An executor, not mp.Pool: a worker that dies (a caller script without
    `if __name__ == "__main__":` kills each one at start) breaks it with an error, where mp.Pool
    would replace it for ever and hang."""
    return ProcessPoolExecutor(workers, mp_context=_context(), initializer=_die_with, initargs=(os.getpid(),))


def _die_with(caller: int) -> None:
    """Worker initializer: the worker ends when the process it decodes for does, kill -9
    included, instead of waiting on its task queue for ever (issue 19 #12: 4 workers lived 7
    minutes, 240 MB, after their caller was killed). A thread watches the caller's pid: that is
    what ends forkserver workers, whose parent, the forkserver, lives as long as they do (each
    holds its alive-pipe). The kernel's parent-death signal (Linux) ends spawned workers, whose
    parent is the caller, at once, and any worker whose forkserver is killed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):   # no prctl in this libc: the watch below still runs
            pass
    threading.Thread(target=_watch, args=(caller,), name="watch-caller", daemon=True).start()


def _watch(caller: int) -> None:
    while _alive(caller):
        time.sleep(WATCH_S)
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs: a killed one that nobody has reaped yet (a zombie) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # it exists, as another user's
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): os.kill said it exists
        return True


def _pool_rows(data: Path, todo: list[str], first: int, size: int, workers: int):
    """(ok, reason, crc) per path in order, each yielded once its row is in the file. If the pool
    breaks, this process decodes what is left."""
    items = [(first + i, os.path.abspath(p)) for i, p in enumerate(todo)]
    tasks = [(str(data), size, items[i:i + TASK]) for i in range(0, len(items), TASK)]
    done = 0
    try:
        with _executor(min(workers, len(tasks))) as pool:
            for res in pool.map(_decode_rows, tasks):
                done += 1
                yield from res
    except BrokenProcessPool:
        for task in tasks[done:]:
            yield from _decode_rows(task)


def _serial_rows(f, todo: list[str], size: int, row_bytes: int):
    """In this process, written through `f` (positioned at the first new row)."""
    blank = bytes(row_bytes)
    for p in todo:
        buf, reason = _decode((p, size))
        row = buf if buf is not None else blank
        _write_row(f, row)
        yield buf is not None, reason, zlib.crc32(row)


def _write_row(f, row: bytes) -> None:
    f.write(row)
