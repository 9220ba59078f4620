"""The Evaluate page's "Label issues and duplicates" panel (issue 22).

"Find label issues and duplicates" submits an `inspect` job (core.runs.tasks; the engine is
core.serve.inspect, the same as `python -m core inspect`); a progress line shows while it runs;
then, from the run folder's inspect.json (written whole at the end: a cancelled job shows the
previous result or none), the leak sentence and two tables with thumbnails: label issues (given →
suggested, score) and near-duplicates (both photos, similarity, splits). Rows are selectable; the
chosen photos go to the data-set version form (dashboard.versions.version_form: exclude them, or
relabel the label issues to their suggested labels, into a new version; nothing on disk changes)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import UserError
from dashboard.common import job_button, live_job, store, user_error

LABEL = "Label issues and duplicates"
ROWS = 100                 # rows per table (the run folder's inspect.json has every image)
THUMB = 64                 # px, the tables' thumbnails


@st.cache_data(show_spinner=False, max_entries=8)
def load_inspection(path: str, mtime: float) -> dict | None:
    import json
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@st.cache_data(show_spinner=False, max_entries=2048)
def thumb_uri(path: str, mtime: float) -> str | None:
    """A small PNG data URI of a photo (st.column_config.ImageColumn shows it), or None."""
    from core.data.readers import open_image
    try:
        im = open_image(path, draft=2 * THUMB).convert("RGB")
    except (UserError, OSError, ValueError):
        return None
    im.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(root: Path, image: str) -> str | None:
    p = root / image
    try:
        return thumb_uri(str(p), p.stat().st_mtime)
    except OSError:
        return None


def inspect_panel(run_id: str, data_root: str, key: str = "eval_inspect") -> None:
    """The panel, and the version form for the photos chosen in its tables."""
    from dashboard.versions import version_form
    picked, relabel = _panel(run_id, data_root, key)
    if picked:
        version_form(data_root, picked, key=f"{key}_version", relabel_to=relabel or None)


def _panel(run_id: str, data_root: str, key: str) -> tuple[list[str], dict]:
    """(chosen images relative to the data set root, {label issue: its suggested label})."""
    from core.runs import jobs
    try:
        run = store().require(run_id)
    except UserError as e:
        user_error(e)
        return [], {}
    st.subheader(LABEL)
    job = jobs.latest(store(), "inspect", run_id=run_id)
    if job and job["active"]:
        _progress(job["job_id"], key)
        return [], {}
    if job and job["status"] == "failed":
        st.error(f"The last inspection failed: {job.get('error')}", icon="🚫")
    elif job and job["status"] in ("cancelled", "interrupted"):
        st.info(f"The last inspection was {job['status']}; nothing of it was kept.", icon="⏹️")
    f = run.inspect_file
    result = load_inspection(str(f), f.stat().st_mtime) if f.exists() else None
    job_button("Find label issues and duplicates", "inspect", run_id, f"{key}_start", icon=":material/search:",
               type="secondary" if result else "primary",
               help="Ranks every photo of the run's split by how likely its label is wrong (a linear probe on "
                    "ImageNet features, fitted out of fold, and Cleanlab), and finds near-identical photos. "
                    "A background job: it goes on if you leave the page.")
    if result is None:
        return [], {}
    return _tables(result, Path(data_root).expanduser(), key)


def _progress(job_id: str, key: str) -> None:
    from core.runs import jobs

    def render(job, p, done, total):
        what = "waiting to start" if job["status"] in ("queued", "starting") else p.get("stage", "starting")
        count = f" {done:,}/{total:,}" if total else ""
        st.progress(min(done / total, 1.0) if total else 0.0, text=f"Inspecting the photos: {what}{count}…")
        if st.button("Stop the inspection", key=f"{key}_cancel", icon="⏹️"):
            jobs.cancel(store(), job_id)
            st.toast("Stopping the inspection…")
    live_job(job_id, render)


def _tables(result: dict, root: Path, key: str) -> tuple[list[str], dict]:
    from core.serve.inspect import leak_sentence, missing_sentence
    note = missing_sentence(result)
    if note:
        st.warning(note, icon="⚠️")
    st.markdown(leak_sentence(result["leaks"]))
    st.caption(f"{result['images']:,} photos; features: {result['features']}; probe fitted out of "
               f"{result['folds']} folds; duplicates: cosine ≥ {result['threshold']}.")
    issues = pd.DataFrame(result["label_issues"][:ROWS])
    chosen: list[str] = []
    relabel: dict = {}
    if len(issues):
        flagged = sum(r["flagged"] for r in result["label_issues"])
        st.markdown(f"**Label issues** — {flagged:,} photo(s) flagged by Cleanlab; the {len(issues)} most likely "
                    "wrong first (score: how likely the given label is wrong)")
        table = pd.DataFrame({"photo": [_thumb(root, i) for i in issues["image"]],
                              "given → suggested": [f"{g} → {s}" for g, s in zip(issues["given_name"],
                                                                                   issues["suggested_name"])],
                              "score": issues["score"], "split": issues["split"],
                              "copy with another label": issues["conflict"].fillna(""),   # no literal "None"
                              "image": issues["image"]})
        sel = st.dataframe(table, key=f"{key}_issues", on_select="rerun", selection_mode="multi-row",
                           hide_index=True, row_height=THUMB + 8,
                           column_config={"photo": st.column_config.ImageColumn("photo", width="small"),
                                          "score": st.column_config.ProgressColumn("score", min_value=0.0,
                                                                                    max_value=1.0, format="%.3f")})
        chosen += [issues["image"][i] for i in sel.selection.rows]
        relabel = {issues["image"][i]: issues["suggested"][i] for i in sel.selection.rows}
    dups = pd.DataFrame(result["duplicates"][:ROWS])
    if len(dups):
        st.markdown(f"**Near-duplicates** — {len(result['duplicates']):,} pair(s); the most similar first")
        table = pd.DataFrame({"photo A": [_thumb(root, a) for a in dups["a"]],
                              "photo B": [_thumb(root, b) for b in dups["b"]],
                              "similarity": dups["similarity"],
                              "splits": [" / ".join(s) for s in dups["splits"]],
                              "labels": [" / ".join(s) for s in dups["labels"]], "A": dups["a"], "B": dups["b"]})
        sel = st.dataframe(table, key=f"{key}_dups", on_select="rerun", selection_mode="multi-row",
                           hide_index=True, row_height=THUMB + 8,
                           column_config={"photo A": st.column_config.ImageColumn("photo A", width="small"),
                                          "photo B": st.column_config.ImageColumn("photo B", width="small"),
                                          "similarity": st.column_config.NumberColumn(format="%.4f")})
        dropped = [dups["b"][i] for i in sel.selection.rows]     # the second of a pair: the copy to drop
        chosen += dropped
        if dropped:
            relabel = {}                      # duplicates are excluded, not relabelled
    else:
        st.markdown("**Near-duplicates** — none at this threshold.")
    return list(dict.fromkeys(chosen)), relabel
