"""The map of a run's embeddings on the Evaluate page (issue 22).

core.serve.embeddings stores one unit vector per photo and its 2-D map (t-SNE, PCA-2 above 20,000);
this draws them as a WebGL scatter (plotly Scattergl) coloured by class (the TOP_CLASSES largest
distinct, the rest grey), by right/wrong or by confidence. Built for 20,000 points: the colouring
is vectorised (no loop over points), one trace per colour group, and only the clicked point gets
a thumbnail (the detail view of dashboard.photo_views). Without embeddings: a button queues the
"embed" job and its progress line shows; stale ones (another checkpoint) say so and offer a recompute.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.runs import jobs
from dashboard import photo_views
from dashboard.common import home_key, job_button, live_job, store

TOP_CLASSES = 20               # classes drawn in their own colour; the rest share REST_COLOR
REST_COLOR = "#b8b8b8"
RIGHT_COLOR, WRONG_COLOR = "#4c78a8", "#e45756"
MARKER_PX = 5
COLOURINGS = {"class": "Class", "correct": "Right / wrong", "conf": "Confidence"}
HOVER = ("%{customdata[2]} (label %{customdata[1]})<br>predicted %{customdata[5]} · confidence "
         "%{customdata[3]:.1%}<br>%{customdata[4]}<extra></extra>")


# ------------------------------------------------------------------ loading

@st.cache_resource(show_spinner="Loading the embeddings…", max_entries=4)
def _load(home: str, run_id: str, stamp: float):
    """Embeddings of a run (cache key: the rows file's mtime; the object keeps its faiss indexes)."""
    from core.serve.embeddings import load
    return load(store().run(run_id))


def embeddings(run_id: str):
    """The run's embeddings, or None while they are not computed."""
    try:
        stamp = store().run(run_id).embedding_rows_file.stat().st_mtime
    except OSError:
        return None
    return _load(home_key(), run_id, stamp)


# ------------------------------------------------------------------ the figure (pure)

def class_groups(frame: pd.DataFrame, top: int = TOP_CLASSES) -> list[tuple[str, str, np.ndarray]]:
    """(legend name, colour, rows) per colour group: every class when there are at most `top`,
    else the `top` largest and one grey group for the rest."""
    target = frame["target"].to_numpy()
    counts = pd.Series(target).value_counts(sort=True)
    classes = counts.index.to_numpy()
    kept = classes if len(classes) <= top else classes[:top]
    palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    order = np.argsort(target, kind="stable")                       # rows grouped by class, no loop per point
    bounds = np.searchsorted(target[order], kept)
    ends = np.searchsorted(target[order], kept, side="right")
    names = frame["name"].astype(str).to_numpy()
    groups = [(names[order[b]], palette[i % len(palette)], order[b:e])
              for i, (b, e) in enumerate(zip(bounds, ends))]
    if len(classes) > len(kept):
        rest = np.flatnonzero(~np.isin(target, kept))
        groups.append((f"{len(classes) - len(kept):,} other classes", REST_COLOR, rest))
    return groups


def map_figure(frame: pd.DataFrame, by: str, names) -> go.Figure:
    """The WebGL scatter of the map: one trace per colour group (`by`: class, correct or conf)."""
    custom = np.empty((len(frame), 6), dtype=object)                 # row, label, name, conf, path, predicted
    custom[:, 0] = np.arange(len(frame))
    custom[:, 1] = frame["label"].astype(str).to_numpy()
    custom[:, 2] = frame["name"].astype(str).to_numpy()
    custom[:, 3] = frame["conf"].to_numpy(dtype=np.float64)
    custom[:, 4] = frame["path"].astype(str).to_numpy()
    custom[:, 5] = np.asarray(names, dtype=object)[frame["pred"].to_numpy(dtype=np.int64)]
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    fig = go.Figure()
    if by == "conf":
        fig.add_trace(go.Scattergl(x=x, y=y, mode="markers", customdata=custom, hovertemplate=HOVER, name="photos",
                                   marker=dict(size=MARKER_PX, color=frame["conf"].to_numpy(), cmin=0, cmax=1,
                                               colorscale="Viridis", colorbar=dict(title="confidence"))))
    else:
        if by == "correct":
            right = frame["correct"].to_numpy(dtype=bool)
            groups = [("right", RIGHT_COLOR, np.flatnonzero(right)), ("wrong", WRONG_COLOR, np.flatnonzero(~right))]
        else:
            groups = class_groups(frame)
        for name, color, rows in groups:
            fig.add_trace(go.Scattergl(x=x[rows], y=y[rows], mode="markers", customdata=custom[rows], name=name,
                                       hovertemplate=HOVER, marker=dict(size=MARKER_PX, color=color)))
    fig.update_layout(height=560, margin=dict(l=10, r=10, t=10, b=10), clickmode="event+select", dragmode="pan",
                      legend=dict(itemsizing="constant"), xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def clicked_row(points) -> int | None:
    """The frame row of the first clicked point (its customdata[0])."""
    for p in points or ():
        custom = p.get("customdata")
        if custom:
            return int(custom[0])
    return None


# ------------------------------------------------------------------ the section

def _on_click(key: str, run_id: str, frame: pd.DataFrame) -> None:
    row = clicked_row((st.session_state.get(key) or {}).get("selection", {}).get("points"))
    if row is not None:
        r = frame.iloc[row]
        record = {"path": str(r["path"]), "target": int(r["target"]), "pred": int(r["pred"]),
                  "conf": float(r["conf"])}
        photo_views.open_photo(run_id, str(r["split"]), record, "map")


def compute_button(run_id: str, label: str) -> None:
    """Queue the "embed" job, or show the running one's progress."""
    job = jobs.latest(store(), "embed", run_id=run_id)
    if job and job["active"]:
        def progress(job, p, done, total):
            what = "waiting to start" if job["status"] in ("queued", "starting") or not total \
                else f"{done:,}/{total:,} photos"
            st.progress(min(done / max(total, 1), 1.0), text=f"Computing embeddings: {what}…")
        live_job(job["job_id"], progress)
        return
    if job and job["status"] == "failed":
        st.error(f"The last embedding job failed: {job.get('error')}", icon="🚫")
    job_button(label, "embed", run_id, "eval_embed", type="primary",
               help="A background job: one forward pass per photo of the run's split, then the 2-D map.")


def map_section(run_id: str, split: str, ev: dict, emb) -> None:
    st.subheader("Map of the embeddings")
    if emb is None:
        st.caption("Every photo of the run as one point, near the photos the model sees as alike (the features "
                   "its classifier head reads), placed by t-SNE; its nearest training photos in the detail view.")
        compute_button(run_id, "Compute embeddings")
        return
    from core.serve.embeddings import stale
    if stale(store().run(run_id)):
        st.warning("These embeddings were computed on an earlier checkpoint of the run: the map and the neighbours "
                   "may not match its model any more.", icon="⚠️")
        compute_button(run_id, "Recompute embeddings")
    frame = emb.frame
    c1, c2 = st.columns([2, 3])
    by = c1.radio("Colour by", list(COLOURINGS), format_func=COLOURINGS.get, horizontal=True, key="eval_map_colour")
    present = [s for s in ("train", "val", "holdout") if (frame["split"] == s).any()]
    st.session_state.setdefault("eval_map_splits", present)
    splits = c2.multiselect("Splits shown", present, key="eval_map_splits")
    shown = frame[frame["split"].isin(splits)].reset_index(drop=True) if len(splits) < len(present) else frame
    meta = emb.meta or {}
    st.plotly_chart(map_figure(shown, by, ev["names"]), key="eval_map", on_select=lambda: _on_click(
        "eval_map", run_id, shown), selection_mode="points")
    how = {"tsne": "t-SNE", "pca": "PCA"}.get(meta.get("map"), "a 2-D projection")
    gone = f" {meta['missing']:,} photo(s) could not be read and are left out." if meta.get("missing") else ""
    search = "exact search" if emb.served == "exact" else f"approximate search ({emb.served})"
    st.caption(f"{len(shown):,} photos placed by {how}; hover for the class and confidence, click a point to open "
               f"the photo, its maps and its nearest training photos ({search}).{gone}")
    photo_views.detail_section(run_id, split, ev, emb, "map")
