"""Sweeps: hyperparameter searches (the poster's Fig. 2) on Optuna, where every trial is an
ordinary run.

A sweep is an Optuna study (LANDMARKS_HOME/sweeps.db by default; `storage` may be any URL Optuna
takes, e.g. PostgreSQL, so that several machines work on one study). The study keeps the base
configuration, the search space and the sampler in its user attributes; each trial keeps the
run that trained it (`run_id`, `host`) in its own.

The driver (`drive`) asks Optuna for configurations, queues each as a run through the one job
queue (as many at once as the device has slots: one per GPU, one on the CPU, plus one waiting), and
tells Optuna how each ended. A trial's own worker reports each epoch's validation accuracy to the
study as the epoch ends and, in a pruning sweep, asks Optuna's median pruner whether to go on: a
hopeless trial stops at once and its run shows as "pruned" with the epoch it stopped at.
It holds no state of its own: a driver started again (after a crash, a kill, an app restart)
adopts the running trials of its host whose driver is gone — or that never got a driver recorded,
whatever moment the driver died — and goes on. Grid sweeps enqueue every configuration once when
the study is created; a driver takes one with Optuna's WAITING→RUNNING step and records itself on
it under one lock: a file lock beside an SQLite storage (where Optuna's step is not atomic), the
database's row lock on a server, so two drivers never train the same configuration.

A storage URL's password is never shown or stored with the URL: it is kept in
LANDMARKS_HOME/credentials.json (mode 0600) under the URL without it, or read from
LANDMARKS_STORAGE_PASSWORD / LANDMARKS_STORAGE_PASSWORD_FILE (or libpq's own PGPASSWORD, ~/.pgpass).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

from core import paths
from core.errors import UserError
from core.files import atomic_write, file_lock
from core.runs.jobs import cancel, device_key, launch, resume, schedule, slots as device_slots
from core.runs.proc import START_GRACE_S, gone, me
from core.train.config import LEGACY, TrainConfig

# A sampler is one entry here: its name (the CLI's --sampler, the Sweeps page) and its Optuna sampler
# from (seed, planned trials). "grid" enqueues every configuration at creation and hands them out in
# order (the random sampler only serves the enqueued trials). The first entry is the default.
SAMPLER_MAKERS = {
    "grid": lambda optuna, seed, trials: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda optuna, seed, trials: optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, trials)),
    "random": lambda optuna, seed, trials: optuna.samplers.RandomSampler(seed=seed),
}
SAMPLERS = tuple(SAMPLER_MAKERS)
FIXED = ("data", "device", "pipeline", "workers", "extra")   # not searchable
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
DB_FILE = "sweeps.db"
PRUNE_WARMUP_EPOCHS = 2      # a trial is never pruned before its 2nd epoch ends
PRUNE_STARTUP_TRIALS = 2     # nor before two trials have finished
MAX_RESUMES = 2              # an interrupted trial run is resumed at most this often


def _optuna():
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


PASSWORD_ENV, PASSWORD_FILE_ENV = "LANDMARKS_STORAGE_PASSWORD", "LANDMARKS_STORAGE_PASSWORD_FILE"
CREDENTIALS = "credentials.json"


def _split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None)."""
    m = re.match(r"^([a-zA-Z][\w+.-]*://)([^:@/]*):([^@/]*)@(.*)$", url)
    if not m:
        return url, None
    from urllib.parse import unquote
    return f"{m.group(1)}{m.group(2)}@{m.group(4)}", unquote(m.group(3))


def storage_url(url: str | None = None) -> str:
    """The storage's URL as it is shown and stored: never with a password (one given inline is
    kept in LANDMARKS_HOME/credentials.json, mode 0600, for open_storage)."""
    url = url or f"sqlite:///{paths.home() / DB_FILE}"
    public, password = _split_password(url)
    if password is not None:
        _remember_password(public, password)
    return public


def masked(text: str, url: str | None) -> str:
    """`text` with the storage's password (if any) replaced by ***."""
    password = _password_for(storage_url(url)) if url else None
    return text.replace(password, "***") if password else text


def _credentials_file() -> Path:
    return paths.home() / CREDENTIALS


def _remember_password(public: str, password: str) -> None:
    f = _credentials_file()
    with file_lock(f.with_name(f".{CREDENTIALS}.lock")):
        try:
            known = json.loads(f.read_text())
        except (OSError, ValueError):
            known = {}
        if known.get(public) != password:
            known[public] = password
            atomic_write(f, json.dumps(known))
            os.chmod(f, 0o600)


