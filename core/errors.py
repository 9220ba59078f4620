"""One exception type for anything the user can fix; the CLI and pages show its message as-is.
And the one wording of a disk problem met while writing (full, read-only, not permitted)."""
from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """Bad input: the message is one sentence that says what is wrong and what to do."""


class Cancelled(Exception):
    """Raised inside a job when its cancel flag is set; a training run keeps its last checkpoint."""


class Pruned(Cancelled):
    """Raised inside a sweep's trial run that its sweep's pruner stopped after `epoch`."""

    def __init__(self, epoch: int, message: str):
        super().__init__(message)
        self.epoch = epoch


# ------------------------------------------------------------------ disk problems while writing

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_error(e: OSError, p: Path, what: str, fix: str = "choose a writable one",
                any_error: bool = False) -> UserError | None:
    """The one sentence for an OSError met while writing under `p`; None when it is not a disk
    problem the user can fix (and `any_error` is off), so that a real bug keeps its traceback."""
    reason = (e.strerror or str(e)).lower()
    if e.errno in DISK_FULL:
        return UserError(f"The disk holding {p} is full ({reason}); free space and run again.")
    if any_error or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"Cannot write the {what} folder {p} ({reason}); {fix}.")
    return None


@contextmanager
def writing(p: Path, what: str, fix: str = "choose a writable one", any_error: bool = False):
    """Turns a full disk or a folder that cannot be written into write_error's sentence."""
    try:
        yield
    except OSError as e:
        err = write_error(e, p, what, fix, any_error)
        if err is None:
            raise
        raise err from None
