"""Class model images generated in the background: `python -m core.runs.classmodel_jobs RUN ...`.

The page calls `start()`, which spawns this module in a new session (so page reruns and
closed tabs do not kill it), and polls `status()`. The child loads the run's model once and
calls `explain_io.class_model_png` per class; the PNGs are cached in
`run_dir/class_models/`, and progress goes to `progress.json` there, written atomically
(temp file + os.replace) so a reader never sees half a file. One job per run at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.errors import UserError
from core.paths import REPO
from core.runs.store import RunStore, _alive

STEPS_RANGE = (1, 5000)     # gradient-ascent steps per class
SIZE_RANGE = (16, 512)      # px; the image is size x size
WRITE_EVERY = 0.25          # s between progress writes within a class


def out_dir(store: RunStore, run_id: str) -> Path:
    return store.run_dir(run_id) / "class_models"


def png_path(store: RunStore, run_id: str, target: int, steps: int, size: int) -> Path:
    """Where explain_io.class_model_png caches the image of class index ``target``."""
    from core.explain.files import class_model_path
    return class_model_path(out_dir(store, run_id), target, steps, size)


def fresh_png(store: RunStore, run_id: str, target: int, steps: int, size: int) -> Path | None:
    """The cached image if it was drawn from the run's current checkpoint (not from an older one)."""
    png = png_path(store, run_id, target, steps, size)
    ckpt = store.run_dir(run_id) / "checkpoints" / "last.pt"
    try:
        return png if png.stat().st_mtime >= (ckpt.stat().st_mtime if ckpt.exists() else 0) else None
    except FileNotFoundError:
        return None


def _progress_file(store: RunStore, run_id: str) -> Path:
    return out_dir(store, run_id) / "progress.json"


def _write(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def status(store: RunStore, run_id: str) -> dict | None:
    """The last job's progress plus "active"; None if this run never had one.

    A job whose process died without saying so (killed, machine restarted) is reported as
    done with an error, so the page stops polling."""
    f = _progress_file(store, run_id)
    try:
        state = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if not state.get("done") and not _alive(state.get("pid")):
        state.update(done=True, error=state.get("error") or "The generation process ended unexpectedly.")
    state["active"] = not state.get("done")
    return state


def start(store: RunStore, run_id: str, classes: list, steps: int = 150, size: int = 0) -> None:
    """Spawn a detached process that draws the class model of each class (label, name or index)."""
    run = store.get(run_id)
    if run is None:
        raise UserError(f"There is no run {run_id!r} in {store.root}.")
    if not (store.run_dir(run_id) / "checkpoints" / "last.pt").exists():
        raise UserError(f"Run {run_id} has no checkpoint yet; wait for its first epoch to finish.")
    if not classes:
        raise UserError("Choose at least one class to visualise.")
    if not STEPS_RANGE[0] <= int(steps) <= STEPS_RANGE[1]:
        raise UserError(f"Steps must be between {STEPS_RANGE[0]} and {STEPS_RANGE[1]}; got {steps}.")
    size = int(size) or int(run["config"].get("image_size") or 0)
    if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise UserError(f"Image size must be between {SIZE_RANGE[0]} and {SIZE_RANGE[1]} px; got {size}.")
    st = status(store, run_id)
    if st and st["active"]:
        raise UserError(f"Class models for run {run_id} are already being generated; wait for them or stop them.")
    classes = [str(c) for c in classes]
    d = out_dir(store, run_id)
    d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(d / "log.txt", "ab") as log:
        # "--" so that a class label starting with "-" is not read as an option
        p = subprocess.Popen([sys.executable, "-m", "core.runs.classmodel_jobs", run_id, "--runs", str(store.root),
                              "--steps", str(int(steps)), "--size", str(size), "--", *classes],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=str(REPO), env=env, start_new_session=True)
    # Written here too so status() sees the job at once; the child needs seconds to import torch
    # before its first write, which carries the same pid.
    _write(_progress_file(store, run_id), _initial(p.pid, classes, int(steps), size))


def stop(store: RunStore, run_id: str) -> None:
    """Ask a running job to end; images already finished stay cached, the current one is dropped
    (class_model_png writes a PNG only when its ascent is complete)."""
    st = status(store, run_id)
    if st and st["active"] and st.get("pid"):
        try:
            os.kill(int(st["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass


def _initial(pid: int, classes: list, steps: int, size: int) -> dict:
    return {"pid": pid, "class_index": 0, "classes": classes, "step": 0, "steps": steps, "size": size,
            "done": False, "error": None, "started": time.time(), "results": []}


class _Stopped(Exception):
    pass


def run(store: RunStore, run_id: str, classes: list, steps: int, size: int) -> dict:
    """The child's work: every class in turn, progress written as it goes. Returns the final state."""
    from core.explain.files import class_model_png
    from core.explain.predictor import load_predictor

    path = _progress_file(store, run_id)
    state = _initial(os.getpid(), list(classes), steps, size)
    _write(path, state)
    last = [0.0]

    def on_step(step: int, total: int, score: float) -> None:
        if time.monotonic() - last[0] >= WRITE_EVERY or step == total:
            last[0] = time.monotonic()
            state.update(step=step)
            _write(path, state)

    def on_term(*_):
        raise _Stopped()

    signal.signal(signal.SIGTERM, on_term)
    try:
        pred = load_predictor(run_id, store)
        for i, cls in enumerate(classes):
            state.update(class_index=i, step=0)
            _write(path, state)
            r = class_model_png(pred, cls, out_dir(store, run_id), steps=steps, size=size, progress=on_step)
            state["results"].append({k: r[k] for k in ("class", "name", "png", "prob")})
        state.update(class_index=len(classes), step=steps)
    except _Stopped:
        state["error"] = "Stopped."
    except Exception as e:  # noqa: BLE001 - the page shows the message instead of polling forever
        state["error"] = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
    state["done"] = True
    _write(path, state)
    return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.runs.classmodel_jobs",
                                 description="Generate class model images for a finished run.")
    ap.add_argument("run_id")
    ap.add_argument("classes", nargs="+", help="class labels, names or indices")
    ap.add_argument("--runs", default=None, help="runs folder (default: LANDMARKS_HOME/runs)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--size", type=int, default=0, help="px; 0 = the run's image size")
    args = ap.parse_args(argv)
    store = RunStore(args.runs)
    size = args.size or int((store.get(args.run_id) or {}).get("config", {}).get("image_size") or 0)
    state = run(store, args.run_id, args.classes, args.steps, size)
    print(f"class models for run {args.run_id}: {state['error'] or 'done'}", flush=True)
    return 1 if state["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
