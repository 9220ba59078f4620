"""Calibration on the Evaluate and Compare pages (issue 23): ECE and the reliability diagram before
and after temperature scaling, the temperature and the rejection threshold, when and on how many
images they were fitted, and a `calibrate` job (core.runs.tasks) for a run that has none: runs are
calibrated at the end of training, older runs (or runs trained with --calibrate off) on demand here.
"""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core.train import calibration
from dashboard.common import job_button, live_job, store


@st.cache_data(show_spinner=False, max_entries=16)
def load_predictions(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_parquet(path, columns=["target", "pred", "conf"])


def current_calibration(run):
    from core.serve.predictor import current_calibration as current     # imports torch: only when shown
    return current(run)


def reliability_figure(bins: list[dict], title: str, after: list[dict] | None = None):
    """Accuracy per confidence bin as bars against the diagonal (a perfectly calibrated model's),
    the count of each bin written on its bar; with `after`, the bins after temperature scaling as a
    second bar beside each (one chart: the two are read against one diagonal)."""
    import plotly.graph_objects as go
    fig = go.Figure()
    shown = [("before", bins, "#4c78a8")] + ([("after temperature scaling", after, "#f58518")] if after else [])
    for i, (name, bs, colour) in enumerate(shown):
        full = [b for b in bs if b["count"]]
        w = [(b["hi"] - b["lo"]) / len(shown) for b in full]
        fig.add_trace(go.Bar(x=[b["lo"] + (i + 0.5) * wi for b, wi in zip(full, w)], y=[b["acc"] for b in full],
                             width=w, text=[f"{b['count']:,}" for b in full], textposition="outside", name=name,
                             marker_color=colour,
                             customdata=[[b["lo"], b["hi"], b["count"], b["conf"]] for b in full],
                             hovertemplate=f"{name}<br>confidence %{{customdata[0]:.2f}}–%{{customdata[1]:.2f}}<br>"
                                           "%{customdata[2]} images, mean confidence %{customdata[3]:.3f}<br>"
                                           "accuracy %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="calibrated", line=dict(dash="dash",
                                                                                          color="grey")))
    fig.update_layout(title=title, height=340, margin=dict(l=40, r=10, t=40, b=40), showlegend=bool(after),
                      legend=dict(orientation="h", y=-0.2),
                      xaxis=dict(title="confidence", range=[0, 1]), yaxis=dict(title="accuracy", range=[0, 1.1]))
    return fig


def fitted_text(cal: dict) -> str:
    """When and on how many images a calibration was fitted (one written before these were kept: on
    demand, on its validation report's images)."""
    n = cal.get("fit_images", (cal.get("splits") or {}).get("val", {}).get("n"))
    of = cal.get("val_images")
    images = f"{n:,} of {of:,}" if of and n != of else f"{n:,}" if n is not None else "its"
    when = cal.get("fitted", "on demand")
    at = f" ({time.strftime('%Y-%m-%d %H:%M', time.localtime(cal['fitted_at']))})" if cal.get("fitted_at") else ""
    return (f"Fitted {'at the end of training' if when == 'end of training' else 'on demand'}{at} on {images} "
            f"validation images" + (f" (a seeded subsample: at most {calibration.MAX_FIT_IMAGES:,} are used)"
                                    if of and n != of else "") + ".")


def calibrate_button(run_id: str, job: dict | None) -> None:
    """Start a `calibrate` job (core.runs.tasks); say how the last one ended when it did not."""
    if job and job["status"] == "failed":
        st.error(f"The last calibration failed: {job.get('error')}", icon="🚫")
    elif job and job["status"] in ("cancelled", "interrupted"):
        st.info(f"The last calibration was {job['status']}; nothing was kept.", icon="⏹️")
    job_button("Calibrate now", "calibrate", run_id, "eval_calibrate",
               help="A background job: it goes on if you leave the page.")


def calibration_progress(job_id: str) -> None:
    from core.runs import jobs

    def render(job, p, done, total):
        what = f"{done:,}/{total:,} images" if total else "waiting to start"
        st.progress(min(done / max(total, 1), 1.0), text=f"Calibrating (validation, then holdout images): {what}…")
        if st.button("Stop calibrating", key="eval_calibrate_stop", icon="⏹️"):
            jobs.cancel(store(), job_id)
    live_job(job_id, render)


