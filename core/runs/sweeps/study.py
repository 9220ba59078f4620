"""A sweep as an Optuna study: creating it (or finding the same one again), loading it with its sampler
and pruner, reading it (info, importance), cancelling it, and a trial worker's epoch reports."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

from core.errors import UserError
from core.runs.groups import GroupStats, parse_seeds, within_noise
from core.runs.jobs import cancel
from core.train.config import LEGACY, TrainConfig
from core.runs.sweeps.space import SAMPLER_MAKERS, SAMPLERS, grid, trial_config
from core.runs.sweeps.storage import _optuna, claim_lock, open_storage, storage_url


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


PRUNE_WARMUP_EPOCHS = 2      # a trial is never pruned before its 2nd epoch ends


PRUNE_STARTUP_TRIALS = 2     # nor before two trials have finished


NOTE_MAX = 2000              # characters in a trial's note
NOTE_KEY = "note:{}"         # the study user attribute that holds trial n's note


def check_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise UserError(f"{name!r} is not a usable sweep name: use 1-64 letters, digits, '.', '-' or '_'.")
    return name


# ------------------------------------------------------------------ search space


def create(name: str, base: TrainConfig, space: dict | None = None, sampler: str = "grid",
           trials: int | None = None, prune: bool = False, storage: str | None = None,
           configs: list[dict] | None = None, kind: str = "sweep", meta: dict | None = None,
           seeds: list[int] | None = None) -> dict:
    """A new sweep (or the same one again: its settings must match). `configs` enqueues an
    explicit list instead of the grid of `space` (the poster's table does). `seeds`: each trial
    trains one run per seed on one shared split, as one seed group, and its objective is the
    group's mean validation accuracy."""
    optuna = _optuna()
    check_name(name)
    if sampler not in SAMPLERS:
        raise UserError(f"Unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}.")
    base.validate()
    if int(getattr(base, "nproc", 1) or 1) > 1 or "nproc" in (space or {}):
        raise UserError("A sweep trains each trial in one process on one GPU (its trials run side by side on "
                        "the GPUs); leave --nproc at 1.")
    space = space or {}
    seeds = _check_seeds(seeds, space, configs)
    todo = configs if configs is not None else grid(space) if sampler == "grid" else None
    if todo is not None:
        for params in todo:
            trial_config(dataclasses.asdict(base), params)     # every configuration valid, before anything is stored
        trials = len(todo)
    elif not trials or trials < 1:
        raise UserError("A tpe or random sweep needs --trials N (how many configurations to train).")
    settings = {"base": json.loads(base.to_json()), "space": space, "sampler": sampler, "trials": int(trials),
                "prune": bool(prune), "kind": kind, "seeds": seeds}
    st = open_storage(storage)
    existing = _find(st, name)
    if existing is not None:
        old = {k: existing.user_attrs.get(k) for k in settings}
        if isinstance(old["base"], dict):    # a base stored before newer fields existed reads as it trained
            old["base"] = json.loads(TrainConfig.from_dict({**LEGACY, **old["base"]}).to_json())
        now = json.loads(json.dumps(settings))
        if old != now:
            raise UserError(f"A sweep named {name!r} already exists with other settings ({_differences(old, now)}); "
                            f"choose another --name, or continue it with --join {name}.")
        return info(name, storage)
    with claim_lock(storage):            # two drivers creating one study at once: one creates, one finds it
        if _find(st, name) is None:
            study = optuna.create_study(study_name=name, storage=st, direction="maximize", load_if_exists=True)
            for k, v in settings.items():
                study.set_user_attr(k, v)
            study.set_user_attr("created", time.time())
            study.set_user_attr("meta", meta or {})
            for params in todo or []:
                study.enqueue_trial(params, skip_if_exists=True)
    return info(name, storage)


def _check_seeds(seeds, space: dict, configs: list[dict] | None) -> list[int] | None:
    """The seeds of a seed-group sweep (None without), refused where a trial sets its own seed."""
    if not seeds:
        return None
    seeds = parse_seeds(seeds)
    if "seed" in space or any("seed" in c for c in configs or []):
        raise UserError("Give either seed in the search space or --seeds, not both: --seeds trains every "
                        "configuration once per seed.")
    return seeds


def _differences(old: dict, now: dict, most: int = 3) -> str:
    """'recipe: poster there, finetune here; ...' for the first few settings that differ."""
    flat = lambda d: {**{k: v for k, v in d.items() if k != "base"}, **(d.get("base") or {})}  # noqa: E731
    a, b = flat(old), flat(now)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    said = "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in keys[:most])
    return said + (f" and {len(keys) - most} more" if len(keys) > most else "")


def _find(st, name: str):
    optuna = _optuna()
    try:
        return optuna.load_study(study_name=name, storage=st)
    except KeyError:
        return None


def load(name: str, storage: str | None = None):
    optuna = _optuna()
    st = open_storage(storage)
    study = _find(st, name)
    if study is None:
        raise UserError(f"There is no sweep named {name!r} in {storage_url(storage)}.")
    a = study.user_attrs
    seed = int(a.get("base", {}).get("seed", 0))
    make = SAMPLER_MAKERS.get(a.get("sampler"), SAMPLER_MAKERS["random"])
    sampler = make(optuna, seed, int(a.get("trials") or 10))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_EPOCHS)
    return optuna.load_study(study_name=name, storage=st, sampler=sampler, pruner=pruner)


