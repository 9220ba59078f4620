"""From a figure to its photos (issue 22), on the Evaluate page.

Click a confusion cell (or a most-confused pair) and the grid shows the photos of that (true,
predicted) pair, most confident first; click a class in the per-class table and it shows that
class's photos, mistakes first. A photo opens a detail view: the photo, its labels and
confidence, its explanation maps (core.explain, the methods Classify has) and its nearest
training photos (core.serve.embeddings, once the run has embeddings).

What is shown lives in st.session_state (SHOWN: the grid's pair or class; OPEN: the open photo),
tagged with the run and split, so reruns keep it and another run or split drops it.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data.readers import open_image, resize_square
from core.errors import UserError
from dashboard.common import predictor, store, user_error

SHOWN = "eval_photos_of"      # {"run", "split", "kind": "pair" | "class", "true", "pred"} or {"..., "class"}
PAGE = "eval_photos_page"     # the grid's page (back to 1 when another cell or class is picked)
OPEN = "eval_photo"           # {"run", "split", "path", "target", "pred", "conf", "from": "grid" | "map"}
PAGE_SIZE = 48                # photos per page of the grid
COLUMNS = 8                   # tiles per row
THUMB_PX = 96                 # side of a thumbnail
DETAIL_PX = 256               # side of the photo and its maps in the detail view
NEIGHBOURS = 8                # nearest training photos listed
MISSING_GREY = 200            # the tile of a photo that is no longer on disk
DEFAULT_METHODS = ("saliency", "gradcam")



# ------------------------------------------------------------------ which photos (pure)

def pair_photos(preds: pd.DataFrame, true: int, pred: int) -> pd.DataFrame:
    """The photos whose true class is `true` and prediction `pred`, most confident first."""
    hit = preds[(preds["target"] == int(true)) & (preds["pred"] == int(pred))]
    return hit.sort_values("conf", ascending=False, kind="stable")


def class_photos(preds: pd.DataFrame, cls: int) -> pd.DataFrame:
    """A class's photos: its mistakes first (most confident first), then its right answers (least
    sure first: the next ones to go wrong)."""
    mine = preds[preds["target"] == int(cls)]
    wrong = mine[mine["pred"] != mine["target"]].sort_values("conf", ascending=False, kind="stable")
    right = mine[mine["pred"] == mine["target"]].sort_values("conf", ascending=True, kind="stable")
    return pd.concat([wrong, right])


def cell_of(points, shown: list[int]) -> tuple[int, int] | None:
    """(true, predicted) class of the first clicked cell; `shown[k]` is the class at axis position
    k (-1: the "(other)" bucket, which has no single pair: None)."""
    for p in points or ():
        x, y = p.get("x"), p.get("y")
        if x is None or y is None:
            continue
        t, q = shown[int(round(y))], shown[int(round(x))]
        return None if t < 0 or q < 0 else (t, q)
    return None


def _cell_px(fig: go.Figure, n: int) -> int:
    """A marker 70% of a cell's height: markers that overlap would all answer a click in the overlap
    (plotly picks the first marker under the pointer), so each must stay inside its cell."""
    plot_px = (fig.layout.height or 400) - 120                 # less the axis labels and margins
    return int(np.clip(0.7 * plot_px / max(n, 1), 3, 40))


def clickable(fig: go.Figure, n: int) -> go.Figure:
    """A confusion heatmap with one invisible marker per cell: plotly.js does not report clicks on
    heatmap cells to Streamlit's selection (streamlit/streamlit#8760), it does on markers. The
    markers take over the heatmap's hover text."""
    heat = fig.data[0]
    ix = np.arange(n)
    yy, xx = np.repeat(ix, n), np.tile(ix, n)
    custom = np.asarray(heat.customdata, dtype=object).reshape(n * n, -1) if heat.customdata is not None else None
    fig.add_trace(go.Scatter(x=xx, y=yy, mode="markers", customdata=custom, hovertemplate=heat.hovertemplate,
                             marker=dict(size=_cell_px(fig, n), symbol="square", opacity=0.01,
                                         color="black"), showlegend=False, name="cells"))
    heat.hoverinfo, heat.hovertemplate = "skip", None
    fig.update_xaxes(range=[-0.5, n - 0.5], autorange=False)              # the markers must not pad the axes
    fig.update_yaxes(range=[n - 0.5, -0.5], autorange=False)              # true class 0 at the top, as before
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