def _password_for(public: str) -> str | None:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if os.environ.get(PASSWORD_FILE_ENV):
        try:
            return Path(os.environ[PASSWORD_FILE_ENV]).expanduser().read_text().strip()
        except OSError as e:
            raise UserError(f"Cannot read the storage password file {os.environ[PASSWORD_FILE_ENV]} "
                            f"({e.strerror}); fix {PASSWORD_FILE_ENV}.") from None
    try:
        return json.loads(_credentials_file().read_text()).get(public)
    except (OSError, ValueError):
        return None


def _with_password(public: str) -> str:
    password = _password_for(public) if "@" in public else None
    if not password:
        return public
    from urllib.parse import quote
    scheme, rest = public.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{quote(password, safe='')}@{host}"


def open_storage(url: str | None):
    optuna = _optuna()
    url = storage_url(url)
    kw = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        _wal(Path(url[len("sqlite:///"):]))
    try:
        with claim_lock(url):            # two processes creating one SQLite storage's tables at once collide
            return optuna.storages.RDBStorage(_with_password(url), engine_kwargs=kw)
    except Exception as e:  # noqa: BLE001 - a bad URL, a server that cannot be reached, a missing driver
        why = masked(str(e).splitlines()[0][:160] if str(e).strip() else type(e).__name__, url)
        raise UserError(f"Cannot open the sweep storage {url} ({why}).") from None


@contextlib.contextmanager
def claim_lock(storage: str | None):
    """Held while a driver claims a trial (and while a study is created): Optuna's WAITING→RUNNING
    step is a row lock on a database server, but not atomic on SQLite, so SQLite storages take a
    file lock beside their database (every driver of an SQLite storage is on this machine)."""
    url = storage_url(storage)
    if not url.startswith("sqlite:///") or getattr(_held, url, 0):
        yield                            # a server's row lock does it; or this thread holds it already
        return
    db = Path(url[len("sqlite:///"):])
    with file_lock(db.with_name(f".{db.name}.claim.lock")):
        setattr(_held, url, 1)
        try:
            yield
        finally:
            setattr(_held, url, 0)


_held = threading.local()                # the claim locks this thread holds (a flock is per open file)


def _wal(db: Path) -> None:
    """Write-ahead logging (kept in the file): the Sweeps page reads while drivers write, unblocked."""
    import sqlite3
    if db.parent.is_dir():
        with sqlite3.connect(db, timeout=60) as c:
            c.execute("PRAGMA journal_mode=WAL")


def check_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise UserError(f"{name!r} is not a usable sweep name: use 1-64 letters, digits, '.', '-' or '_'.")
    return name


# ------------------------------------------------------------------ search space

def _field(name: str):
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if name not in fields or name in FIXED:
        ok = ", ".join(n for n in fields if n not in FIXED)
        raise UserError(f"{name!r} cannot be searched; choose from {ok}.")
    return fields[name]


def _typed(f, text: str):
    from core.train.config import DEFAULTS, _check
    kind = type(DEFAULTS[f.name])
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            value = text.lower() in ("true", "1", "yes", "on")
        elif kind is tuple:
            value = "+".join(sorted(p for p in text.split("+") if p))   # augment=crop+hflip
        else:
            value = kind(float(text)) if kind is int and text.replace(".", "", 1).isdigit() else kind(text)
    except ValueError:
        raise UserError(f"{text!r} is not a valid value for {f.name} ({kind.__name__}).") from None
    _check(f, tuple(value.split("+")) if kind is tuple and value else value)
    return value


def parse_space(items: list[str]) -> dict:
    """["lr=0.01,0.001", "optimizer=adam,sgd", "lr=1e-4:1e-2"] -> {name: [values]} or
    {name: {"low", "high", "log"}} (a range, for tpe and random)."""
    if not items:
        raise UserError("Give at least one parameter to search, e.g. --grid lr=0.01,0.001 optimizer=adam,sgd.")
    space = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise UserError(f"{item!r} is not NAME=V1,V2,… (or NAME=LOW:HIGH for tpe/random).")
        f = _field(name)
        if ":" in values:
            lo, _, hi = values.partition(":")
            low, high = _typed(f, lo.strip()), _typed(f, hi.strip())
            if not isinstance(low, (int, float)) or isinstance(low, bool) or low >= high:
                raise UserError(f"{item!r}: a range needs two numbers, low < high.")
            space[name] = {"low": low, "high": high, "log": name in ("lr", "weight_decay") and low > 0}
        else:
            vals = [_typed(f, v.strip()) for v in values.split(",") if v.strip()]
            space[name] = list(dict.fromkeys(vals))
    return space


