"""Evaluate: the seed's holdout table across runs, then for one run and split the per-class
accuracy (Fig. 4), the confusion matrix (Fig. 3) and the most confident mistakes."""
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.data.readers import open_image
from core.data.splits import thin_holdout
from core.runs.groups import group_stats
from core.train import metrics
from core.train.config import DEFAULTS as CONFIG_DEFAULTS
from dashboard import charts, embedding_map, nav, photo_views
from dashboard.common import classes_count, home_key, run_names, run_picker, runs_frame, split_labels, store
from dashboard.calibration_panel import calibration_section
from dashboard.distractor_panel import distractor_panel
from dashboard.export_panel import export_panel
from dashboard.inspect_panel import inspect_panel

SPLITS = ("holdout", "val", "train")      # in the order of the split picker; labels from the run's config
st.session_state.setdefault("eval_split", "holdout")
st.session_state.setdefault("eval_normalize", False)
st.session_state.setdefault("eval_top_k", 30)
st.session_state.setdefault("eval_mistakes", 12)
st.session_state.setdefault("eval_worst_k", 20)
st.session_state.setdefault("eval_class_query", "")

PCT = "%.3f"


@st.cache_data(show_spinner=False, max_entries=64)
def load_evals(home: str, run_id: str, finished) -> dict:
    """A finished run's final evaluation (cache key: the run's finish time, new after a resume)."""
    return store().evals(run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def load_confusion(home: str, run_id: str, split: str, finished):
    """The split's confusion cells (a parquet file; a run evaluated before issue 20: its dense matrix)."""
    run = store().run(run_id)
    return run.read_confusion(split, store().evals(run_id).get(split, {}))


@st.cache_data(show_spinner=False, max_entries=16)
def load_predictions(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_parquet(path)


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: str, mtime: float, size: int = 160) -> np.ndarray:
    im = open_image(path, draft=2 * size)
    im.thumbnail((size, size))
    return np.asarray(im)


def imbalance_metric(ev: dict, key: str):
    """balanced_acc / macro_f1 of a split; computed from the confusion matrix for runs evaluated
    before they were stored; None where the split has no images."""
    if ev.get(key) is not None or not ev.get("confusion") or not ev.get("n"):
        return ev.get(key)
    fn = metrics.balanced_accuracy if key == "balanced_acc" else metrics.macro_f1
    return fn(np.asarray(ev["confusion"]))


def holdout_table(runs: pd.DataFrame) -> None:
    """The seed's results table: one row per finished run, sortable by any column."""
    df = runs.copy()
    holdouts = [load_evals(home_key(), r.run_id, r.finished).get("holdout", {}) for r in df.itertuples()]
    df["holdout_n"] = [h.get("n") for h in holdouts]
    df["holdout_balanced_acc"] = [imbalance_metric(h, "balanced_acc") for h in holdouts]
    df["holdout_macro_f1"] = [imbalance_metric(h, "macro_f1") for h in holdouts]
    df = df.sort_values(["holdout_acc", "val_acc"], ascending=False, na_position="last")
    df["classes"] = [classes_count(r) for _, r in df.iterrows()]
    df["label"] = df["run_id"].map(run_names(df))           # the run's name, or a short unique label
    cols = ["label", "model", "dataset", "classes", "train_acc", "val_acc", "holdout_acc", "holdout_balanced_acc",
            "holdout_macro_f1", "holdout_n", "holdout_top5", "holdout_gap", "run_id"]
    small = dict(width="small")     # thirteen columns in 1,400 px: numbers narrow, the name pinned
    st.dataframe(df[cols], hide_index=True, width="stretch", placeholder="—", column_config={
        "label": st.column_config.TextColumn("Name", pinned=True, help="The run's name (set on the Runs page), "
                                             "or its model and the first digits of its id."),
        "model": "Model", "dataset": "Data set", "classes": st.column_config.NumberColumn("Classes", **small),
        "train_acc": st.column_config.NumberColumn("Train", format=PCT, **small),
        "val_acc": st.column_config.NumberColumn(charts.VAL_ACC, format=PCT, help=charts.VAL_ACC_HELP, **small),
        "holdout_acc": st.column_config.NumberColumn("Holdout", format=PCT, **small),
        "holdout_balanced_acc": st.column_config.NumberColumn("Holdout balanced", format=PCT,
                                                              help="Balanced accuracy: the mean of the per-class "
                                                                   "accuracies (recall), every class counting the same."),
        "holdout_macro_f1": st.column_config.NumberColumn("Holdout macro-F1", format=PCT,
                                                          help="The unweighted mean of the per-class F1 scores."),
        "holdout_n": st.column_config.NumberColumn("Holdout images", format="%d",
                                                   help=f"The images the holdout figures rest on: a small share "
                                                        f"of the data "
                                                        f"({100 * CONFIG_DEFAULTS['holdout']:.3g}% by default), so "
                                                        "one image moves the holdout numbers by 1/n."),
        "holdout_top5": st.column_config.NumberColumn("Holdout top-5", format=PCT, **small),
        "holdout_gap": st.column_config.NumberColumn("Holdout GAP", format=PCT,
                                                     help="Global Average Precision (Kaggle landmark recognition metric)."),
        "run_id": "Run"})


@st.cache_data(show_spinner=False, max_entries=32)
def load_group(home: str, group: str, finished: tuple) -> dict:
    """A seed group's n, mean and sd (cache key: its runs' finish times)."""
    stats = group_stats(store(), group)
    return {"n": stats.n, **{k: stats.describe(k) for k in GROUP_COLUMNS}}


GROUP_COLUMNS = ("train_acc", "val_acc", "holdout_acc", "holdout_top5")


def group_table(runs: pd.DataFrame) -> None:
    """One row per seed group (train --seeds): mean ± sd (n) of its finished runs."""
    grouped = runs[runs["group"] != ""]
    if grouped.empty:
        return
    rows, names = [], run_names(runs)
    for group, g in grouped.groupby("group", sort=False):
        first = g.sort_values("created").iloc[0]
        rows.append({"label": names.get(group, group), "model": first["model"],
                     "dataset": first["dataset"], **load_group(home_key(), group, tuple(g["finished"]))})
    st.caption("Seed groups: mean ± sample sd over the group's runs (n seeds, one shared split).")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "label": st.column_config.TextColumn("Group", pinned=True, help="The group's first run."),
        "model": "Model", "dataset": "Data set", "n": st.column_config.NumberColumn("Seeds", format="%d"),
        "train_acc": "Train", "val_acc": charts.VAL_ACC, "holdout_acc": "Holdout", "holdout_top5": "Holdout top-5"})


