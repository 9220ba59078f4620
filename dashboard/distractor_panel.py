"""Distractors on the Evaluate and Compare pages (issue 23): a folder of photos of no known landmark
whose query half joins the holdout, GAP with distractors beside GAP, and the precision-coverage curve.

The folder is remembered per data set in st.session_state (`eval_distractor_folders`: data set
path -> folder) and in the URL (`?distractors=`), so a reload or a shared link keeps it. Scoring is
a `distractors` job (core.runs.tasks: the run's model over the query half, in its own process, so a
large folder never blocks the page); a progress line shows while it runs, and its result is kept in
the run folder (distractors_holdout.json), where this panel and Compare read it. It runs again only
when the folder changes or the user asks.
"""
from __future__ import annotations

from functools import partial

import plotly.graph_objects as go
import streamlit as st

from core import access
from core.errors import UserError
from dashboard.common import live_job, store, user_error

PARAM = "distractors"                     # the URL parameter
FOLDERS = "eval_distractor_folders"       # session key: data set path -> distractor folder
SPLIT = "holdout"                         # distractors join the holdout as queries


def coverage_figure(curves: dict[str, list[dict]]) -> go.Figure:
    """Precision against coverage, one line per run (name -> curve points)."""
    fig = go.Figure()
    for name, curve in curves.items():
        fig.add_trace(go.Scatter(
            x=[p["coverage"] for p in curve], y=[p["precision"] for p in curve], mode="lines+markers", name=name,
            customdata=[p["confidence"] for p in curve],
            hovertemplate="coverage %{x:.1%}<br>precision %{y:.1%}<br>confidence ≥ %{customdata:.3f}<extra></extra>"))
    fig.update_layout(title="Precision–coverage (distractor answers count as wrong)", height=360,
                      xaxis=dict(title="coverage: share of queries answered", range=[0, 1.02], tickformat=".0%"),
                      yaxis=dict(title="precision of the answers", range=[0, 1.02], tickformat=".0%"),
                      margin=dict(t=50, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def _remembered(dataset: str) -> str:
    folders = st.session_state.setdefault(FOLDERS, {})
    if dataset not in folders and st.query_params.get(PARAM):
        folders[dataset] = st.query_params[PARAM]
    return folders.get(dataset, "")


def _remember(dataset: str, key: str) -> None:
    typed = st.session_state[key].strip()
    st.session_state[FOLDERS][dataset] = typed
    if typed:
        st.query_params[PARAM] = typed
    elif PARAM in st.query_params:
        del st.query_params[PARAM]


def distractor_panel(run_id: str, dataset: str) -> None:
    """The Evaluate page's distractor field and, once set, GAP with distractors and the curve."""
    st.subheader("Photos of no known landmark (distractors)")
    key = f"eval_distractors::{dataset}"
    if key not in st.session_state:
        st.session_state[key] = _remembered(dataset)
    typed = st.text_input("Distractor folder", key=key, on_change=_remember, args=(dataset, key),
                          placeholder="a folder of photos that show none of this run's landmarks",
                          help="Half of its photos (a fixed hash of each path) join the holdout as queries "
                               "labelled 'no landmark'; the other half is kept to tune thresholds. Remembered per "
                               "data set.").strip()
    if not typed:
        st.caption("Set a folder to score this run as the Google Landmark Recognition challenge does: most "
                   "queries there show no known landmark.")
        return
    run = store().run(run_id)
    try:
        folder = str(access.confine(typed, "distractor folder"))
    except UserError as e:
        user_error(e)
        return
    result = run.read_distractors(SPLIT)
    if not score(run_id, folder, result):
        return
    show_result(result)


def score(run_id: str, folder: str, result: dict | None) -> bool:
    """Whether `result` (the stored scoring) is the one to show: otherwise a `distractors` job is
    started for `folder` (a new folder, or "Score again") and its progress shows, or how the last
    try for this folder ended."""
    from core.runs import jobs
    job = jobs.latest(store(), "distractors", run_id=run_id)
    if job and job["active"]:
        live_job(job["job_id"], partial(_progress, job["job_id"]))
        return False
    again = st.button("Score again", key="eval_distractors_again", help="After adding or removing photos.")
    stale = not result or result.get("folder") != folder
    ended = job if job and job["args"].get("folder") == folder and job["status"] != "done" else None
    if stale and ended and not again:            # never started again by itself: say how it ended
        if ended["status"] == "failed":
            st.error(ended.get("error") or "Scoring the distractors failed.", icon="🚫")
        else:
            st.info(f"Scoring the distractors was {ended['status']}; press “Score again” to start over.", icon="⏹️")
        return False
    if again or stale:
        try:
            jobs.submit(store(), "distractors", {"folder": folder, "split": SPLIT}, run_id=run_id)
        except UserError as e:
            user_error(e)
            return False
        st.rerun()
    return True


def _progress(job_id: str, job: dict, p: dict, done: int, total: int) -> None:
    from core.runs import jobs
    what = f"{done:,}/{total:,} images" if total else "waiting to start"
    st.progress(min(done / max(total, 1), 1.0), text=f"Scoring the distractors: {what}…")
    if st.button("Stop scoring", key="eval_distractors_stop", icon="⏹️"):
        jobs.cancel(store(), job_id)


def show_result(r: dict) -> None:
    c = st.columns(4)
    c[0].metric("GAP (known landmarks)", f"{r['gap']:.3f}")
    c[1].metric(f"GAP with distractors (+{r['distractors']})", f"{r['gap_with_distractors']:.3f}",
                help="Every query ranked by confidence; an answer on a distractor is always wrong; divided by the "
                     "queries that show a known landmark (Kaggle, Google Landmark Recognition 2020).")
    c[2].metric("Accuracy (known landmarks)", f"{r['acc_known']:.3f}")
    c[3].metric("Distractor queries", f"{r['distractors']:,}")
    notes = [f"{r['known']:,} holdout images and {r['distractors']:,} distractors scored; "
             f"{r['distractors_tune']:,} distractors kept aside to tune thresholds."]
    if r.get("distractors_left_out"):
        notes.append(f"{r['distractors_left_out']:,} image(s) of the folder are photos of this run's data set "
                     "(same path or same bytes) and were left out.")
    if r.get("distractors_unreadable"):
        notes.append(f"{r['distractors_unreadable']:,} distractor image(s) could not be read and were skipped.")
    st.caption(" ".join(notes))
    st.plotly_chart(coverage_figure({"this run": r["coverage_curve"]}), key="eval_coverage")


def compare_distractors(runs: list[dict], names: dict) -> None:
    """Compare: GAP with distractors and the coverage curves of the runs that have them."""
    results = {r["run_id"]: store().run(r["run_id"]).read_distractors(SPLIT) for r in runs}
    have = {k: v for k, v in results.items() if v}
    if len(have) < 2:
        if have:
            st.caption("Only one of these runs has been scored with distractors (Evaluate page); score the "
                       "other to compare GAP with distractors.")
        return
    st.subheader("With distractors")
    import pandas as pd
    rows = [{"run": names[k], "gap": v["gap"], "gap_d": v["gap_with_distractors"], "acc": v["acc_known"],
             "n": v["distractors"], "folder": v.get("folder")} for k, v in have.items()]
    num = st.column_config.NumberColumn
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="cmp_distractors", column_config={
        "run": "Run", "gap": num("GAP", format="%.3f"), "gap_d": num("GAP with distractors", format="%.3f"),
        "acc": num("Accuracy (known)", format="%.3f"), "n": num("Distractors", format="%d"),
        "folder": "Distractor folder"})
    if len({v.get("folder") for v in have.values()}) > 1:
        st.warning("These runs were scored with different distractor folders: their figures are not comparable.")
    st.plotly_chart(coverage_figure({names[k]: v["coverage_curve"] for k, v in have.items()}),
                    key="cmp_coverage")
