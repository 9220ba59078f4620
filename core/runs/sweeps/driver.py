"""The driver: hands the study's configurations to the job queue as ordinary runs, adopts what a dead
driver left, and tells Optuna how each trial ended."""
from __future__ import annotations

import socket
import time

from core.errors import UserError
from core.files import file_lock
from core.runs.groups import group_stats, member, name_group
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


def _launch(store, study, trial, base: dict, name: str, storage: str | None, have: list | None = None) -> list:
    """Queue the trial's runs: one, or in a seed-group sweep one per seed on the first seed's split
    (groups.member, as `train --seeds`), the first run's id naming the group. `have`: runs already
    made for it (adopted from a dead driver), in seed order; only the missing ones are made."""
    seeds = study.user_attrs.get("seeds") or [None]
    cfg = trial_config(base, trial.params)
    args = {"sweep": name, "trial": trial.number, "trial_id": trial._trial_id, "storage": storage_url(storage),
            "prune": bool(study.user_attrs.get("prune"))}
    runs = list(have or [])
    for i, seed in enumerate(seeds[len(runs):], start=len(runs)):
        if seed is None:
            run_id = launch(cfg, store, start=False, args=args)
        else:
            run_id = launch(member(cfg, seeds, seed, runs[0] if runs else ""), store, start=False,
                            args={**args, "seed_index": i})
            if not runs:
                name_group(store.run(run_id))
        runs.append(run_id)
    if seeds[0] is not None and not store.run(runs[0]).config().group:
        name_group(store.run(runs[0]))         # adopted from a driver that died before naming it
    for run_id, seed in zip(runs, seeds):
        store.set(run_id, name=f"{name} #{trial.number}" + ("" if seed is None else f" seed {seed}"))
    trial.set_user_attr("run_id", runs[0])
    trial.set_user_attr("host", socket.gethostname())
    if seeds[0] is not None:
        trial.set_user_attr("group", runs[0])
        trial.set_user_attr("members", runs)
    schedule(store)
    return runs


def _orphans(store, trial, name: str) -> list:
    """The runs drivers made for this trial (a dead one may have died between `store.create` and
    recording them on the trial), in seed order: adopted, so no configuration gets a second run."""
    mine = [r for r in store.list() if (r.get("args") or {}).get("sweep") == name
            and (r.get("args") or {}).get("trial_id") == trial._trial_id]
    return [r["run_id"] for r in sorted(mine, key=lambda r: (r["args"].get("seed_index") or 0, r.get("created") or 0))]


def _launch_or_fail(store, study, trial, base: dict, name: str, storage: str | None, have=None) -> list | None:
    """The trial's run ids, or None when its configuration is refused (the trial is then failed)."""
    try:
        return _launch(store, study, trial, base, name, storage, have)
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
    # one run per device slot, plus one waiting in the queue: the worker that ends starts it at once
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
            runs = _launch_or_fail(store, study, trial, base, name, storage, have=_orphans(store, trial, name))
            if runs:
                mine[t.number] = {"trial": trial, "runs": runs, "resumes": {}}

    while True:
        stopping = bool(should_stop and should_stop()) or bool(study.user_attrs.get("cancelled"))
        schedule(store)
        for n, m in list(mine.items()):
            if _watch(store, study, m, stopping, cancel, resume):
                del mine[n]
        if not stopping:
            while sum(len(m["runs"]) for m in mine.values()) < width:     # runs, a seed group's each
                trial = _take(study, dists, planned, sampler, storage)
                if trial is None:
                    break
                runs = _launch_or_fail(store, study, trial, base, name, storage)
                if runs:
                    mine[trial.number] = {"trial": trial, "runs": runs, "resumes": {}}
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
    """One look at a trial's runs; tells Optuna and returns True once the trial has ended: pruned as
    soon as its (first) run is pruned (the rest of its group is cancelled), else once every run has
    ended: failed when one failed (with the first error), else complete with the value of a single
    run, or a seed group's mean validation accuracy (its n, mean and sd kept on the trial)."""
    TS = _optuna().trial.TrialState
    trial, runs = m["trial"], m["runs"]
    looks = {run_id: _look(store, m, run_id, stopping, cancel, resume) for run_id in runs}
    pruned = [r for r, (state, _) in looks.items() if state == "pruned"]
    if pruned:
        for r, (state, _) in looks.items():        # the rest of its seed group is cancelled with it
            if state == "active":
                cancel(store, r)
        trial.set_user_attr("pruned_at", ((store.job(pruned[0]) or {}).get("result") or {}).get("pruned_at"))
        _tell(study, trial, state=TS.PRUNED)
        return True
    if any(state == "active" for state, _ in looks.values()):
        return False
    errors = [why for state, why in looks.values() if state == "failed"]
    if errors:
        trial.set_user_attr("error", errors[0])
        _tell(study, trial, state=TS.FAIL)
        return True
    if len(runs) == 1:
        _tell(study, trial, float(looks[runs[0]][1]))
        return True
    stats = group_stats(store, trial.user_attrs.get("group") or runs[0])
    if "val_acc" not in stats.mean:
        trial.set_user_attr("error", "the seed group's runs finished without a validation accuracy")
        _tell(study, trial, state=TS.FAIL)
        return True
    trial.set_user_attr("stats", stats.to_dict())
    _tell(study, trial, stats.mean["val_acc"])      # the objective: the group's mean
    return True


def _look(store, m: dict, run_id: str, stopping: bool, cancel, resume) -> tuple:
    """(state, detail) of one of a trial's runs: ("active", None), ("done", val_acc), ("pruned", None)
    or ("failed", why); cancels it when the sweep stops, resumes it when its worker died."""
    run = store.get(run_id)
    if run is None:                                    # its run was deleted
        return "failed", "its run was deleted"
    status = run["status"]
    if stopping and status in ("queued", "starting", "running") and not run.get("cancel"):
        cancel(store, run_id)
        m["cancelled"] = True
    if status in ("queued", "starting", "running"):
        return "active", None
    if status == "done":
        val = (run.get("summary") or {}).get("val_acc")
        return ("failed", "the run finished without a validation accuracy") if val is None else ("done", val)
    if status == "pruned":
        return "pruned", None
    if status == "interrupted" and not stopping and m["resumes"].get(run_id, 0) < MAX_RESUMES:
        m["resumes"][run_id] = m["resumes"].get(run_id, 0) + 1   # its worker died (a reboot, a kill): continue it
        resume(store, run_id)
        return "active", None
    return "failed", ("the sweep was cancelled" if m.get("cancelled") or (stopping and status == "cancelled")
                      else run.get("error") or f"its run was {status}")


# ------------------------------------------------------------------ reading a sweep