# ------------------------------------------------------------------ selections -> session state

def _tag(run_id: str, split: str) -> dict:
    return {"run": run_id, "split": split}


def _on_cell(key: str, run_id: str, split: str, shown: list[int]) -> None:
    cell = cell_of((st.session_state.get(key) or {}).get("selection", {}).get("points"), shown)
    if cell:
        st.session_state[SHOWN] = {**_tag(run_id, split), "kind": "pair", "true": cell[0], "pred": cell[1]}
        st.session_state[PAGE] = 1


def confusion_select(key: str, run_id: str, split: str, shown: list[int]) -> dict:
    """st.plotly_chart arguments: a click on a cell shows that pair's photos."""
    return dict(on_select=partial(_on_cell, key, run_id, split, list(shown)), selection_mode="points")


def _on_row(key: str, run_id: str, split: str, rows: list) -> None:
    picked = (st.session_state.get(key) or {}).get("selection", {}).get("rows") or []
    if picked:
        what = rows[picked[0]]
        st.session_state[SHOWN] = {**_tag(run_id, split), **what}
        st.session_state[PAGE] = 1


def class_select(key: str, run_id: str, split: str, classes) -> dict:
    """st.dataframe arguments: a click on a row (class index `classes[row]`) shows its photos."""
    rows = [{"kind": "class", "class": int(c)} for c in classes]
    return dict(on_select=partial(_on_row, key, run_id, split, rows), selection_mode="single-row")


def pair_select(key: str, run_id: str, split: str, ev: dict, pairs: pd.DataFrame) -> dict:
    """st.dataframe arguments for the most-confused pairs table: a row shows that pair's photos."""
    at = {str(l): i for i, l in enumerate(ev["labels"])}
    rows = [{"kind": "pair", "true": at[str(t)], "pred": at[str(p)]}
            for t, p in zip(pairs["true_label"], pairs["predicted_label"])]
    return dict(on_select=partial(_on_row, key, run_id, split, rows), selection_mode="single-row")


def open_photo(run_id: str, split: str, record: dict, origin: str) -> None:
    """Open a photo in the detail view (a button's or a map click's callback)."""
    st.session_state[OPEN] = {**_tag(run_id, split), **record, "from": origin}


def close_photo() -> None:
    st.session_state[OPEN] = None


# ------------------------------------------------------------------ thumbnails

@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(path: str, mtime: float, size: int = THUMB_PX) -> np.ndarray:
    """A small copy of a photo (cache key: path and mtime, so an edited photo is read again)."""
    im = open_image(path, draft=2 * size)
    im.thumbnail((size, size))
    return np.asarray(im.convert("RGB"))


def missing_tile(size: int = THUMB_PX) -> np.ndarray:
    return np.full((size, size, 3), MISSING_GREY, np.uint8)


def tile(path: str, size: int = THUMB_PX) -> tuple[np.ndarray, bool]:
    """(thumbnail, found): a grey tile where the photo vanished or cannot be read any more."""
    try:
        return thumbnail(path, Path(path).stat().st_mtime, size), True
    except (OSError, UserError, ValueError):
        return missing_tile(size), False


# ------------------------------------------------------------------ the grid

