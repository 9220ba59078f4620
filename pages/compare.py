"""Compare: two or more finished runs side by side — metrics and config differences, curves,
per-class accuracy on the classes they share, confusion matrices, and the same image explained
by each model with the same method (the seed's Figs. 5–6)."""
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.data.readers import open_image
from core.data.uploads import UPLOAD_TYPES, limits_text, load_upload
from core.errors import UserError
from core.explain import METHODS, explain_one
from core.runs.groups import group_of, group_stats, within_noise
from dashboard import charts, nav
from dashboard.calibration_panel import compare_calibration
from dashboard.distractor_panel import compare_distractors
from dashboard.common import (home_key, loss_controls, predictor, run_names, run_picker, runs_frame, split_labels,
                              store, user_error)
from dashboard.versions import relation_line

SPLITS = ("val", "holdout", "train")       # in the order of the split picker; labels from the runs' configs
st.session_state.setdefault("cmp_split", "val")
st.session_state.setdefault("cmp_normalize", False)
st.session_state.setdefault("cmp_top_k", 30)
st.session_state.setdefault("cmp_class_query", "")
st.session_state.setdefault("cmp_source", "holdout")
st.session_state.setdefault("cmp_method", "saliency")
st.session_state.setdefault("cmp_explained", None)   # the (runs, image, method) last explained
PCT = "%.3f"