def names(storage: str | None = None) -> list[dict]:
    """Every sweep in the storage, newest first: name, kind, created, trials asked/planned."""
    optuna = _optuna()
    url = storage_url(storage)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return []
    out = []
    for s in optuna.get_all_study_summaries(open_storage(storage), include_best_trial=False):
        a = s.user_attrs
        out.append({"name": s.study_name, "kind": a.get("kind", "sweep"), "created": a.get("created"),
                    "planned": a.get("trials"), "trials": s.n_trials, "sampler": a.get("sampler")})
    return sorted(out, key=lambda d: -(d["created"] or 0))


# ------------------------------------------------------------------ the driver


def epoch_reporter(args: dict):
    """For a trial's worker: report each epoch's validation accuracy to the study (curves on every
    machine) and, in a pruning sweep, say whether the pruner stops it. Reported synchronously at
    the epoch's end, so no epoch is missed however fast the trial runs. In a seed-group sweep only
    the group's first run reports (None for the others): the trial's curve is its first seed's, and
    the median pruner compares first seeds with first seeds."""
    optuna = _optuna()
    if int(args.get("seed_index") or 0) > 0:
        return None                      # a seed group's first run alone reports (and may be pruned)
    study = load(args["sweep"], args.get("storage"))
    trial = optuna.trial.Trial(study, int(args["trial_id"]))

    def on_epoch(row: dict) -> bool:
        try:
            trial.report(float(row["val_acc"]), int(row["epoch"]))
        except (RuntimeError, ValueError, optuna.exceptions.OptunaError):
            return False                 # the trial was told already (a cancelled sweep): train on quietly
        return bool(args.get("prune")) and trial.should_prune()
    return on_epoch


def _tell(study, trial, value=None, state=None) -> None:
    """Tell Optuna how a trial ended; one that is already finished (told by another driver) is left."""
    optuna = _optuna()
    try:
        if state is None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        pass


def _enqueued(study) -> list[dict]:
    return [t.system_attrs.get("fixed_params", t.params) for t in study.get_trials(deepcopy=False)]


def _param_names(study) -> list[str]:
    return list(dict.fromkeys(k for p in _enqueued(study) for k in p))


