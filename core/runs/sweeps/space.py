"""A sweep's search space: NAME=V1,V2 and NAME=LOW:HIGH parsed and typed against TrainConfig, the
grid, Optuna's distributions, one trial's configuration, and the samplers (one entry each)."""
from __future__ import annotations

import dataclasses
import itertools

from core.errors import UserError

from core.train.config import LEGACY, TrainConfig
from core.runs.sweeps.storage import _optuna


SAMPLER_MAKERS = {
    "grid": lambda optuna, seed, trials: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda optuna, seed, trials: optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, trials)),
    "random": lambda optuna, seed, trials: optuna.samplers.RandomSampler(seed=seed),
}


SAMPLERS = tuple(SAMPLER_MAKERS)


FIXED = ("data", "device", "pipeline", "workers", "extra")   # not searchable


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


def _suggest(trial, name: str, d):
    optuna = _optuna()
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, d.low, d.high, log=d.log)
    return trial.suggest_float(name, d.low, d.high, log=d.log)
