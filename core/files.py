"""The two file habits every module shares: write a file whole or not at all, and take a lock.

`atomic_write` writes a temporary file beside the target and renames it over (os.replace is
atomic on POSIX), so a reader never sees half a file and a crash leaves the old one. `file_lock`
is an advisory fcntl lock on a file beside what it guards (released when the process dies, so a
killed holder never wedges the others). `append` adds text in one write: a line cut short by a
crash is skipped by the readers.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

TMP_SUFFIX = ".tmp"          # temp files are ".<name>.<pid>.tmp" beside their target


def temp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def atomic_write(path: str | os.PathLike, data: str | bytes, tmp: str | os.PathLike | None = None) -> Path:
    """Write `data` (text or bytes) to `path` whole or not at all. `tmp`: the temporary file's
    path where a cleanup or a reader knows another name (same file system as `path`), else
    temp_path(path)."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else temp_path(path)
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, tmp: str | os.PathLike | None = None):
    """For writers that want a path (pandas, torch.save): yields the temp path (`tmp` as in
    atomic_write), renamed over `path` when the block ends without an error, removed when it does not."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append(path: str | os.PathLike, text: str) -> None:
    """Append in one write (a torn last line is skipped when the file is read back)."""
    with open(path, "a") as f:
        f.write(text)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, shared: bool = False, wait: bool = True):
    """An exclusive (or shared) advisory lock held while the block runs; `path` is the lock file.
    Yields whether it is held: always True when waiting; with wait=False, False at once when
    another process holds it (the block then runs without the lock and must check)."""
    import fcntl
    with open(path, "a") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sha256_of(path: str | os.PathLike) -> str | None:
    """The file's sha256 (hex), or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None