def grid(space: dict) -> list[dict]:
    if any(isinstance(v, dict) for v in space.values()):
        raise UserError("A grid sweep needs lists of values (NAME=V1,V2,…), not ranges; use --sampler tpe or random.")
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]


def _distributions(space: dict) -> dict:
    optuna = _optuna()
    out = {}
    for name, v in space.items():
        if isinstance(v, dict):
            cls = optuna.distributions.IntDistribution if isinstance(v["low"], int) else \
                optuna.distributions.FloatDistribution
            out[name] = cls(v["low"], v["high"], log=v["log"])
        else:
            out[name] = optuna.distributions.CategoricalDistribution(v)
    return out


def trial_config(base: dict, params: dict) -> TrainConfig:
    p = dict(params)
    if "augment" in p:
        p["augment"] = tuple(x for x in str(p["augment"]).split("+") if x)
    return TrainConfig.from_dict({**LEGACY, **base, **p}).validate()   # a sweep stored before recipes: poster


# ------------------------------------------------------------------ creating and loading

def create(name: str, base: TrainConfig, space: dict | None = None, sampler: str = "grid",
           trials: int | None = None, prune: bool = False, storage: str | None = None,
           configs: list[dict] | None = None, kind: str = "sweep", meta: dict | None = None) -> dict:
    """A new sweep (or the same one again: its settings must match). `configs` enqueues an
    explicit list instead of the grid of `space` (the poster's table does)."""
    optuna = _optuna()
    check_name(name)
    if sampler not in SAMPLERS:
        raise UserError(f"Unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}.")
    base.validate()
    if int(getattr(base, "nproc", 1) or 1) > 1 or "nproc" in (space or {}):
        raise UserError("A sweep trains each trial in one process on one GPU (its trials run side by side on "
                        "the GPUs); leave --nproc at 1.")
    space = space or {}
    todo = configs if configs is not None else grid(space) if sampler == "grid" else None
    if todo is not None:
        for params in todo:
            trial_config(dataclasses.asdict(base), params)     # every configuration valid, before anything is stored
        trials = len(todo)
    elif not trials or trials < 1:
        raise UserError("A tpe or random sweep needs --trials N (how many configurations to train).")
    settings = {"base": json.loads(base.to_json()), "space": space, "sampler": sampler, "trials": int(trials),
                "prune": bool(prune), "kind": kind}
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


def epoch_reporter(args: dict):
    """For a trial's worker: report each epoch's validation accuracy to the study (curves on every
    machine) and, in a pruning sweep, say whether the pruner stops it. Reported synchronously at
    the epoch's end, so no epoch is missed however fast the trial runs."""
    optuna = _optuna()
    study = load(args["sweep"], args.get("storage"))
    trial = optuna.trial.Trial(study, int(args["trial_id"]))

    def on_epoch(row: dict) -> bool:
        try:
            trial.report(float(row["val_acc"]), int(row["epoch"]))
        except (RuntimeError, ValueError, optuna.exceptions.OptunaError):
            return False                 # the trial was told already (a cancelled sweep): train on quietly
        return bool(args.get("prune")) and trial.should_prune()
    return on_epoch


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


def _suggest(trial, name: str, d):
    optuna = _optuna()
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, d.low, d.high, log=d.log)
    return trial.suggest_float(name, d.low, d.high, log=d.log)


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


def _enqueued(study) -> list[dict]:
    return [t.system_attrs.get("fixed_params", t.params) for t in study.get_trials(deepcopy=False)]


def _param_names(study) -> list[str]:
    return list(dict.fromkeys(k for p in _enqueued(study) for k in p))


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
        configs.append({"number": t.number, "params": params, "run_id": t.user_attrs.get("run_id"),
                        "host": t.user_attrs.get("host"), "state": STATE.get(t.state.name, t.state.name.lower()),
                        "val_acc": t.value if t.value is not None else (inter[max(inter)] if inter else None),
                        "pruned_at": t.user_attrs.get("pruned_at"), "error": t.user_attrs.get("error"),
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
            "configs": configs, "best": best, "counts": counts,
            "finished": counts["ended"] >= (a.get("trials") or 0) and not counts["running"]}


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
