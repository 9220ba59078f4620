"""Report: the poster regenerated from chosen runs (issue 24). Pick runs; "Build the report" submits
a `report` job (core.runs.tasks, the builder is core.report, the same as `python -m core report`), its
progress shows while it runs, then the HTML file's download and a preview of it."""
from functools import partial
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from core.errors import UserError
from core.runs import jobs
from core.runs.tasks import report_path
from dashboard.common import live_job, run_picker, store, user_error

st.session_state.setdefault("rep_class_models", False)
st.session_state.setdefault("rep_preview", True)
PREVIEW_PX = 900          # height of the preview frame

st.title("📄 Report")
st.caption("The poster's figures from your runs — class distribution, the sweep (or the runs' validation curves), "
           "the holdout table beside the poster's numbers, confusion, per-class accuracy, saliency and vanilla "
           "backpropagation, class model images and each run's record — as one HTML file that opens without a "
           "network or a server and prints from the browser.")

run_ids = run_picker("Runs in the report", key="rep_runs", multi=True, default_best=False)
st.checkbox("Draw the missing class model images first (slower)", key="rep_class_models",
            help="Without it, Fig. 7 shows the class model images already made and marks the missing ones.")
job = jobs.latest(store(), "report")


def _progress(job, p, done, total):
    what = "waiting to start" if job["status"] in ("queued", "starting") or not total else p.get("stage", "")
    st.progress(min(done / max(total, 1), 1.0), text=f"Building the report: {what}…")
    if st.button("Stop", key="rep_cancel", icon="⏹️"):
        jobs.cancel(store(), job["job_id"])


def _read(path: Path) -> bytes:
    return path.read_bytes()


if job and job["active"]:
    live_job(job["job_id"], _progress)
elif st.button("Build the report", type="primary", key="rep_build", disabled=not run_ids,
               help="A background job: it goes on if you leave the page."):
    try:
        jobs.submit(store(), "report", {"runs": list(run_ids), "out": str(report_path()),
                                        "class_models": bool(st.session_state["rep_class_models"])})
    except UserError as e:
        user_error(e)
    else:
        st.rerun()

if job and job["status"] == "failed":
    st.error(f"The last report failed: {job.get('error')}", icon="🚫")
elif job and job["status"] == "done":
    result = job.get("result") or {}
    path = Path(result.get("path", ""))
    if not path.is_file():
        st.warning(f"The last report, {path.name}, is gone from {path.parent}; build it again.", icon="⚠️")
    else:
        for note in result.get("notes") or ():
            st.warning(note, icon="⚠️")
        st.download_button(f"Download the report ({result['bytes'] / 1e6:.1f} MB, HTML)", data=partial(_read, path),
                           file_name=path.name, mime="text/html", key="rep_download", on_click="ignore",
                           icon=":material/download:", type="primary")
        st.caption(f"Runs: {', '.join(result.get('runs') or [])}. Saved as {path} (built in {result['seconds']:.0f} s).")
        if st.toggle("Preview", key="rep_preview"):
            components.html(path.read_text(), height=PREVIEW_PX, scrolling=True)
