"""Dataset: the class distribution of the N most frequent classes (the seed's Fig. 1), the
whole long tail, imbalance figures, sample images per class and a scan for unreadable files.

Fast at Google Landmarks v2 scale (4.1 M rows, 203 k classes): the numbers come from
core.data.class_counts (cached on disk by the CSV's size and mtime) behind an in-memory cache
keyed the same way, readable names are looked up only for the classes shown, and the full
image index is only built when the thumbnails or the scan ask for it, once per data set version.
"""
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data.readers import (detect_layout, imbalance, load_index, missing_note, open_image, readable_names,
                               resize_square, scan_index, signature)
from core.errors import UserError
from core.runs.tasks import SCAN_SIZE
from dashboard import charts
from dashboard.common import (clean_toggle, counts_of, dataset_picker, job_progress, start_here, store, synthetic_note,
                              user_error)
from dashboard.download_panel import download_panel
from dashboard.versions import base_of, version_summary

N_CHOICES = (10, 20, 30, 50, 100, 200, 500, 1000)
BAR_LIMIT = 1000          # bars drawn at most; the long-tail plot shows every class
TAIL_POINTS = 2000        # log-spaced ranks drawn in the long-tail plot
THUMB_CLASSES, THUMB_PER_CLASS, THUMB_PX = 6, 4, 96
FOUND_LIMIT = 200         # classes a search adds to the sample-image picker at most



# ------------------------------------------------------------------ cached loaders

@st.cache_resource(show_spinner=False, max_entries=8)
def categories(root: str, mtime: float) -> pd.DataFrame | None:
    """train_label_to_category.csv as read (GLDv2 readable names), or None."""
    try:
        df = pd.read_csv(Path(base_of(root)) / "train_label_to_category.csv", dtype=str, keep_default_na=False,
                         engine="pyarrow")
    except Exception:  # noqa: BLE001 - a broken names file only costs the readable names
        return None
    return df if {"landmark_id", "category"} <= set(df.columns) else None


@st.cache_data(show_spinner=False, max_entries=64)
def find_classes(root: str, mtime: float, labels: tuple, query: str, limit: int = FOUND_LIMIT) -> list[str]:
    """The `limit` most frequent of `labels` (most frequent first) whose label or readable name
    holds `query` (any case): one vectorised pass over every class, so 81,313 or 200 k stay quick.
    GLDv2's names are matched in train_label_to_category.csv without decoding all of them: a space
    is an underscore there, and a query with accents is matched percent-encoded."""
    q = query.strip().lower()
    s = pd.Series(labels, dtype=str)
    hit = s.str.lower().str.contains(q, regex=False)
    df = categories(root, mtime) if mtime else None
    if df is not None:      # the name after "Category:"; an ASCII query is not matched inside "%C3"
        tail = df["category"].str.replace(r"^.*Category:", "", regex=True).str.lower()
        want = q.replace(" ", "_")
        named = (tail.str.contains(quote(want, safe=",()'").lower(), regex=False) if not want.isascii()
                 else tail.str.replace(r"%[0-9a-f]{2}", "\x00", regex=True).str.contains(want, regex=False))
        hit |= s.isin(df.loc[named, "landmark_id"])
    return s[hit].head(limit).tolist()


@st.cache_data(show_spinner=False, max_entries=64)
def names_of(root: str, mtime: float, labels: tuple) -> dict:
    """Readable names of just these labels: cleaning all 200 k GLDv2 names would cost seconds."""
    df = categories(root, mtime) if mtime else None
    if df is None:
        return {}
    return readable_names(df[df["landmark_id"].isin(labels)])


@st.cache_resource(show_spinner="Reading the image list…", max_entries=2)
def index_of(root: str, sig: str, clean: bool = False):
    """(DatasetIndex, None) or (None, sentence); built once per data set version."""
    try:
        return load_index(root, clean=clean), None
    except UserError as e:
        return None, str(e)


@st.cache_resource(show_spinner="Looking for the images on disk…", max_entries=2)
def on_disk_of(root: str, sig: str, labels: tuple, clean: bool = False):
    """(index of `labels`' images on disk, {"images": missing, "paths": [...]}, None) or
    (None, None, sentence): for a train.csv listing images not on disk, which load_index refuses."""
    try:
        return (*scan_index(root, labels, clean), None)
    except UserError as e:
        return None, None, str(e)