def split_metrics(ev: dict, split: str) -> None:
    n = ev.get("n") or 0
    shown = (("acc", "Accuracy"), ("balanced_acc", "Balanced accuracy"), ("macro_f1", "Macro-F1"),
             ("top5", "Top-5"), ("gap", "GAP"), ("loss", "Loss"))
    for col, (key, label) in zip(st.columns(len(shown)), shown):
        v = imbalance_metric(ev, key) if key in ("balanced_acc", "macro_f1") else ev.get(key)
        col.metric(f"{label} (n={n})", "—" if v is None else f"{v:.3f}")
    classes = len(ev.get("labels") or [])
    st.caption(f"These figures rest on {n:,} {split} image{'s' if n != 1 else ''} over {classes:,} classes: "
               f"one image moves accuracy by {1 / max(n, 1):.1%}.")
    if split == "holdout" and (warning := thin_holdout(n, classes)):
        st.warning(warning, icon="⚠️")


PER_CLASS_COLUMNS = {
    "acc": st.column_config.ProgressColumn("accuracy", format="%.3f", min_value=0, max_value=1),
    "support": st.column_config.NumberColumn("images", format="%d"),
    "correct": st.column_config.NumberColumn("right", format="%d"),
    "predicted": st.column_config.NumberColumn("predicted as it", format="%d"),
    "f1": st.column_config.NumberColumn("F1", format="%.3f")}


