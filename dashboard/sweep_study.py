"""Reading sweeps for the Sweeps page: the study behind a sweep (core.runs.sweeps.info), its
trials' curves and parameter importance, cached per change of the study. The page only reads:
plain SELECTs, no lock held beyond one query, and it never trains."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core.errors import UserError
from core.runs import jobs, sweeps
from dashboard.common import store, user_error

POLL_S = 2.0                       # live refresh while trials run or a driver job is active


@st.cache_resource(show_spinner=False, max_entries=4)
def _rdb(url: str):
    """One Optuna storage (engine, connection pool) per URL: opening one costs ~0.1 s."""
    return sweeps.open_storage(url)


def storage_key() -> str:
    return sweeps.storage_url(None)            # the default storage of the current LANDMARKS_HOME


STAMP_SQL = """
SELECT COUNT(*), MAX(t.datetime_complete),
       SUM(CASE WHEN t.state = 'RUNNING' THEN 1 ELSE 0 END),
       (SELECT COUNT(*) FROM trial_intermediate_values v JOIN trials t2 ON v.trial_id = t2.trial_id
         WHERE t2.study_id = s.study_id),
       (SELECT COUNT(*) FROM trial_user_attributes a JOIN trials t3 ON a.trial_id = t3.trial_id
         WHERE t3.study_id = s.study_id),
       (SELECT MAX(u.value_json) FROM study_user_attributes u WHERE u.study_id = s.study_id AND u.key = 'cancelled'),
       (SELECT MAX(n.value_json) FROM study_user_attributes n WHERE n.study_id = s.study_id AND n.key = 'notes_at')
FROM studies s LEFT JOIN trials t ON t.study_id = s.study_id
WHERE s.study_name = :name GROUP BY s.study_id"""


def stamp(name: str) -> tuple:
    """Changes whenever the study does (a trial asked, reported, told; an attribute set; the sweep
    cancelled, a note written): one read-only aggregate query, no lock held beyond it. Falls back to a 2 s clock."""
    try:
        import sqlalchemy
        with _rdb(storage_key()).engine.connect() as c:
            row = c.execute(sqlalchemy.text(STAMP_SQL), {"name": name}).first()
        return tuple(str(v) for v in row) if row else ("missing",)
    except Exception:  # noqa: BLE001 - another schema or backend: refresh on a 2 s clock instead
        return ("clock", int(time.time() // POLL_S))


@st.cache_data(show_spinner=False, max_entries=32)
def _info(url: str, name: str, stamp_: tuple) -> dict:
    import optuna
    study = optuna.load_study(study_name=name, storage=_rdb(url))
    return sweeps.info(name, None, study=study)


def load_info(name: str) -> dict:
    return with_run_curves(_info(storage_key(), name, stamp(name)))


def _read_curve(run_id: str) -> dict[int, float]:
    try:
        ep = store().epochs(run_id)
    except Exception:  # noqa: BLE001 - a run deleted or unreadable: no curve, the rest still shows
        return {}
    return {int(e): float(v) for e, v in zip(ep["epoch"], ep["val_acc"]) if pd.notna(v)}


@st.cache_data(show_spinner=False, max_entries=4096)
def _ended_curve(url: str, run_id: str, state: str) -> dict[int, float]:
    return _read_curve(run_id)


def with_run_curves(info: dict) -> dict:
    """Curves from the trials' runs where Optuna holds none (the driver reports per-epoch values only
    when it prunes): an ended run's once, a running one's at every refresh."""
    if all(c["curve"] or not c.get("run_id") for c in info["configs"]):
        return info
    configs = []
    for c in info["configs"]:
        if not c["curve"] and c.get("run_id") and c["state"] != "waiting":
            curve = _read_curve(c["run_id"]) if c["state"] == "running" else \
                _ended_curve(storage_key(), c["run_id"], c["state"])
            c = {**c, "curve": curve}
            if c["val_acc"] is None and curve and c["state"] != "complete":
                c["val_acc"] = curve[max(curve)]
        configs.append(c)
    return {**info, "configs": configs}


@st.cache_data(show_spinner="Estimating parameter importance…", max_entries=16)
def _importance(url: str, name: str, stamp_: tuple) -> dict:
    return sweeps.importance(name)


def importance(name: str, info: dict) -> dict:
    """Optuna's parameter importance, estimated again only when a trial has completed."""
    return _importance(storage_key(), name, (info["counts"]["complete"], stamp(name)[1]))


@st.cache_data(show_spinner=False, ttl=POLL_S, max_entries=4)
def _names(url: str) -> list[dict]:
    return sweeps.names()


def sweep_list() -> list[dict]:
    try:
        return _names(storage_key())
    except UserError as e:
        user_error(e)
        return []


def forget_cache() -> None:
    _names.clear()


def driver_job(name: str) -> dict | None:
    return jobs.latest(store(), "sweep", name=name)


def is_live(info: dict, job: dict | None) -> bool:
    return bool(info["counts"]["running"] or (job and job["active"]))
