"""What a killed preparation leaves behind (issue 19 #12): its worker processes die with it, and
its temporary files are removed by the next preparation."""
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from PIL import Image

from core.data.prepared import prepare, store_dir
from core.data.prepared.pool import _alive
from core.data.prepared.store import TEMP_FILES

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from core.data.prepared import prepare

def progress(done, total):
    if done == 1:
        print("decoding", flush=True)
        time.sleep(600)        # killed here, with its pool started

if __name__ == "__main__":
    prepare({paths!r}, 8, key="killed", workers=2, progress=progress)
"""


def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (200, 40, 90)).save(folder / "0.png")
    data = (folder / "0.png").read_bytes()
    for i in range(1, n):
        (folder / f"{i}.png").write_bytes(data)
    return [str(folder / f"{i}.png") for i in range(n)]


def _descendants(pid: int) -> set[int]:
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent.items() if pp == p}
        out |= kids
        todo.extend(kids)
    return out


@pytest.mark.e2e
def test_pool_workers_die_with_a_killed_caller(tmp_path):
    paths = _images(tmp_path / "img", 300)                     # >= POOL_MIN: decoded by a pool of 2
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), paths=paths))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "decoding"
        helpers = _descendants(child.pid)                      # the forkserver and its 2 workers (at least)
        assert len(helpers) >= 3, helpers
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in helpers):
            time.sleep(0.1)
        assert not [p for p in helpers if _alive(p)]
    finally:
        child.kill()
        child.wait()


def test_a_zombie_is_not_alive():
    p = subprocess.Popen(["sleep", "30"])
    assert _alive(p.pid) and _alive(os.getpid())
    p.kill()
    time.sleep(0.2)                                            # dead, not yet reaped
    assert not _alive(p.pid)
    p.wait()
    assert not _alive(p.pid)


def test_temporary_files_a_crash_left_are_removed_where_no_one_works(tmp_path):
    paths = _images(tmp_path / "img", 3)
    idle, busy = store_dir("idle", 8), store_dir("busy", 8)
    for d in (idle, busy, store_dir("mine", 8)):
        for name in TEMP_FILES + ("notes.tmp",):
            (d / name).write_bytes(b"left by a killed process")
    with open(busy / "lock", "w") as held:                     # another process is preparing there
        fcntl.flock(held, fcntl.LOCK_EX)
        prep = prepare(paths, 8, key="mine")
    assert prep.ok.all() and prep.decoded == 3
    for d, kept in ((store_dir("mine", 8), set()), (idle, set()), (busy, set(TEMP_FILES))):
        assert {p.name for p in d.glob("*.tmp")} == kept | {"notes.tmp"}, d    # never a file not its own