@st.cache_data(show_spinner=False, max_entries=32)
def sample_paths(root: str, sig: str, labels: tuple, per: int, clean: bool = False, _index=None) -> dict:
    """A few random image paths for each label (deterministic); `_index` (not hashed: it follows
    from root, sig and clean) is where they are looked up."""
    index = _index if _index is not None else index_of(root, sig, clean)[0]
    s = index.samples[index.samples["label"].isin(set(labels))].sample(frac=1.0, random_state=0)
    return {str(k): g["path"].head(per).tolist() for k, g in s.groupby("label", sort=False)}


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str, mtime_ns: int):
    """A small square thumbnail (uint8 array), or the reason the file cannot be read."""
    try:
        return np.asarray(resize_square(open_image(path, draft=2 * THUMB_PX), THUMB_PX))
    except Exception as e:  # noqa: BLE001 - any decoder failure is shown as a caption
        return f"{type(e).__name__}: {e}"[:120]


def mtime_ns(path: str) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return 0


def names_mtime(root: str) -> float:
    """train_label_to_category.csv's mtime (the names' cache key), 0.0 when there is none."""
    f = Path(base_of(root)) / "train_label_to_category.csv"
    return f.stat().st_mtime if f.exists() else 0.0


def display_names(labels, names: dict) -> list[str]:
    """Readable, unique x-axis labels (two classes may share a name)."""
    shown = [names.get(str(l), str(l)) for l in labels]
    dup = pd.Series(shown).duplicated(keep=False).to_numpy()
    return [f"{s} · {l}" if d else s for s, l, d in zip(shown, labels, dup)]


# ------------------------------------------------------------------ figures

def distribution_figure(counts: pd.Series, names: dict, n: int) -> go.Figure:
    """Fig. 1: horizontal bars (readable names) up to 60 classes, vertical bars beyond."""
    top = counts.head(min(n, BAR_LIMIT))
    names = charts.class_axis_labels(display_names(top.index, names))   # most frequent first, as categories
    hover = "%{customdata[0]}<br>label %{customdata[1]}<br>%{value:,} images<extra></extra>"
    data = np.stack([names, np.asarray(top.index.astype(str))], axis=1)
    title = f"Class distribution of the {len(top)} most frequent classes"
    if len(top) <= 60:
        bar = go.Bar(y=names, x=top.to_numpy(), orientation="h", customdata=data, marker_color="#1f6feb",
                     hovertemplate=hover.replace("%{value", "%{x"))
        fig = go.Figure(bar).update_layout(title=title, xaxis_title="images", height=max(320, 120 + 20 * len(top)),
                                           yaxis=charts.category_axis(names, autorange="reversed", automargin=True))
    else:
        bar = go.Bar(x=names, y=top.to_numpy(), customdata=data, marker_color="#1f6feb",
                     hovertemplate=hover.replace("%{value", "%{y"))
        fig = go.Figure(bar).update_layout(title=title, yaxis_title="images", xaxis_title="class (hover for names)",
                                           xaxis=charts.category_axis(names, showticklabels=False), height=480)
    return fig.update_layout(margin=dict(t=50, b=10))


