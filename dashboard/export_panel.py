"""The model download of the Runs and Evaluate pages: one expander with a run's model as ONNX or
TorchScript. "Prepare" submits an `export` job (core.runs.tasks, the engine is core.serve.export,
the same as `python -m core export`); a progress line shows while it runs; then the download of the
checked file. A file is offered only while its content hashes to what was checked against PyTorch,
and its bytes are hashed again when the download is asked for."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import streamlit as st

from core.errors import UserError
from dashboard.common import live_job, store, user_error

FORMATS = {"ONNX": "onnx", "TorchScript": "torchscript"}
ABOUT = {"onnx": "for onnxruntime in Python, C++, C#, Java or JavaScript (see examples/classify_onnx.py)",
         "torchscript": "for PyTorch / LibTorch without this project (torch.jit.load)"}
LABEL = "Download the model (ONNX or TorchScript)"


def export_panel(run_id: str, key: str, label: str = LABEL) -> None:
    """The expander (it keeps its open/closed state across reruns, `{key}_open`, and is opened
    while an export runs); its content is built only while it is open (hashing a model file)."""
    from core.runs import jobs
    try:
        run = store().require(run_id)
    except UserError as e:
        user_error(e)
        return
    if not run.has_checkpoint():
        st.caption("No model to download yet: the run has no checkpoint (it is written after the first epoch).")
        return
    job = jobs.latest(store(), "export", run_id=run_id)
    if job and job["active"]:
        st.session_state[f"{key}_open"] = True
    box = st.expander(label, key=f"{key}_open", on_change="rerun", icon=":material/download:")
    if box.open:
        with box:
            export_buttons(run, key)


def export_buttons(run, key: str) -> None:
    """Format choice; then the export job's progress while it runs, else the download of a checked
    file, else a 'Prepare' button (and why an earlier file is not offered, or how the last try ended)."""
    from core.runs import jobs
    from core.serve.export import export_state
    choice = st.radio("Model file format", list(FORMATS), horizontal=True, key=f"{key}_fmt",
                      help="ONNX runs anywhere onnxruntime does; TorchScript loads in PyTorch or LibTorch. "
                           "Both carry the class names and the preprocessing inside.")
    fmt = FORMATS[choice]
    job = jobs.latest(store(), "export", run_id=run.id, format=fmt)
    if job and job["active"]:
        _progress(job["job_id"], choice, key)
        return
    try:
        result, problem = export_state(run, fmt)
    except UserError as e:
        user_error(e)
        return
    if result is not None:
        _download(result, choice, key)
        return
    if problem:
        st.warning(problem, icon="⚠️")
    elif job and job["status"] == "failed":
        st.error(f"The last {choice} export failed: {job.get('error')}", icon="🚫")
    elif job and job["status"] in ("cancelled", "interrupted"):
        st.info(f"The last {choice} export was {job['status']}; nothing was kept.", icon="⏹️")
    if st.button(f"Prepare {choice} export", key=f"{key}_prepare_{fmt}",
                 help=f"Writes the model as {choice} {ABOUT[fmt]}, then checks it against PyTorch (a background "
                      "job: it goes on if you leave the page)."):
        try:
            jobs.submit(store(), "export", {"format": fmt}, run_id=run.id)
        except UserError as e:
            user_error(e)
        else:
            st.rerun()


def _progress(job_id: str, choice: str, key: str) -> None:
    from core.runs import jobs

    def render(job, p, done, total):
        what = "waiting to start" if job["status"] in ("queued", "starting") or not total else p.get("stage", "")
        st.progress(min(done / max(total, 1), 1.0), text=f"Exporting to {choice} and checking it against "
                                                           f"PyTorch: {what}…")
        if st.button("Stop the export", key=f"{key}_cancel", icon="⏹️"):
            jobs.cancel(store(), job_id)
            st.toast("Stopping the export…")
    live_job(job_id, render)


def _download(result: dict, choice: str, key: str) -> None:
    from core.serve.export import verified_bytes
    path = Path(result["path"])
    fmt = result["format"]
    st.download_button(f"Download {choice} model ({result['bytes'] / 1e6:.1f} MB)", data=partial(verified_bytes, result),
                       file_name=path.name, mime="application/octet-stream", key=f"{key}_download_{fmt}",
                       on_click="ignore", icon=":material/download:", type="primary")
    side = Path(result["sidecar"])
    if side.exists():
        st.download_button("Metadata (JSON)", data=partial(_read, side), file_name=side.name,
                           mime="application/json", key=f"{key}_download_{fmt}_json", on_click="ignore",
                           type="tertiary")
    inp = result["input"]
    st.caption(f"Checked against PyTorch on {result['checked_on']}: largest logit difference "
               f"{result['max_abs_diff']:.1e} (limit {result['tolerance']:.0e}), top-1 agrees on "
               f"{result['top1_agree']:.0%}; sha256 {result['sha256'][:12]}… of the checked file. Input: RGB in "
               f"[0, 1], {inp['size']}×{inp['size']} ({inp['resize']}), N×3×H×W; {result['classes']} class labels "
               f"and names inside the file, {ABOUT[fmt]}.")


def _read(path: Path) -> bytes:
    return path.read_bytes()
