"""The driver: hands the study's configurations to the job queue as ordinary runs, adopts what a dead
driver left, and tells Optuna how each trial ended."""
from __future__ import annotations

import socket
import time

from core.errors import UserError
from core.files import file_lock
from core.runs.jobs import cancel, device_key, launch, resume, schedule, slots as device_slots
from core.runs.proc import START_GRACE_S, gone, me
from core.runs.sweeps.space import _distributions, _suggest, trial_config
from core.runs.sweeps.storage import _optuna, claim_lock, storage_url
from core.runs.sweeps.study import _enqueued, _param_names, _tell, info, load


MAX_RESUMES = 2              # an interrupted trial run is resumed at most this often


def _adoptable(trial, sqlite: bool) -> bool:
    """A running trial whose driver is gone (the one liveness rule), or that never got a driver
    recorded: on SQLite claims happen under claim_lock, so one without a driver outside it lost
    its driver mid-claim; on a server, one that has waited START_GRACE_S."""
    d = trial.user_attrs.get("driver")
    if d:
        return gone(d)
    if sqlite:
        return True
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0
    return time.time() - started > START_GRACE_S


def _launch(store, study, trial, base: dict, name: str, storage: str | None) -> str:
    cfg = trial_config(base, trial.params)
    run_id = launch(cfg, store, start=False, args={"sweep": name, "trial": trial.number, "trial_id": trial._trial_id,
                                                   "storage": storage_url(storage),
                                                   "prune": bool(study.user_attrs.get("prune"))})
    store.set(run_id, name=f"{name} #{trial.number}")
    trial.set_user_attr("run_id", run_id)
    trial.set_user_attr("host", socket.gethostname())
    schedule(store)
    return run_id


def _orphan(store, study, trial, name: str) -> str | None:
    """The run a driver created for this trial but was killed before recording on it (between
    `store.create` and `set_user_attr`): adopted, so the trial never gets a second run."""
    for r in store.list():
        a = r.get("args") or {}
        if a.get("sweep") == name and a.get("trial_id") == trial._trial_id:
            store.set(r["run_id"], name=f"{name} #{trial.number}")
            trial.set_user_attr("run_id", r["run_id"])
            trial.set_user_attr("host", socket.gethostname())
            return r["run_id"]
    return None


def _launch_or_fail(store, study, trial, base: dict, name: str, storage: str | None) -> str | None:
    """The trial's run id, or None when its configuration is refused (the trial is then failed)."""
    try:
        return _launch(store, study, trial, base, name, storage)
    except UserError as e:
        trial.set_user_attr("error", str(e))
        _tell(study, trial, state=_optuna().trial.TrialState.FAIL)
        return None


def _take(study, dists: dict, planned: int, sampler: str, storage: str | None):
    """The next trial for this driver, or None when the sweep has nothing left to hand out."""
    optuna = _optuna()
    with claim_lock(storage):                  # WAITING -> RUNNING and the driver recorded, as one step
        tid = study._pop_waiting_trial_id()
        if tid is None:
            if sampler == "grid" or len(study.get_trials(deepcopy=False)) >= planned:
                return None
            trial = study.ask(dists)
        else:
            trial = optuna.trial.Trial(study, tid)
        trial.set_user_attr("driver", me())
    if tid is not None:
        for n, d in dists.items():             # suggesting an enqueued trial returns its fixed values
            _suggest(trial, n, d)
    return trial