def tail_figure(counts: pd.Series, n: int) -> go.Figure:
    """Rank vs images on log-log axes, drawn at log-spaced ranks so 200 k classes stay light."""
    y = counts.to_numpy()
    ranks = np.unique(np.geomspace(1, len(y), num=min(len(y), TAIL_POINTS)).round().astype(int))
    fig = go.Figure(go.Scatter(x=ranks, y=y[ranks - 1], mode="lines+markers" if len(ranks) <= 60 else "lines",
                               name="images per class", line=dict(color="#1f6feb"),
                               hovertemplate="rank %{x:,}<br>%{y:,} images<extra></extra>"))
    cut = min(n, len(y))
    fig.add_trace(go.Scatter(x=[cut], y=[y[cut - 1]], mode="markers", name=f"top-{cut} cut-off",
                             marker=dict(size=11, color="#d73a49", symbol="diamond"),
                             hovertemplate=f"top-{cut} cut-off<br>rank %{{x:,}}<br>%{{y:,}} images<extra></extra>"))
    # whole numbers at 1, 10, 100, 1k … (and 2, 5 or every digit over few decades): plotly's own
    # log ticks read "2 … 8" between powers of ten, so a 68-image class looked like "7"
    fig.update_layout(title="The whole long tail (log–log)", xaxis_title="class rank",
                      yaxis_title="images", height=480, xaxis=charts.log_axis(1, len(y)),
                      yaxis=charts.log_axis(max(int(y.min()), 1), max(int(y.max()), 1)),
                      margin=dict(t=50, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


# ------------------------------------------------------------------ sections

def pick_n(total: int) -> int:
    options = [c for c in N_CHOICES if c < total] + [total]
    return st.select_slider("N most frequent classes", options, value=min(50, total), key=f"dataset_n_{total}",
                            persist_state="session",
                            format_func=lambda v: f"all ({v:,})" if v == total else str(v),
                            help="The poster this app follows shows the 50 most frequent classes and trains on 10 to 50.")


def metric_tiles(counts: pd.Series, n: int) -> None:
    k = int(st.session_state.get("dataset_small_k", 10))
    fig = imbalance(counts, top=n, small=k)
    a = st.columns(5)
    a[0].metric("Classes", f"{fig['classes']:,}")
    a[1].metric("Images", f"{fig['images']:,}")
    a[2].metric("Largest class", f"{fig['largest']:,}")
    a[3].metric("Smallest class", f"{fig['smallest']:,}")
    a[4].metric("Largest / smallest", f"{fig['ratio']:,.1f}×")
    b = st.columns(5)
    b[0].metric(f"Share of images in the top {fig['top_n']:,}", f"{fig['top_n_share']:.1%}")
    b[1].metric(f"Images in the top {fig['top_n']:,}", f"{fig['top_n_images']:,}")
    b[2].metric(f"Smallest of the top {fig['top_n']:,}", f"{int(counts.iloc[fig['top_n'] - 1]):,}")
    b[3].metric(f"Imbalance within the top {fig['top_n']:,}", f"{fig['top_n_ratio']:,.1f}×")
    b[4].metric(f"Classes under {k} images", f"{fig[f'classes_under_{k}']:,}")
    st.number_input("k: count classes with fewer than k images", min_value=1, value=10, step=1,
                    key="dataset_small_k", width=260, persist_state="session")


def thumbnails(root: str, sig: str, counts: pd.Series, names: dict, n: int, clean: bool = False) -> None:
    big = int(counts.sum()) > 200_000
    if not st.toggle("Show sample images", value=not big,
                     key=f"dataset_thumbs_{sig}",
                     help="Reads the image list once per data set version (a few seconds for millions of images)."):
        return
    options = [str(l) for l in counts.head(max(min(n, BAR_LIMIT), THUMB_CLASSES)).index]
    index, err = index_of(root, sig, clean)
    if err:   # e.g. a train.csv listing more than is on disk: show what is there (issue 20)
        index, missing, err = on_disk_of(root, sig, tuple(options), clean)
        if err:
            st.warning(f"No sample images: {err}")
            return
        note = missing_note(missing["images"], len(index.samples), missing["paths"],
                            then="the samples come from the {present:,} that are")
        if note:
            st.warning(note, icon="⚠️")
    key = f"dataset_thumb_classes_{sig}_{n}"
    if len(counts) > len(options):    # the picker lists the classes drawn above; a search reaches every class
        query = st.text_input(f"Find a class among all {len(counts):,}", key="dataset_thumb_query",
                              placeholder="part of a label or name")
        picked = [l for l in st.session_state.get(key, []) if l not in set(options)]     # found before: kept
        found = find_classes(root, names_mtime(root), tuple(map(str, counts.index)), query) if query.strip() else []
        if query.strip():
            st.caption(f"{len(found):,} class{'es' if len(found) != 1 else ''} found"
                       + (f" (the {FOUND_LIMIT} most frequent shown)" if len(found) == FOUND_LIMIT else "")
                       + (": pick them below." if found else "."))
        extra = list(dict.fromkeys(picked + [l for l in found if l not in set(options)]))
        names = {**names, **names_of(root, names_mtime(root), tuple(extra))}
        options = options + extra
    shown = dict(zip(options, display_names(options, names)))
    labels = tuple(st.multiselect(
        "Classes to show", options, default=options[:THUMB_CLASSES], key=key,
        format_func=lambda l: f"{shown[l]} ({int(counts[l]):,})",
        help=f"The {len(options):,} classes above (and those a search found); the {THUMB_CLASSES} most "
             "frequent to start."))
    per_label = sample_paths(root, sig, labels, THUMB_PER_CLASS, clean, index)
    for label, name in zip(labels, display_names(labels, names)):
        st.markdown(f"**{name}** · {int(counts[label]):,} images")
        cols = st.columns(THUMB_PER_CLASS)
        for col, path in zip(cols, per_label.get(label, [])):
            im = thumbnail(path, mtime_ns(path))
            if isinstance(im, str):
                col.caption(f"⚠️ {Path(path).name}: {im}")
            else:
                col.image(im, caption=Path(path).stem[:10], width=THUMB_PX)


def scan_section(root: str, sig: str, counts: pd.Series, n: int, clean: bool = False) -> None:
    """The scan is a background job (core.runs.tasks.scan): it goes on if the page is left."""
    from core.data.prepared import AUTO_SCAN_IMAGES
    from core.runs import jobs
    top = counts.head(n)
    match = dict(data=root, sig=sig, n=int(len(top)), clean=bool(clean))
    job = jobs.latest(store(), "scan", **match)
    small = int(top.sum()) <= AUTO_SCAN_IMAGES
    st.caption(f"Decodes each of the {int(top.sum()):,} images of the top {len(top):,} classes once at "
               f"{SCAN_SIZE} px (cached, so training at {SCAN_SIZE} px and later scans are instant)"
               + (f"; automatic up to {AUTO_SCAN_IMAGES:,} images." if small else "."))
    clicked = st.button(f"Scan the top-{len(top)} classes for unreadable files", key="dataset_scan",
                        disabled=bool(job and job["active"]))
    if clicked or (small and job is None):
        jobs.submit(store(), "scan", {**match, "labels": [str(l) for l in top.index]})
        job = jobs.latest(store(), "scan", **match)
    if job is None:
        return
    if job["active"]:
        job_progress("scan", "Scanning: decoded", **match)
        return
    if job["status"] != "done":
        st.error(f"The scan ended early: {job.get('error') or job['status']}", icon="🚫")
        return
    scan_report(job["result"])


def scan_report(result: dict) -> None:
    bad, fresh = result["reasons"], result["decoded"]
    how = ("all from the cache" if not fresh else "all decoded now" if fresh == result["checked"]
           else f"{fresh:,} decoded now, the rest from the cache")
    msg = f"Checked {result['checked']:,} files ({how}): {len(bad):,} unreadable."
    (st.warning if bad else st.success)(msg + (" Training skips them." if bad else ""))
    missing = missing_sentence(result)
    if missing:
        st.warning(missing, icon="⚠️")
    if bad:
        st.dataframe(pd.DataFrame(bad, columns=["path", "reason"]), hide_index=True,
                     column_config={"path": st.column_config.TextColumn("file", width="large"),
                                    "reason": st.column_config.TextColumn("why it was skipped")})


def missing_sentence(result: dict) -> str | None:
    """What a scan found listed but not on disk, in one sentence (None when nothing is missing)."""
    return missing_note(result.get("missing") or 0, result["checked"], result.get("missing_examples") or [])


def manage_datasets(path: str | None) -> None:
    """Rename or forget the data set in use (its folder and the runs trained on it stay)."""
    from core.data import registry
    entry = registry.by_path(path) if path else None
    if entry is None:
        return
    with st.expander(f"Data set “{entry['name']}”: {entry['path']}"):
        with st.form("dataset_rename_form", border=False):   # one click: the typed name is sent with it
            c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
            new = c1.text_input("Name", value=entry["name"], key="dataset_rename")
            go = c2.form_submit_button("Rename", key="dataset_rename_go")
        if go and new.strip() != entry["name"]:
            try:
                registry.rename(entry["name"], new)
                st.query_params["data"] = st.session_state["data_in_use"] = new.strip()
                st.rerun()
            except UserError as e:
                user_error(e)
        if st.button("Forget this data set", key="dataset_forget",
                     help="Removes it from the pickers only: the folder and the runs trained on it stay."):
            registry.forget(entry["name"])
            st.session_state.pop("data_in_use", None)
            st.query_params.pop("data", None)
            st.rerun()


# ------------------------------------------------------------------ page

st.title("📊 Dataset")
st.caption("How many photos does each landmark have? The bars show the most frequent classes (Fig. 1 of the "
           "poster this app follows shows Google Landmarks' top 50 this way), the curve the whole long tail.")
start_here()

path = dataset_picker("dataset")
manage_datasets(path)
download_panel()
if not path:
    st.info("Type the folder of a data set: a Google Landmarks download (train.csv + train/) "
            "or one folder of images per class.", icon="ℹ️")
    st.stop()
try:
    root = Path(path).expanduser().resolve()
    detect_layout(root)
    sig = signature(root)
    clean = clean_toggle(root, "dataset_clean", "GLDv2's cleaned list of images per landmark; training can use "
                                                "it too (Train page, or --clean).")
    counts = counts_of(root, clean)
except UserError as e:
    user_error(e)
    st.stop()
if counts.empty:
    st.error(f"{root} lists no labelled images.", icon="🚫")
    st.stop()
synthetic_note(root)
version_summary(root)
n = pick_n(len(counts))
shown = counts.index[:max(min(n, BAR_LIMIT), THUMB_CLASSES)]
names = names_of(str(root), names_mtime(str(root)), tuple(map(str, shown)))
metric_tiles(counts, n)
left, right = st.columns([3, 2])
left.plotly_chart(distribution_figure(counts, names, n), key="dataset_bars")
if n > BAR_LIMIT:
    left.caption(f"Showing the first {BAR_LIMIT:,} bars; the long-tail plot shows every class.")
right.plotly_chart(tail_figure(counts, n), key="dataset_tail")

st.subheader("Sample images")
thumbnails(str(root), sig, counts, names, n, clean)

st.subheader("Scan report")
scan_section(str(root), sig, counts, n, clean)