@st.cache_data(show_spinner=False, max_entries=16)
def _predictions(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_parquet(path, columns=["path", "target", "pred", "conf"])


def predictions(run_id: str, split: str) -> pd.DataFrame | None:
    f = store().run(run_id).predictions_file(split)
    return _predictions(str(f), f.stat().st_mtime) if f.exists() else None


def _title(shown: dict, ev: dict) -> tuple[str, partial]:
    names = ev["names"]
    if shown["kind"] == "pair":
        t, p = shown["true"], shown["pred"]
        return f"Photos of {names[t]} predicted as {names[p]}, most confident first", \
            partial(pair_photos, true=t, pred=p)
    c = shown["class"]
    return f"Photos of {names[c]}: its mistakes first (most confident first), then its right answers " \
           "(least sure first)", partial(class_photos, cls=c)


def photos_section(run_id: str, split: str, ev: dict, emb=None) -> None:
    """The grid of the clicked cell's or class's photos, paged, and the detail view it opens."""
    st.session_state.setdefault(SHOWN, None)
    st.session_state.setdefault(OPEN, None)
    st.subheader("Photos")
    shown = st.session_state.get(SHOWN)
    if not shown or (shown["run"], shown["split"]) != (run_id, split):
        st.caption("Click a cell of the confusion matrix, a most-confused pair or a class in the per-class table "
                   "to see its photos here.")
        return detail_section(run_id, split, ev, emb, "grid")
    preds = predictions(run_id, split)
    if preds is None:
        st.info("This run keeps per-image predictions for the validation and holdout splits only: pick one of "
                "them to see the photos.", icon="ℹ️")
        return None
    title, pick = _title(shown, ev)
    photos = pick(preds).reset_index(drop=True)
    st.markdown(f"**{title}** ({len(photos):,})")
    if photos.empty:
        st.caption("No photo of this split falls there.")
        return detail_section(run_id, split, ev, emb, "grid")
    pages = (len(photos) - 1) // PAGE_SIZE + 1
    if not 1 <= st.session_state.get(PAGE, 1) <= pages:
        st.session_state[PAGE] = 1
    page = st.number_input(f"Page (of {pages}, {PAGE_SIZE} photos each)", 1, pages, step=1, key=PAGE) \
        if pages > 1 else 1
    grid(run_id, split, ev, photos.iloc[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], (page - 1) * PAGE_SIZE)
    detail_section(run_id, split, ev, emb, "grid")


def grid(run_id: str, split: str, ev: dict, photos: pd.DataFrame, first: int) -> None:
    """Tiles of `photos` (the one page shown; `first`: the number of its first photo)."""
    names = ev["names"]
    records = photos.to_dict("records")
    for start in range(0, len(records), COLUMNS):
        for i, (col, r) in enumerate(zip(st.columns(COLUMNS), records[start:start + COLUMNS]), first + start):
            img, found = tile(r["path"])
            mark = "" if r["pred"] == r["target"] else "✗ "
            col.image(img, width=THUMB_PX,
                      caption=f"{mark}{names[r['pred']]} ({r['conf']:.0%})" if found else "missing")
            col.button(Path(r["path"]).name, key=f"eval_open_{i}", help="Open: the photo, its maps, its neighbours",
                       on_click=open_photo, args=(run_id, split, _record(r), "grid"), width="stretch")


def _record(r: dict) -> dict:
    return {"path": str(r["path"]), "target": int(r["target"]), "pred": int(r["pred"]), "conf": float(r["conf"])}


# ------------------------------------------------------------------ the detail view

@st.cache_data(show_spinner=False, max_entries=64)
def explanation(run_id: str, ckpt_mtime: float, path: str, mtime: float, method: str, target: int) -> tuple:
    """(the photo as the model sees it, enlarged, with the method's map; the map's class name):
    core.explain's explain_one and render, as Classify uses them."""
    from core.explain import explain_one, render
    pred = predictor(run_id)
    image = open_image(path)
    r = explain_one(pred, pred.tensor(image), method, target)
    base = np.asarray(resize_square(image.convert("RGB"), DETAIL_PX))
    return render(method, base, r["attr"][0]), r["name"]


def _class(ev: dict, i: int) -> str:
    return f"{ev['names'][i]} (label {ev['labels'][i]})"


def detail_section(run_id: str, split: str, ev: dict, emb, origin: str) -> None:
    """The open photo, if it was opened from `origin` ("grid" or "map") of this run."""
    photo = st.session_state.get(OPEN)
    if not photo or photo["run"] != run_id or photo.get("from") != origin:
        return
    with st.container(border=True):
        head, close = st.columns([5, 1])
        head.markdown(f"**{Path(photo['path']).name}** · {photo['split']}")
        close.button("Close", key=f"eval_photo_close_{origin}", on_click=close_photo)
        left, right = st.columns([1, 2])
        img, found = tile(photo["path"], DETAIL_PX)
        left.image(img, width=DETAIL_PX, caption=None if found else "missing")
        t, p = photo["target"], photo["pred"]
        right.markdown(f"True: **{_class(ev, t)}**  \nPredicted: **{_class(ev, p)}** with confidence "
                       f"{photo['conf']:.1%}" + ("" if t == p else "  \n✗ a mistake"))
        right.caption(photo["path"])
        if not found:
            st.warning(f"The photo {photo['path']} is no longer on disk (or cannot be read): its maps cannot be "
                       "drawn.", icon="⚠️")
        else:
            maps(run_id, photo)
        neighbours_table(photo, emb, ev)


def maps(run_id: str, photo: dict) -> None:
    """The photo's explanation maps of its predicted class (off: core.explain and captum not even imported)."""
    st.session_state.setdefault("eval_photo_maps", True)
    if not st.toggle("Explanation maps", key="eval_photo_maps", help="Which pixels made the model predict its class, "
                     "by the methods of the Classify page (one forward and backward pass each, or more)."):
        return
    from core.explain import METHODS, colorbar, legend
    st.session_state.setdefault("eval_photo_methods", [m for m in DEFAULT_METHODS if m in METHODS])
    methods = st.multiselect("Explanation methods", list(METHODS), key="eval_photo_methods",
                             format_func=lambda m: METHODS[m].label,
                             help="Maps of the predicted class, as on the Classify page.")
    if not methods:
        return
    mtime = Path(photo["path"]).stat().st_mtime
    ckpt = store().run(run_id).checkpoint_mtime()
    cols = st.columns(min(4, len(methods)))
    for i, m in enumerate(methods):
        col = cols[i % len(cols)]
        try:
            with st.spinner(f"{METHODS[m].label}…"):
                img, name = explanation(run_id, ckpt, photo["path"], mtime, m, photo["pred"])
        except UserError as e:
            user_error(e)
            return
        col.image(img, caption=f"{METHODS[m].label} · class “{name}”", width=DETAIL_PX)
        col.image(colorbar(m), width=DETAIL_PX)
        col.caption(legend(m)[1])


def neighbours_table(photo: dict, emb, ev: dict) -> None:
    """The k nearest training photos by embedding; a neighbour whose label differs from the photo's
    given label is marked (the label or the model is wrong: the neighbours tell which)."""
    st.markdown("**Nearest training photos**")
    if emb is None:
        st.caption("Compute the run's embeddings (the map below) to see the photo's nearest training photos.")
        return
    rows = np.flatnonzero(emb.frame["path"].astype(str).to_numpy() == photo["path"])
    if not len(rows):
        st.caption("This photo has no embedding (it was not readable when the embeddings were computed).")
        return
    near = emb.neighbours([int(rows[0])], k=NEIGHBOURS, splits=("train",))[0]
    near = near[near["path"].astype(str) != photo["path"]]
    given = str(ev["labels"][photo["target"]])
    near = near.assign(differs=np.where(near["label"].astype(str) != given, "⚠️ other label", ""))
    st.dataframe(near[["name", "label", "similarity", "differs", "path"]], hide_index=True, key="eval_neighbours",
                 column_config={"similarity": st.column_config.ProgressColumn("similarity", format="%.3f",
                                                                              min_value=0.0, max_value=1.0),
                                "differs": st.column_config.TextColumn("label differs", help=(
                                    f"Marked where the neighbour's label is not the photo's given label ({given}).")),
                                "path": "photo"})
    tiles = near.head(NEIGHBOURS)
    for col, r in zip(st.columns(NEIGHBOURS), tiles.itertuples()):
        img, found = tile(str(r.path))
        col.image(img, width=THUMB_PX, caption=(f"{'⚠️ ' if r.differs else ''}{r.name} ({r.similarity:.2f})"
                                                if found else "missing"))
