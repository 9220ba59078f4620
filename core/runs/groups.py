"""Seed groups: several runs of one configuration on one shared split, one per seed (`train --seeds
0,1,2`), each with `group` (the first run's id) in its config. Their spread is the seed noise a
single figure hides: whether 0.984 beats 0.969 depends on it (issue 24).

`group_stats` gives n, mean and sample sd (n - 1) of every evaluation metric the runs' summaries
hold, and per-class holdout accuracy mean and sd; `within_noise` says whether two groups' holdout
accuracies differ by less than the seed noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from typing import TYPE_CHECKING

from core.errors import UserError

if TYPE_CHECKING:
    import pandas as pd     # imported where a table is made: the sweeps CLI's --help stays light

SPLITS = ("train", "val", "holdout")
KINDS = ("acc", "top5", "gap", "balanced_acc", "macro_f1")
METRICS = tuple(f"{s}_{k}" for s in SPLITS for k in KINDS)    # summary keys of a run's evaluation
NOISE_SE = 2.0    # within the noise: |difference of means| <= 2 standard errors of that difference


@dataclass
class GroupStats:
    group: str
    runs: list                      # run ids of the group's finished runs, oldest first
    mean: dict                      # metric -> mean over the runs
    sd: dict                        # metric -> sample sd (n - 1; None with one run)
    per_class: pd.DataFrame | None = field(default=None, repr=False)   # label, name, mean, sd, n (holdout)

    @property
    def n(self) -> int:
        return len(self.runs)

    def to_dict(self) -> dict:
        """What `train --seeds ... --json` prints."""
        return {"group": self.group, "runs": list(self.runs), "n": self.n, "mean": self.mean, "sd": self.sd}

    def describe(self, metric: str = "holdout_acc") -> str:
        """'0.912 ± 0.014 (n = 3)'."""
        m, s = self.mean.get(metric), self.sd.get(metric)
        if m is None:
            return "—"
        return f"{m:.3f} ± {s:.3f} (n = {self.n})" if s is not None else f"{m:.3f} (n = {self.n})"


def parse_seeds(text) -> list[int]:
    """'0,1,2' (or a list of whole numbers) -> [0, 1, 2]: two or more different seeds of 0 or more."""
    items = text.split(",") if isinstance(text, str) else list(text or [])
    try:
        seeds = [int(t) for t in items if str(t).strip()]
    except ValueError:
        seeds = []
    if len(seeds) < 2 or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds takes two or more different whole numbers of 0 or more, like 0,1,2; got {text!r}.")
    return seeds


def member(cfg, seeds: list[int], seed: int, group: str = ""):
    """The config of the group's run for `seed`: every run draws the split with the first seed (or the
    config's own split_seed) while initialisation, augmentation and batch order follow `seed`. The
    first run is made with group "" and named by `name_group` once its id exists."""
    return replace(cfg, seed=seed, split_seed=split_seed_of(seeds, cfg.split_seed), group=group or "")


def split_seed_of(seeds: list[int], split_seed: int | None = None) -> int:
    """The seed a group's split is drawn with: the first seed, unless a split seed of 0 or more is given."""
    return seeds[0] if split_seed is None or split_seed < 0 else split_seed


def name_group(run) -> str:
    """The first run of a group names it: its own id goes into its config. Returns the group id."""
    run.update_config(replace(run.config(), group=run.id))
    return run.id


def group_of(config: dict | None) -> str:
    """The group id a run's stored config names ('' for a run outside any group)."""
    return (config or {}).get("group") or ""


def group_runs(store, group: str) -> list[dict]:
    """The group's finished runs (store rows), oldest first."""
    rows = [r for r in store.list() if group_of(r.get("config")) == group and r.get("status") == "done"]
    return sorted(rows, key=lambda r: r.get("created") or 0)


def group_stats(store, group: str) -> GroupStats:
    """n, mean and sample sd of every evaluation metric over the group's finished runs, and the
    per-class holdout accuracy's mean and sd (from each run's holdout evaluation)."""
    import pandas as pd
    rows = group_runs(store, group)
    if not rows:
        raise UserError(f"There is no finished run in seed group {group!r}.")
    table = pd.DataFrame([{k: (r.get("summary") or {}).get(k) for k in METRICS} for r in rows], dtype=float)
    table = table.dropna(axis=1, how="all")
    mean, sd = table.mean(), table.std(ddof=1)
    return GroupStats(group, [r["run_id"] for r in rows], {k: float(v) for k, v in mean.items()},
                      {k: None if math.isnan(v) else float(v) for k, v in sd.items()},
                      _per_class(store, [r["run_id"] for r in rows]))


def _per_class(store, run_ids: list) -> pd.DataFrame | None:
    """label, name, mean, sd, n of the per-class holdout accuracy over the runs that have one."""
    import pandas as pd
    frames = []
    for run_id in run_ids:
        e = store.evals(run_id).get("holdout") or {}
        if e.get("per_class") is None or e.get("labels") is None:
            continue
        names = e.get("names") or e["labels"]
        frames.append(pd.DataFrame({"label": list(map(str, e["labels"])), "name": list(names),
                                    "acc": pd.to_numeric(pd.Series(e["per_class"]), errors="coerce")}))
    if not frames:
        return None
    g = pd.concat(frames).groupby(["label", "name"], sort=False)["acc"]
    return g.agg(mean="mean", sd="std", n="count").reset_index()


@dataclass
class Noise:
    diff: float                 # mean of b - mean of a
    margin: float | None        # NOISE_SE standard errors of the difference; None: no spread known
    within: bool | None         # None: a group of one run has no spread to compare with

    def sentence(self, metric: str = "holdout accuracy") -> str:
        if self.within is None:
            return (f"The {metric} differs by {self.diff:+.3f}; both need two or more seeds to say "
                    f"whether that is more than the seed noise.")
        verdict = "within the seed noise" if self.within else "larger than the seed noise"
        return (f"The {metric} differs by {self.diff:+.3f}, {verdict} (±{self.margin:.3f}: two standard "
                f"errors of the difference of the means).")


def within_noise(a: GroupStats, b: GroupStats, metric: str = "holdout_acc") -> Noise:
    """Whether b's mean differs from a's by no more than the seed noise. Rule: |Δmean| <=
    2·sqrt(sd_a²/n_a + sd_b²/n_b), two standard errors of the difference of two means with unequal
    spreads (Welch's): about a 95% interval for many seeds; for 3 seeds Student's t would ask for
    about 2.8, so this rule leans towards calling a difference real. Both need n >= 2."""
    diff = b.mean[metric] - a.mean[metric]
    if a.sd.get(metric) is None or b.sd.get(metric) is None:
        return Noise(diff, None, None)
    margin = NOISE_SE * math.sqrt(a.sd[metric] ** 2 / a.n + b.sd[metric] ** 2 / b.n)
    return Noise(diff, margin, abs(diff) <= margin)