@st.cache_data(show_spinner=False, max_entries=64)
def load_evals(home: str, run_id: str, finished) -> dict:
    return store().evals(run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def load_confusion(home: str, run_id: str, split: str, finished):
    """The split's confusion cells (a parquet file; a run evaluated before issue 20: its dense matrix)."""
    return store().run(run_id).read_confusion(split, store().evals(run_id).get(split, {}))


@st.cache_data(show_spinner=False, max_entries=64)
def load_epochs(home: str, run_id: str, finished) -> pd.DataFrame:
    return store().epochs(run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def load_steps(home: str, run_id: str, finished) -> pd.DataFrame:
    return store().steps(run_id)[["step", "loss"]]


@st.cache_data(show_spinner=False, max_entries=16)
def load_predictions(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_parquet(path)


@st.cache_data(show_spinner=False, max_entries=64)
def explain_cached(home: str, run_id: str, finished, image_key: str, method: str, _image) -> dict:
    """Top-3 and the rendered explanation of one image by one run (cached per image and method)."""
    pred = predictor(run_id)
    x = pred.tensor(_image)     # each model resizes to its own training size
    r = explain_one(pred, x, method)
    return {"top": pred.top(x, 3), "image": r["image"], "name": r["name"],
            "faithfulness": r["faithfulness"], "ms": r["ms"]}


def upscale(img: np.ndarray, size: int = 256) -> np.ndarray:
    """Small renderings (a 32 px model) enlarged with square pixels instead of a browser blur."""
    if img.shape[0] >= size:
        return img
    from PIL import Image
    return np.asarray(Image.fromarray(img).resize((round(size * img.shape[1] / img.shape[0]), size), Image.NEAREST))


def short_names(runs: list[dict]) -> dict:
    """Run id -> its name in legends and tables: the run's name, or a short unique label."""
    return run_names(runs)


def metrics_table(runs: list[dict], evals: dict, names: dict) -> None:
    rows = []
    for r in runs:
        s, ev = r["summary"] or {}, evals[r["run_id"]]
        rows.append({"run": names[r["run_id"]], "train": s.get("train_acc"), "val": s.get("val_acc"),
                     "val_n": ev.get("val", {}).get("n"), "holdout": s.get("holdout_acc"),
                     "holdout_n": ev.get("holdout", {}).get("n"), "top5": s.get("holdout_top5"),
                     "gap": s.get("holdout_gap"), "epochs": s.get("epochs_completed", r["config"].get("epochs")),
                     "ips": s.get("images_per_s"), "seconds": s.get("seconds")})
    num = st.column_config.NumberColumn
    st.dataframe(pd.DataFrame(rows), hide_index=True, placeholder="—", column_config={
        "run": "Run", "train": num("Train acc", format=PCT), "val": num(charts.VAL_ACC, format=PCT,
                                                                      help=charts.VAL_ACC_HELP),
        "val_n": num("Val images", format="%d", help="The images the validation accuracy rests on."),
        "holdout": num("Holdout acc", format=PCT),
        "holdout_n": num("Holdout images", format="%d", help="The images the holdout accuracy, top-5 and GAP rest "
                                                             "on: one image moves accuracy by 1/n."),
        "top5": num("Holdout top-5", format=PCT), "gap": num("Holdout GAP", format=PCT),
        "epochs": num("Epochs", format="%d"), "ips": num("Images/s", format="%.0f"),
        "seconds": num("Duration (s)", format="%.0f")})


def config_table(runs: list[dict], names: dict) -> None:
    """Every config key as a row, one column per run; rows that differ are highlighted."""
    cfgs = {names[r["run_id"]]: r["config"] for r in runs}
    keys = sorted(set().union(*[c.keys() for c in cfgs.values()]))
    df = pd.DataFrame({n: [_fmt(c.get(k)) for k in keys] for n, c in cfgs.items()}, index=keys)
    differs = df.nunique(axis=1) > 1
    only = st.toggle("Only settings that differ", value=True, key="cmp_only_diff")
    shown = df[differs] if only else df
    if shown.empty:
        st.caption("The runs use the same configuration.")
        return
    style = shown.style.apply(lambda row: ["background-color: rgba(255, 200, 0, 0.25)" if differs[row.name] else ""]
                              * len(row), axis=1)
    st.dataframe(style)


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "—"
    return str(v)


def overlap_note(evs: dict, names: dict) -> list[str]:
    labels = [ev["labels"] for ev in evs.values()]
    shared = charts.shared_labels(labels)
    ov = charts.class_overlap(labels)
    if any(ov["only"]):
        only = "; ".join(f"{k} only in {names[r]}" for r, k in zip(evs, ov["only"]) if k)
        st.info(f"These runs were trained on different class sets. They have **{ov['shared']} shared classes** "
                f"({only}); the accuracy below, per-class accuracy and confusion matrices use the shared "
                "classes, matched by label.", icon="ℹ️")
        if shared:
            rows = [{"run": names[r], "acc": acc, "n": n}
                    for r, (acc, n) in ((r, charts.shared_accuracy(ev, shared)) for r, ev in evs.items())]
            st.dataframe(pd.DataFrame(rows), hide_index=True, key="cmp_shared_acc", column_config={
                "run": "Run", "acc": st.column_config.NumberColumn("Accuracy on the shared classes", format=PCT),
                "n": st.column_config.NumberColumn("Images", format="%d")})
    return shared


def per_class_section(evs: dict, shared: list, names: dict) -> None:
    ids = list(evs)
    if len(ids) == 2:
        a, b = ids
        df = charts.per_class_difference(evs[a], evs[b])
        st.plotly_chart(charts.per_class_diff_figure(df, names[a], names[b]), key="cmp_diff")
        gone = int(df["diff"].isna().sum())
        st.caption(("Positive bars: A is more accurate on the class." if len(df) - gone <= charts.BARS_MAX else
                    f"How many of the {len(df) - gone:,} shared classes have each difference; right of 0: A is "
                    "more accurate. The table lists them, largest difference first.") +
                   (f" {gone} shared class(es) without images in this split are left out." if gone else ""))
        table = df.rename(columns={"acc_a": f"A: {names[a]}", "acc_b": f"B: {names[b]}",
                                   "support_a": "images A", "support_b": "images B", "diff": "A − B"})
    else:
        st.plotly_chart(charts.per_class_grouped_figure({names[r]: evs[r] for r in ids}, shared), key="cmp_grouped")
        frames = [charts.per_class_frame(evs[r]).set_index("label").loc[[str(l) for l in shared]] for r in ids]
        table = frames[0][["name"]].assign(**{names[r]: f["acc"] for r, f in zip(ids, frames)}).reset_index()
    query = st.text_input("Find a shared class", key="cmp_class_query", placeholder="part of a name or label")
    with st.expander("Per-class table (click a column to sort)", expanded=bool(query)):
        st.dataframe(charts.find_classes(table, query), hide_index=True, key="cmp_per_class_table",
                     column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in table.columns
                                    if c not in ("label", "name", "images A", "images B")})


def confusion_section(evs: dict, shared: list, names: dict) -> None:
    """One run's matrix at a time (a selector: three side by side are unreadable at 30 classes),
    and on request the difference A − B of two runs on a diverging scale."""
    normalize = st.toggle("Row-normalised", key="cmp_normalize")
    labels = shared
    if len(shared) > charts.FULL_MATRIX_MAX:
        k = st.slider("Most-confused shared classes shown", 5, charts.FULL_MATRIX_MAX, key="cmp_top_k")
        labels = charts.shared_most_confused(evs.values(), shared, k)
        st.caption(f"{k} of {len(shared):,} shared classes with the most mistakes over the runs.")
    if any(len(ev["labels"]) > len(labels) for ev in evs.values()):
        st.caption("**(other)** collects each run's classes that are not shown here; their own right answers "
                   "are left out of it, so (other) → (other) counts only mistakes among them.")
    ids = list(evs)
    for key in ("cmp_cm_run", "cmp_cm_a", "cmp_cm_b"):      # runs removed from the comparison
        if st.session_state.get(key) not in (None, *ids):
            del st.session_state[key]
    shown = st.segmented_control("Run shown", ids, format_func=names.get, key="cmp_cm_run", default=ids[0],
                                 required=True)
    cm, cm_names = charts.restrict_confusion(evs[shown], labels)
    st.plotly_chart(charts.confusion_figure(cm, cm_names, normalize=normalize, title=names[shown]), key="cmp_cm")
    with st.expander(f"Most-confused pairs of {names[shown]}"):
        st.dataframe(charts.confusion_pairs(evs[shown], charts.PAIRS_SHOWN), hide_index=True, key="cmp_pairs",
                     column_config={"share": st.column_config.NumberColumn("share of the true class",
                                                                           format="percent")})
    if not st.toggle("Difference of two runs (A − B)", key="cmp_cm_diff",
                     help="Blue cells: run A has more images there (on the diagonal: A is right more often); "
                          "red cells: run B has."):
        return
    c1, c2 = st.columns(2)
    a = c1.selectbox("A", ids, format_func=names.get, key="cmp_cm_a", index=0)
    b = c2.selectbox("B", ids, format_func=names.get, key="cmp_cm_b", index=1)
    if a == b:
        st.info("Pick two different runs for A and B.", icon="ℹ️")
        return
    ma, mb, diff_names = charts.align_confusions(*charts.restrict_confusion(evs[a], labels),
                                                 *charts.restrict_confusion(evs[b], labels), normalize=normalize)
    st.plotly_chart(charts.confusion_difference_figure(ma, mb, diff_names, normalize=normalize,
                                                       title=f"confusion A − B  (A = {names[a]}, B = {names[b]})"),
                    key="cmp_cm_difference")
    st.caption("Blue: A has more " + ("of the row's share" if normalize else "images") + " in the cell than B; "
               "red: B has. On the diagonal blue means A is right more often; off it, that A makes that mistake more.")


def pick_image(first: str):
    """(PIL image, cache key) from an upload or the first run's holdout images, or (None, None)."""
    source = st.radio("Image", ["holdout", "upload"], horizontal=True, key="cmp_source",
                      format_func={"holdout": "Holdout image of the first run", "upload": "Upload"}.get)
    if source == "upload":
        file = st.file_uploader("Image file", type=list(UPLOAD_TYPES), key="cmp_upload")
        st.caption(limits_text())
        if file is None:
            return None, None
        data = file.getvalue()
        try:        # the Classify page's checks: size and pixel caps, type sniffing, truncation
            return load_upload(data, file.name), "upload:" + hashlib.sha1(data).hexdigest()
        except UserError as e:
            user_error(e)
        return None, None
    f = store().run(first).predictions_file("holdout")
    if not f.exists():
        st.info("The first run has no holdout predictions; upload an image instead.", icon="ℹ️")
        return None, None
    preds = load_predictions(str(f), f.stat().st_mtime)
    names = load_evals(home_key(), first, (store().get(first) or {}).get("finished")).get("holdout", {}).get("names", [])
    label = {p: f"{Path(p).name} — {names[t] if t < len(names) else t}" for p, t in zip(preds["path"], preds["target"])}
    path = st.selectbox("Holdout image", list(label), format_func=label.get, key="cmp_image")
    try:
        return open_image(path), f"{path}:{Path(path).stat().st_mtime}"
    except Exception as e:  # noqa: BLE001
        user_error(e)
        return None, None


def explain_section(runs: list[dict], names: dict) -> None:
    image, image_key = pick_image(runs[0]["run_id"])
    method = st.selectbox("Explanation method", list(METHODS), key="cmp_method")
    signature = (tuple(r["run_id"] for r in runs), image_key, method)
    if st.button("Explain with each model", key="cmp_explain", type="primary", disabled=image is None):
        st.session_state["cmp_explained"] = signature
    if image is None:
        return
    st.image(np.asarray(image), caption="input", width=200)
    if st.session_state["cmp_explained"] != signature:
        st.caption("Press the button to run the method on every model (each resizes the image to its own training size).")
        return
    for col, r in zip(st.columns(len(runs)), runs):
        with col:
            st.markdown(f"**{names[r['run_id']]}**")
            try:
                with st.spinner("Explaining…"):
                    out = explain_cached(home_key(), r["run_id"], r["finished"], image_key, method, image)
            except Exception as e:  # noqa: BLE001 - one failing model must not hide the others
                user_error(e)
                continue
            st.image(upscale(out["image"]), width="stretch",
                     caption=f"{method} for “{out['name']}” · faithfulness {out['faithfulness']:.2f} · {out['ms']:.0f} ms")
            top = pd.DataFrame(out["top"])[["name", "prob"]]
            st.dataframe(top, hide_index=True, column_config={
                "name": "Top-3 prediction", "prob": st.column_config.ProgressColumn("p", format="percent", min_value=0, max_value=1)})


def group_noise(runs: list[dict], names: dict) -> None:
    """When the first two runs belong to seed groups: whether their groups' holdout accuracies differ
    by more than the seed noise (core.runs.groups.within_noise says the rule)."""
    groups = [group_of(r["config"]) for r in runs[:2]]
    if not all(groups):
        return
    if groups[0] == groups[1]:
        st.info(f"{names[runs[0]['run_id']]} and {names[runs[1]['run_id']]} are seeds of one group: what "
                "separates them is seed noise.", icon="🎲")
        return
    a, b = (group_stats(store(), g) for g in groups)
    if "holdout_acc" not in a.mean or "holdout_acc" not in b.mean:
        return
    st.info(f"Seed groups: {names[runs[0]['run_id']]}'s {a.describe()}, {names[runs[1]['run_id']]}'s "
            f"{b.describe()}. {within_noise(a, b).sentence()}", icon="🎲")


st.title("⚖️ Compare runs")
run_ids = run_picker("Runs to compare", key="cmp_runs", multi=True)
if len(run_ids) < 2:
    finished_runs = len(runs_frame(("done",)))
    if finished_runs == 1:
        st.info("Only one run has finished: comparing needs two. Train another on the **Train** page.", icon="ℹ️")
    elif finished_runs > 1:
        st.info("Pick at least two finished runs to compare.", icon="ℹ️")
    if finished_runs < 2:
        st.page_link(nav.TRAIN.page(), label="Go to the Train page")
    st.stop()
runs = [store().get(r) for r in run_ids]
names = short_names(runs)
evals = {r["run_id"]: load_evals(home_key(), r["run_id"], r["finished"]) for r in runs}

st.subheader("Metrics")
metrics_table(runs, evals, names)
group_noise(runs, names)
if line := relation_line(runs[0], runs[1], names):        # a data set version and its base (issue 22)
    st.info(line, icon="🧬")
with st.expander("Configuration differences", expanded=True):
    config_table(runs, names)
compare_distractors(runs, names)
compare_calibration(runs, names)

st.subheader("Curves")
log_loss, smoothing = loss_controls("cmp")
st.plotly_chart(charts.curves_figure({names[r["run_id"]]: load_epochs(home_key(), r["run_id"], r["finished"])
                                      for r in runs}, log=log_loss), key="cmp_curves")
st.plotly_chart(charts.step_curves_figure({names[r["run_id"]]: load_steps(home_key(), r["run_id"], r["finished"])
                                           for r in runs}, weight=smoothing, log=log_loss,
                                          title="Training loss per step"), key="cmp_steps")

st.subheader("Per-class accuracy")
labels = split_labels([r["config"] for r in runs])
split = st.radio("Split", SPLITS, format_func=labels.get, horizontal=True, key="cmp_split")
evs = {r["run_id"]: evals[r["run_id"]].get(split) for r in runs}
cells = {r["run_id"]: load_confusion(home_key(), r["run_id"], split, r["finished"]) if (evs[r["run_id"]] or {}).get("n")
         else None for r in runs}
evs = {r: {**ev, "cells": cells[r]} for r, ev in evs.items() if cells[r] is not None}
if len(evs) < len(run_ids):
    st.info(f"Not every run has {labels[split].lower()} images to compare on.", icon="ℹ️")
else:
    shared = overlap_note(evs, names)
    if not shared:
        st.warning("These runs share no class, so per-class accuracy and confusion cannot be compared.")
    else:
        per_class_section(evs, shared, names)
        st.subheader("Confusion matrices")
        confusion_section(evs, shared, names)

st.subheader("Explanations side by side")
explain_section(runs, names)