def drive(name: str, store, storage: str | None = None, poll_s: float = 0.5, should_stop=None,
          progress=None, slots: int | None = None) -> dict:
    """Run the sweep until every configuration has ended (or `should_stop()`); returns info()."""
    optuna = _optuna()
    TS = optuna.trial.TrialState
    study = load(name, storage)
    a = study.user_attrs
    base, planned, sampler = a["base"], int(a["trials"]), a["sampler"]
    if a.get("cancelled"):
        study.set_user_attr("cancelled", False)        # continuing a cancelled sweep
    dists = _distributions(a["space"]) if sampler != "grid" else _distributions(
        {k: sorted({c[k] for c in _enqueued(study)}, key=str) for k in _param_names(study)})
    # one trial per device slot, plus one waiting in the queue: the worker that ends starts it at once
    width = (slots or len(device_slots(device_key(base.get("device", "auto"))))) + 1
    mine: dict[int, dict] = {}                         # trial number -> {trial, run_id, resumes}
    sqlite = storage_url(storage).startswith("sqlite")

    with file_lock(store.root / ".sweeps.lock"), claim_lock(storage):   # no trial adopted twice, none mid-claim
        for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):   # what a dead driver left
            fresh = study._storage.get_trial(t._trial_id)
            if fresh.state != TS.RUNNING or not _adoptable(fresh, sqlite):
                continue
            trial = optuna.trial.Trial(study, t._trial_id)
            trial.set_user_attr("driver", me())
            run_id = fresh.user_attrs.get("run_id")
            if run_id and store.get(run_id) is None:
                run_id = None
            run_id = run_id or _orphan(store, study, trial, name)
            run_id = run_id or _launch_or_fail(store, study, trial, base, name, storage)
            if run_id:
                mine[t.number] = {"trial": trial, "run_id": run_id, "resumes": 0}

    while True:
        stopping = bool(should_stop and should_stop()) or bool(study.user_attrs.get("cancelled"))
        schedule(store)
        for n, m in list(mine.items()):
            if _watch(store, study, m, stopping, cancel, resume):
                del mine[n]
        if not stopping:
            while len(mine) < width:
                trial = _take(study, dists, planned, sampler, storage)
                if trial is None:
                    break
                run_id = _launch_or_fail(store, study, trial, base, name, storage)
                if run_id:
                    mine[trial.number] = {"trial": trial, "run_id": run_id, "resumes": 0}
        if progress:
            s = info(name, storage, study=study)
            progress(done=s["counts"]["ended"], total=s["planned"], counts=s["counts"])
        if not mine:
            break
        time.sleep(poll_s)
    if should_stop and should_stop():
        from core.errors import Cancelled
        raise Cancelled()
    return info(name, storage)


def _watch(store, study, m: dict, stopping: bool, cancel, resume) -> bool:
    """One look at a trial's run; tells Optuna and returns True once the run has ended."""
    TS = _optuna().trial.TrialState
    trial, run_id = m["trial"], m["run_id"]
    run = store.get(run_id)
    if run is None:                                    # its run was deleted
        trial.set_user_attr("error", "its run was deleted")
        _tell(study, trial, state=TS.FAIL)
        return True
    status = run["status"]
    if stopping and status in ("queued", "starting", "running") and not run.get("cancel"):
        cancel(store, run_id)
        m["cancelled"] = True
    if status in ("queued", "starting", "running"):
        return False
    if status == "done":
        val = (run.get("summary") or {}).get("val_acc")
        if val is None:
            trial.set_user_attr("error", "the run finished without a validation accuracy")
            _tell(study, trial, state=TS.FAIL)
        else:
            _tell(study, trial, float(val))
        return True
    if status == "pruned":
        trial.set_user_attr("pruned_at", ((store.job(run_id) or {}).get("result") or {}).get("pruned_at"))
        _tell(study, trial, state=TS.PRUNED)
        return True
    if status == "interrupted" and not stopping and m["resumes"] < MAX_RESUMES:
        m["resumes"] += 1                              # its worker died (a reboot, a kill): continue it
        resume(store, run_id)
        return False
    trial.set_user_attr("error", "the sweep was cancelled" if m.get("cancelled") or (stopping and status == "cancelled")
                        else run.get("error") or f"its run was {status}")
    _tell(study, trial, state=TS.FAIL)
    return True


# ------------------------------------------------------------------ reading a sweep
