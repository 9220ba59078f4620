"""The one liveness rule: is the process that a record names still the one running?

A pid alone is not enough (after a reboot or a wrap-around the same pid can belong to another
program), so records keep the process identity 'boot id:start time' beside the pid. A record
of another host is never judged dead from here. A record with no pid at all (a job claimed but
whose process never reported back) is dead once its heartbeat is older than START_GRACE_S.
"""
from __future__ import annotations

import os
import socket
import time

START_GRACE_S = 60           # a claimed job whose worker never reported back is dead after this


def process_identity(pid) -> str | None:
    """'boot id:start time' of a live process; None where /proc is missing."""
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


def me() -> dict:
    """This process, as records name it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "proc": process_identity(os.getpid())}


def gone(record: dict | None, heartbeat: float | None = None, grace_s: float = START_GRACE_S) -> bool:
    """The one rule: a record {pid, proc[, host]} names a dead process. A record of another host
    is alive as far as this machine can tell; no pid: dead once `heartbeat` is grace_s old."""
    record = record or {}
    if record.get("host") not in (None, socket.gethostname()):
        return False
    if record.get("pid"):
        return not alive(record["pid"], record.get("proc"))
    return heartbeat is not None and time.time() - heartbeat > grace_s