def per_class_section(ev: dict, label: str, run_id: str, split: str) -> None:
    st.subheader("Accuracy per class")
    df = charts.per_class_frame(ev)
    st.plotly_chart(charts.per_class_figure(df), key="eval_per_class")
    missing = int(df["acc"].isna().sum())
    gone = f" {missing} class(es) have no image in this split and are left out." if missing else ""
    if len(df) - missing <= charts.BARS_MAX:
        st.caption(f"Sorted; the number in a bar is the class's {label.lower()} images (its support)." + gone)
    else:
        st.caption(f"How many of the {len(df) - missing:,} classes reach each accuracy; the worst are listed "
                   "below, and the table finds any class." + gone)
        k = st.slider("Worst classes listed", 5, 100, step=5, key="eval_worst_k")
        worst = charts.worst_classes(df, k)
        st.dataframe(worst, hide_index=True, key="eval_worst", column_config=PER_CLASS_COLUMNS,
                     **photo_views.class_select("eval_worst", run_id, split, worst.index))
    query = st.text_input("Find a class", key="eval_class_query", placeholder="part of a name or label")
    with st.expander("Per-class table (click a column to sort)", expanded=bool(query)):
        found = charts.find_classes(df, query)
        if query:
            st.caption(f"{len(found):,} of {len(df):,} classes match “{query}”.")
        found = found.sort_values(["acc", "support"], ascending=[True, False])
        st.dataframe(found, hide_index=True, key="eval_per_class_table", column_config=PER_CLASS_COLUMNS,
                     **photo_views.class_select("eval_per_class_table", run_id, split, found.index))


PAIR_COLUMNS = {"true": "true class", "true_label": "true label", "predicted": "predicted as",
                "predicted_label": "predicted label", "images": st.column_config.NumberColumn("images", format="%d"),
                "share": st.column_config.NumberColumn("share of the true class", format="percent")}


def confusion_section(ev: dict, run_id: str, split: str) -> None:
    st.subheader("Confusion")
    conf, names = ev["cells"], ev["names"]
    n = len(names)
    pairs = charts.confusion_pairs(ev, charts.PAIRS_SHOWN)
    mistakes = conf.total() - int(conf.correct().sum())
    kinds = int((conf.true != conf.pred).sum())
    st.markdown("**Most-confused pairs**")
    if pairs.empty:
        st.caption("No image of this split is misclassified.")
    else:
        st.dataframe(pairs, hide_index=True, key="eval_pairs", column_config=PAIR_COLUMNS,
                     **photo_views.pair_select("eval_pairs", run_id, split, ev, pairs))
        st.caption(f"{mistakes:,} misclassified images in {kinds:,} (true, predicted) pairs, the most frequent "
                   f"first{f' (the first {len(pairs)})' if kinds > len(pairs) else ''}; every cell is in the CSV.")
    c1, c2 = st.columns([1, 2])
    normalize = c1.toggle("Row-normalised", key="eval_normalize", help="Each true class's row sums to 1.")
    if n > charts.FULL_MATRIX_MAX:
        k = c2.slider("Most-confused classes shown", 5, charts.FULL_MATRIX_MAX, key="eval_top_k")
        keep = charts.most_confused(conf, k)
        shown, shown_names = charts.reduce_confusion(conf, keep, names)
        keep += [-1] * (len(shown_names) - len(keep))                  # (other): no single pair
        st.caption(f"{k} of {n:,} classes with the most mistakes. **(other)** sums the remaining {n - k:,}; "
                   "their own right answers are left out of it, so (other) → (other) counts only mistakes "
                   "among them.")
    else:
        shown, shown_names, keep = conf.dense(range(n), other=False), names, list(range(n))
    st.plotly_chart(photo_views.clickable(charts.confusion_figure(shown, shown_names, normalize=normalize),
                                          len(shown_names)), key="eval_confusion",
                    **photo_views.confusion_select("eval_confusion", run_id, split, keep))
    st.caption("Click a cell to see its photos below.")
    st.download_button("Download every non-zero cell (CSV)", charts.confusion_csv(ev),
                       file_name=f"confusion_{run_id}_{split}.csv", mime="text/csv", key="eval_confusion_csv")
    one_class(ev)