def calibration_section(run_id: str, split: str, label: str) -> None:
    """ECE and the reliability diagram of the split, before and (once calibrated) after temperature
    scaling. Runs are calibrated at the end of training; one that is not (trained before, or with
    --calibrate off) is calibrated here on demand, by a `calibrate` job."""
    from core.runs import jobs
    st.subheader("Calibration")
    run = store().require(run_id)
    f = run.predictions_file(split)
    if split == "train" or not f.exists():
        st.caption("Calibration is shown for the validation and holdout splits.")
        return
    cal = current_calibration(run)
    job = jobs.latest(store(), "calibrate", run_id=run_id)
    if job and job["active"]:
        calibration_progress(job["job_id"])
    elif cal is None:
        n = len(load_predictions(str(run.predictions_file("val")), run.predictions_file("val").stat().st_mtime)) \
            if run.predictions_file("val").exists() else 0
        st.info(f"This run has no calibration yet (runs trained since calibration exists get one at the end of "
                f"training): temperature scaling fitted on its {min(n, calibration.MAX_FIT_IMAGES):,} validation "
                "images (one forward pass each), which also sets the confidence below which Classify answers "
                "“none of the landmarks”.", icon="🌡️")
        calibrate_button(run_id, job)
    preds = load_predictions(str(f), f.stat().st_mtime)
    before = calibration.reliability(preds["conf"], preds["pred"] == preds["target"])
    ece = calibration.ece(preds["conf"], preds["pred"] == preds["target"])
    if cal is None:
        st.metric(f"ECE ({calibration.BINS} bins)", f"{ece:.3f}", help="Expected calibration error, before any "
                  "calibration: the images' share times |accuracy − mean confidence|, summed over the bins.")
        st.plotly_chart(reliability_figure(before, f"{label}: reliability"), key="eval_reliability")
        return
    r = cal["splits"].get(split, {})
    if r.get("n") and r["n"] != len(preds) and r.get("bins_before"):     # fitted on a subsample: compare like with like
        before, ece = r["bins_before"], r["ece_before"]
    c = st.columns(4)
    c[0].metric("Temperature", f"{cal['temperature']:.3f}", help="Fitted on the validation images: every logit is "
                "divided by it (Guo et al. 2017). Above 1 the model was over-confident.")
    c[1].metric("ECE before", f"{ece:.3f}")
    c[2].metric("ECE after", "—" if r.get("ece_after") is None else f"{r['ece_after']:.3f}",
                help=f"On {r['n']:,} {label.lower()} images." if r.get("n") else None)
    c[3].metric("Rejection threshold", f"{cal['threshold']:.3f}",
                help=f"The lowest calibrated confidence whose answers were right at least "
                     f"{cal.get('target_precision', calibration.TARGET_PRECISION):.0%} of the time on validation.")
    reached = "" if cal.get("target_reached", True) else " (the target precision was not reached: the most " \
        "precise confidence is kept)"
    st.caption(f"{fitted_text(cal)} Expected calibration error: over {calibration.BINS} equal confidence bins, the "
               f"images' share times |accuracy − mean confidence|. Below the threshold Classify answers “none of the "
               f"landmarks”; on validation it answers {cal.get('coverage') or 0:.0%} of the images, right "
               f"{cal.get('precision') or 0:.0%} of the time{reached}."
               + (f" GAP with calibrated confidences: {r['gap_after']:.3f}." if r.get("gap_after") is not None else ""))
    st.plotly_chart(reliability_figure(before, f"{label}: reliability before and after temperature scaling",
                                       after=r.get("bins_after")), key="eval_reliability")
    if not (job and job["active"]):
        calibrate_again(run_id, job)


def calibrate_again(run_id: str, job: dict | None) -> None:
    """A calibrated run fitted again (after its data changed, say), in a small expander."""
    with st.expander("Calibrate again"):
        calibrate_button(run_id, job)


def compare_calibration(runs: list[dict], names: dict) -> None:
    """ECE before/after temperature scaling, the temperature and the rejection threshold of each
    calibrated run side by side (issue 23; its calibration.json, fitted on the current checkpoint)."""
    cals = {r["run_id"]: current_calibration(store().require(r["run_id"])) for r in runs}
    rows = [{"run": names[k], "ece_before": c["ece_before"], "ece_after": c["ece_after"], "ece_on": c.get("ece_on"),
             "temperature": c["temperature"], "threshold": c["threshold"], "coverage": c.get("coverage"),
             "fitted": f"{c.get('fitted', 'on demand')}, {c.get('fit_images', c['splits']['val']['n']):,} images"}
            for k, c in cals.items() if c]
    if not rows:
        return
    st.subheader("Calibration")
    num = st.column_config.NumberColumn
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="cmp_calibration", column_config={
        "run": "Run", "ece_before": num("ECE before", format="%.3f"), "ece_after": num("ECE after", format="%.3f"),
        "ece_on": st.column_config.TextColumn("ECE on", help="The split the ECE is measured on (holdout where the "
                                                              "run has one)."),
        "temperature": num("Temperature", format="%.3f", help="Every logit is divided by it; above 1 the model "
                                                              "was over-confident."),
        "threshold": num("Rejection threshold", format="%.3f", help="Below it Classify answers “none of the "
                                                                     "landmarks”."),
        "coverage": num("Answered (val)", format="percent", help="Share of the validation images at or above "
                                                                  "the threshold."),
        "fitted": st.column_config.TextColumn("Fitted", help="When (end of training or on demand) and on how "
                                                             "many validation images.")})
    missing = [names[k] for k, c in cals.items() if not c]
    if missing:
        st.caption(f"Not calibrated yet: {', '.join(missing)} (the Evaluate page calibrates on demand).")
