"""Issue 19 #11 and #12: one process of a two-process run killed — the CLI ends with one sentence (no
traceback on the terminal; the processes' tracebacks go to the run's log) and leaves nothing behind in
/tmp (the processes' reports live in the run folder)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.runs.store import RunStore

ROOT = Path(__file__).resolve().parent.parent


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e for e in env if e.startswith(b"RANK=")]
    return int(ranks[0][5:]) if ranks else None


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(10):
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid == ancestor:
            return True
    return False


def test_killing_one_process_of_two_ends_in_one_sentence_and_leaves_no_tmp_folder(home, demo_root):
    before = set(Path("/tmp").glob("landmarks-ddp-*"))
    env = dict(os.environ, LANDMARKS_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "core", "train", "--data", str(demo_root), "--model", "small_cnn",
                          "--weights", "none", "--classes", "3", "--epochs", "500", "--image-size", "16",
                          "--device", "cpu", "--nproc", "2"], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        store, t0, victim = RunStore(), time.time(), None
        while time.time() - t0 < 120 and victim is None:
            runs = store.list()
            if runs and not store.epochs(runs[0]["run_id"]).empty:
                victim = next((int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()
                               and _rank_of(int(d.name)) == 1 and _descends_from(int(d.name), p.pid)), None)
            time.sleep(0.2)
        assert victim, "the run stored no epoch in time"
        os.kill(victim, signal.SIGKILL)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]          # (a progress bar may still hold the start of the line)
    assert "error: Process 1 of 2 stopped without a report (killed by SIGKILL)" in last, err[-1000:]
    run = store.list()[0]
    assert run["status"] == "failed" and run["error"].startswith("Process 1 of 2")
    assert set(Path("/tmp").glob("landmarks-ddp-*")) == before
    assert not store.run(run["run_id"]).ddp_dir.exists()                # the launch's reports are cleaned