def one_class(ev: dict) -> None:
    """A class picked by name (the list searches as you type): its figures and its mistakes."""
    options = charts.class_options(ev)
    i = st.selectbox("Look at one class", list(options), format_func=options.get, index=None,
                     key="eval_class", placeholder="type to search the classes")
    if i is None:
        return
    acc, support = ev["per_class"][i], ev["support"][i]
    out, into = charts.class_confusions(ev, i)
    st.caption(f"{options[i]}: " + ("no image in this split." if not support else
                                    f"accuracy {acc:.1%} on {support} image(s)."))
    c1, c2 = st.columns(2)
    c1.markdown("**Its images were taken for**")
    c1.dataframe(out, hide_index=True, key="eval_class_out", column_config=PAIR_COLUMNS)
    c2.markdown("**Taken for it**")
    c2.dataframe(into, hide_index=True, key="eval_class_into", column_config=PAIR_COLUMNS)


def mistakes_section(ev: dict, run_id: str, split: str, label: str) -> None:
    st.subheader("Most confident mistakes")
    f = store().run(run_id).predictions_file(split)
    if not f.exists():
        st.caption("Per-image predictions are kept for the validation and holdout splits only.")
        return
    preds = load_predictions(str(f), f.stat().st_mtime)
    wrong = preds[preds["pred"] != preds["target"]].sort_values("conf", ascending=False)
    if wrong.empty:
        st.success(f"No mistakes on the {len(preds)} {label.lower()} images.")
        return
    count = st.slider("Mistakes shown", 4, 48, step=4, key="eval_mistakes")
    names, shown = ev["names"], []
    for r in wrong.itertuples():
        if len(shown) == count:
            break
        try:
            shown.append((thumbnail(r.path, Path(r.path).stat().st_mtime),
                          f"{names[r.target]} → {names[r.pred]} ({r.conf:.0%})"))
        except Exception:  # noqa: BLE001 - a moved or unreadable image is skipped, not fatal
            continue
    st.caption(f"{len(wrong)} of {len(preds)} images misclassified; most confident first "
               "(caption: true class → predicted class (confidence)).")
    if not shown:
        st.info("The misclassified images are no longer on disk.")
    for i in range(0, len(shown), 6):
        for col, (img, caption) in zip(st.columns(6), shown[i:i + 6]):
            col.image(img, caption=caption, width="stretch")


st.title("🎯 Evaluate")
runs = runs_frame(("done",))
if runs.empty:
    st.info("No finished runs yet. Launch one on the **Train** page, then come back to see its holdout, "
            "per-class and confusion results.", icon="ℹ️")
    st.page_link(nav.TRAIN.page(), label="Go to the Train page")
    st.stop()
runs["finished"] = [(store().get(r) or {}).get("finished") for r in runs["run_id"]]

st.subheader("Holdout results")
holdout_table(runs)
group_table(runs)

st.divider()
c1, c2 = st.columns([3, 2])
with c1:
    run_id = run_picker("Run", key="eval_run")
config = store().get(run_id)["config"]
labels = split_labels([config])
split = c2.radio("Split", SPLITS, format_func=labels.get, horizontal=True, key="eval_split")
finished = runs.set_index("run_id").loc[run_id, "finished"]
ev = load_evals(home_key(), run_id, finished).get(split)
confusion = load_confusion(home_key(), run_id, split, finished) if ev and ev.get("n") else None
if confusion is None:
    st.info(f"Run {run_id} has no {labels[split].lower()} images to evaluate.", icon="ℹ️")
    st.stop()
ev = {**ev, "cells": confusion}
split_metrics(ev, split)
data_root = str(config.get("data") or "")
if split == "holdout":
    distractor_panel(run_id, data_root)
per_class_section(ev, labels[split], run_id, split)
confusion_section(ev, run_id, split)
emb = embedding_map.embeddings(run_id)
photo_views.photos_section(run_id, split, ev, emb)
embedding_map.map_section(run_id, split, ev, emb)
mistakes_section(ev, run_id, split, labels[split])
calibration_section(run_id, split, labels[split])
inspect_panel(run_id, data_root)
export_panel(run_id, key="eval_export", label="Download this model (ONNX or TorchScript)")
