"""Helpers the command groups share: running a job kind in this process, paths, the usual flags."""
from __future__ import annotations

from pathlib import Path

from core.errors import UserError


def _run_here(a, kind_name: str, args: dict, run_id: str | None = None, on_progress=None) -> dict:
    """A long task through its job kind (core.runs.tasks), in this process: the dashboard runs the
    same function as a background job. Its failure is the job's one sentence."""
    import core.runs.tasks  # noqa: F401 - the job kinds register themselves
    from core.runs.jobs import run_here
    from core.runs.store import RunStore
    out = run_here(RunStore(getattr(a, "runs", None)), kind_name, args, run_id, on_progress)
    if out["status"] == "failed":
        raise UserError(out["error"])
    if out["status"] != "done":
        raise KeyboardInterrupt()
    return out


def _abs(path) -> str:
    """A path from the command line as the job kinds take it: absolute, ~ expanded."""
    return str(Path(path).expanduser().resolve())


def _runs_and_json(p) -> None:
    """The last two flags of most commands: the run store's folder and JSON output."""
    p.add_argument("--runs", default=None)
    p.add_argument("--json", action="store_true")


def _counts(data: str, clean: bool = False):
    """Images per class of a data set (one sentence if it cannot be read)."""
    from core.data.readers import load_index
    return load_index(data, clean=clean).counts()


def _check_classes(data: str, classes: int, clean: bool = False) -> None:
    """Fail fast, before a run or a sweep exists, when the data set has fewer than `classes` classes."""
    from core.data.splits import top_classes
    top_classes(_counts(data, clean), classes)