STATE = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def info(name: str, storage: str | None = None, study=None) -> dict:
    """Everything the CLI's --json and the Sweeps page show: configs (params, run_id, val_acc,
    state, pruned_at, error), best, counts, settings."""
    study = study or load(name, storage)
    a = study.user_attrs
    configs = []
    for t in study.get_trials(deepcopy=False):
        params = t.params or t.system_attrs.get("fixed_params", {})
        inter = t.intermediate_values
        configs.append({**_group_fields(t), "number": t.number, "params": params,
                        "run_id": t.user_attrs.get("run_id"), "host": t.user_attrs.get("host"),
                        "state": STATE.get(t.state.name, t.state.name.lower()),
                        "val_acc": t.value if t.value is not None else (inter[max(inter)] if inter else None),
                        "pruned_at": t.user_attrs.get("pruned_at"), "error": t.user_attrs.get("error"),
                        "note": a.get(NOTE_KEY.format(t.number)) or None,
                        "curve": {int(k): float(v) for k, v in sorted(inter.items())},
                        "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                        if t.datetime_complete and t.datetime_start else None})
    done = [c for c in configs if c["state"] == "complete" and c["val_acc"] is not None]
    best = max(done, key=lambda c: c["val_acc"]) if done else None
    counts = {s: sum(c["state"] == s for c in configs) for s in STATE.values()}
    counts["ended"] = counts["complete"] + counts["pruned"] + counts["failed"]
    return {"name": name, "storage": storage_url(storage), "kind": a.get("kind", "sweep"), "sampler": a.get("sampler"),
            "space": a.get("space"), "base": a.get("base"), "prune": a.get("prune"), "planned": a.get("trials"),
            "cancelled": bool(a.get("cancelled")), "created": a.get("created"), "meta": a.get("meta") or {},
            "seeds": a.get("seeds"), "configs": configs, "best": best, "counts": counts, "noise": seed_noise(configs),
            "finished": counts["ended"] >= (a.get("trials") or 0) and not counts["running"]}


def _group_fields(t) -> dict:
    """A trial's seed group: group (its first run's id), members (every run, seed order), n, mean and sd
    (as the driver recorded them when the group ended). A trial of one run: its val_acc, n = 1."""
    stats = t.user_attrs.get("stats")
    if stats:
        return {"group": stats.get("group"), "members": t.user_attrs.get("members") or stats.get("runs"),
                "n": stats["n"], "mean": stats["mean"], "sd": stats["sd"]}
    done = t.state.name == "COMPLETE" and t.value is not None and not t.user_attrs.get("group")
    return {"group": t.user_attrs.get("group"), "members": t.user_attrs.get("members") or (
                [t.user_attrs["run_id"]] if t.user_attrs.get("run_id") else []),
            "n": 1 if done else 0, "mean": {"val_acc": t.value} if done else {},
            "sd": {"val_acc": None} if done else {}}


def trial_stats(config: dict) -> GroupStats | None:
    """An info() config's seed group as GroupStats (None before it has finished runs)."""
    if not config.get("n"):
        return None
    runs = (config.get("members") or [config.get("run_id")])[:config["n"]]
    return GroupStats(config.get("group") or config.get("run_id") or "", runs, config["mean"], config["sd"])


def describe(config: dict, metric: str = "val_acc") -> str:
    """An info() config's figure as 'mean ± sd (n = N)' ('—' before its group has finished)."""
    stats = trial_stats(config)
    return stats.describe(metric) if stats else "—"


def seed_noise(configs: list[dict], metric: str = "val_acc") -> dict | None:
    """Whether the best two complete trials differ by more than the seed noise (groups.within_noise on
    their groups' `metric`): {"best", "second", "diff", "margin", "within", "sentence"}; None with fewer
    than two complete trials or no group."""
    done = sorted((c for c in configs if c["state"] == "complete" and c.get("n") and metric in c.get("mean", {})),
                  key=lambda c: -c["mean"][metric])
    if len(done) < 2 or not any(c.get("group") for c in done[:2]):
        return None
    a, b = done[1], done[0]
    noise = within_noise(trial_stats(a), trial_stats(b), metric)
    return {"best": b["number"], "second": a["number"], "diff": noise.diff, "margin": noise.margin,
            "within": noise.within, "sentence": f"Trials #{b['number']} and #{a['number']}: "
                                                f"{noise.sentence('mean validation accuracy')}"}


def importance(name: str, storage: str | None = None) -> dict[str, float]:
    """Optuna's parameter importance (fANOVA) over the finished trials; {} when it cannot tell."""
    optuna = _optuna()
    study = load(name, storage)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 3 or len({json.dumps(t.params, sort_keys=True, default=str) for t in done}) < 2:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def set_note(name: str, number: int, text: str, storage: str | None = None) -> str:
    """Write (or, with blank text, clear) trial `number`'s note; returns it as stored. Kept in the
    study's user attributes (Optuna keeps a finished trial's own attributes read-only), so it
    travels with the study and shows in optuna-dashboard too; `notes_at` tells readers it changed."""
    study = load(name, storage)
    if number not in {t.number for t in study.get_trials(deepcopy=False)}:
        raise UserError(f"Sweep {name!r} has no trial #{number}.")
    note = str(text).strip()[:NOTE_MAX]
    study.set_user_attr(NOTE_KEY.format(number), note)
    study.set_user_attr("notes_at", time.time())
    return note


def cancel_sweep(name: str, store, storage: str | None = None) -> dict:
    """Stop a sweep: no new trials; its queued and running trial runs on this machine are
    cancelled (their drivers mark them failed, "the sweep was cancelled"). Continue it with drive()."""
    from core.runs.jobs import latest
    study = load(name, storage)
    study.set_user_attr("cancelled", True)
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("run_id")
        if t.state.name == "RUNNING" and run_id and store.get(run_id) is not None:
            cancel(store, run_id)
    job = latest(store, "sweep", name=name)
    if job and job["active"]:
        cancel(store, job["job_id"])
    return info(name, storage)
