"""Plotly figure builders and the table shaping behind them, shared by the Evaluate and Compare
pages. Pure functions from data (an eval dict as written by core.engine.final_evaluation, epoch
frames from the run store) to frames and figures: no Streamlit here, so they are unit-tested.

An eval dict has keys n, acc, top5, gap, loss, per_class, support, labels, names, and, as the
pages load it, `cells`: the split's confusion matrix as a core.train.metrics.Confusion of its
non-zero cells (class indices in the order of `labels`; Run.read_confusion). Nothing here builds a
C×C matrix: a heatmap shows at most FULL_MATRIX_MAX classes plus "(other)" (issue 20).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from itertools import count

import numpy as np
import pandas as pd
import plotly.colors as pcolors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.train.metrics import Confusion, f1_per_class

OTHER = "(other)"
FULL_MATRIX_MAX = 50       # classes shown in full in a heatmap; above it the top-K most confused
BARS_MAX = 60              # classes drawn one bar each; above it per-class accuracy is a histogram
PAIRS_SHOWN = 200          # rows of the most-confused pairs table (every pair is in the CSV)
TICK_CHARS = 18            # class names are cut to this many characters on axes
TRAIN_COLOR = "#1f77b4"    # training curves: solid blue
VAL_COLOR = "#ff7f0e"      # validation curves: dashed orange (tells apart from blue in colour-blind eyes too)
# one "validation accuracy" on every page: the last epoch's model, the checkpoint (last.pt) that the
# final evaluation, Evaluate, Classify and exports use, and the value a sweep's study ranks trials by
VAL_ACC = "Val acc (last epoch)"
VAL_ACC_HELP = ("Validation accuracy of the last epoch's model: the checkpoint that the holdout evaluation, "
                "Evaluate, Classify and exports use, and what sweeps rank trials by.")
RAW_COLOR = "#a0a7b4"      # raw per-step loss: faint grey under its bold smoothed line
SMOOTHING = 0.9            # default EMA weight of the per-step loss (TensorBoard's slider, 0 = raw)
STEP_POINTS = 4000         # raw step points drawn per run (the smoothed line uses every step)


def truncate(name, n: int = TICK_CHARS) -> str:
    s = str(name)
    return s if len(s) <= n else s[: n - 1] + "…"


def short_labels(names, width: int = TICK_CHARS) -> list[str]:
    """Axis labels of at most `width` characters that stay unique when the names are (44 GLDv2
    classes starting "chhatrapati_shiva…" must not read the same twice). Names that fit are kept
    as they are; longer ones are cut with "…"; where two cuts collide they keep their head and
    tail instead ("chhatrapa…terminus"), and a cut that still collides gets a numbered suffix
    ("chhatrapati_sh…#2"). Equal names are numbered too. Labels exceed `width` only when the number cannot fit (width < 2 + digits
    of len(names)). Hover texts should carry the full names."""
    names = [str(s) for s in names]
    width = max(int(width), 1)
    out = [truncate(s, width) for s in names]

    def clashing() -> list[int]:
        seen = Counter(out)
        return [i for i, label in enumerate(out) if seen[label] > 1]

    tail = (width - 1) // 2
    for i in clashing():                 # a cut that collides: keep the distinguishing end too
        s = names[i]
        if len(s) > width:
            out[i] = s[: width - 1 - tail] + "…" + s[len(s) - tail:]
    once = Counter(names)
    clash = [i for i in clashing() if len(names[i]) > width or once[names[i]] > 1]   # whole names stay
    used = set(out) - {out[i] for i in clash}
    for i in clash:                      # still equal: number them, never reusing a label
        s = names[i]
        for k in count(1):
            suffix = f"#{k}"
            body = s if len(s) + len(suffix) <= width else s[: max(width - len(suffix) - 1, 0)] + "…"
            if body + suffix not in used:
                break
        out[i] = body + suffix
        used.add(out[i])
    return out


def tick_labels(names) -> list[str]:
    """Short axis labels: the words every name starts with (e.g. "Synthetic: ") dropped, then
    cut to TICK_CHARS by short_labels (unique whenever the names are); hover texts keep the
    full names."""
    names = [str(s) for s in names]
    real = [s for s in names if s != OTHER]
    prefix = os.path.commonprefix(real) if len(real) > 1 else ""
    cut = prefix.rfind(" ") + 1
    return short_labels([s if s == OTHER else s[cut:] for s in names])


# ------------------------------------------------------------------ class axes

def class_axis_labels(labels) -> list[str]:
    """Class labels as the strings an axis shows: GLDv2's landmark ids are integers, and plotly
    draws numbers (or numeric strings) at their values unless the axis is told they are names."""
    return [str(label) for label in labels]


def category_axis(labels, **layout) -> dict:
    """A plotly axis (layout dict) that treats `labels` as categories, in the order given (issue 20:
    integer landmark ids drew Fig. 1's bars at x = 20409, 138982 … on a 0-200k numeric axis,
    hairlines instead of bars in frequency order). Use for any axis whose values are classes."""
    return dict(type="category", categoryorder="array", categoryarray=class_axis_labels(labels), **layout)


# ------------------------------------------------------------------ confusion matrices

def row_normalize(cm) -> np.ndarray:
    """Each true-class row divided by its support; rows without samples stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def as_confusion(cm) -> Confusion:
    """A Confusion as it is, or a small dense matrix (hand-made in tests) as its cells."""
    return cm if isinstance(cm, Confusion) else Confusion.from_dense(cm)


def most_confused(cm, k: int) -> list[int]:
    """The k classes with the most off-diagonal mass (mistakes made on them plus mistakes
    predicting them), most confused first; ties keep class order."""
    off = as_confusion(cm).off_diagonal_mass()
    order = np.argsort(-off, kind="stable")
    return [int(i) for i in order[: max(0, int(k))]]


def reduce_confusion(cm, keep, names) -> tuple[np.ndarray, list[str]]:
    """The matrix over the classes `keep` (indices, in that order) plus one "(other)" row and
    column that sum every other class; (other, other) holds only the mistakes among them, not
    their right answers (that diagonal drowned the colour scale at 1,000 classes, issue 20)."""
    conf = as_confusion(cm)
    keep = [int(i) for i in keep]
    kept = [str(names[i]) for i in keep]
    if conf.n_classes > len(keep):
        return conf.dense(keep), kept + [OTHER]
    return conf.dense(keep, other=False), kept


def _positions(ev: dict, labels: list) -> np.ndarray:
    """For each class of the eval (by index), its position in `labels`, or -1."""
    pos = {str(l): i for i, l in enumerate(labels)}
    return np.asarray([pos.get(str(l), -1) for l in ev["labels"]], dtype=np.int64)


def restrict_confusion(ev: dict, labels: list) -> tuple[np.ndarray, list[str]]:
    """An eval's confusion matrix over the given class labels (e.g. those two runs share), with
    the run's other classes folded into "(other)" (its own right answers left out)."""
    pos = {str(l): i for i, l in enumerate(ev["labels"])}
    return reduce_confusion(ev["cells"], [pos[str(l)] for l in labels], ev["names"])


def shared_most_confused(evs, labels: list, k: int) -> list[str]:
    """The k labels (of `labels`) with the most mistakes among `labels` summed over the runs."""
    mass = np.zeros(len(labels), dtype=np.int64)
    for ev in evs:
        c, at = ev["cells"], _positions(ev, labels)
        t, p = at[c.true], at[c.pred]
        wrong = (t >= 0) & (p >= 0) & (t != p)
        mass += np.bincount(t[wrong], c.count[wrong], minlength=len(labels)).astype(np.int64)
        mass += np.bincount(p[wrong], c.count[wrong], minlength=len(labels)).astype(np.int64)
    return [labels[i] for i in np.argsort(-mass, kind="stable")[:k]]


def confusion_pairs(ev: dict, k: int | None = None) -> pd.DataFrame:
    """The most-confused (true, predicted) pairs, largest first: names, labels, images and the
    share of the true class's images that went to that prediction."""
    conf = ev["cells"]
    m = conf.mistakes(k)
    names = np.asarray([str(s) for s in ev["names"]], dtype=object)
    labels = np.asarray([str(s) for s in ev["labels"]], dtype=object)
    support = conf.support()
    return pd.DataFrame({"true": names[m.true], "true_label": labels[m.true],
                         "predicted": names[m.pred], "predicted_label": labels[m.pred],
                         "images": m.count, "share": m.count / np.maximum(support[m.true], 1)})


def class_confusions(ev: dict, i: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One class's mistakes: (what its images were taken for, what was taken for it), largest first."""
    pairs = confusion_pairs(ev)
    label = str(ev["labels"][i])
    out = pairs[pairs["true_label"] == label][["predicted", "predicted_label", "images", "share"]]
    into = pairs[pairs["predicted_label"] == label][["true", "true_label", "images", "share"]]
    return out.reset_index(drop=True), into.reset_index(drop=True)


def heatmap_height(n: int) -> int:
    """Pixels for an n-class heatmap: about 16 px per class so 50 classes stay readable."""
    return int(np.clip(140 + 16 * n, 360, 1600))


def confusion_figure(cm, names, normalize: bool = False, title: str | None = None) -> go.Figure:
    """Interactive heatmap (the seed's Fig. 3): hover shows full names, count and row share.
    Axes are positions with names as tick text, so equal (truncated) names never merge."""
    counts = np.asarray(cm, dtype=np.int64)
    share = row_normalize(counts)
    z = share if normalize else counts
    n = len(names)
    ix = list(range(n))
    true_names = np.repeat(np.asarray([str(s) for s in names], dtype=object)[:, None], n, axis=1)
    pred_names = true_names.T
    custom = np.dstack([true_names, pred_names, counts.astype(object), share.astype(object)])
    fig = go.Figure(go.Heatmap(
        z=z, x=ix, y=ix, customdata=custom, colorscale="Blues", zmin=0,
        zmax=1 if normalize else max(int(counts.max(initial=0)), 1),
        colorbar=dict(title="share" if normalize else "images"),
        hovertemplate="true: %{customdata[0]}<br>predicted: %{customdata[1]}<br>"
                      "images: %{customdata[2]}<br>row share: %{customdata[3]:.1%}<extra></extra>"))
    ticks = dict(tickmode="array", tickvals=ix, ticktext=tick_labels(names),
                 tickfont=dict(size=10 if n > 20 else 12), showticklabels=n <= 120)
    fig.update_xaxes(title="predicted class", tickangle=-60 if n > 8 else 0, **ticks)
    fig.update_yaxes(title="true class", autorange="reversed", **ticks)
    fig.update_layout(title=title, height=heatmap_height(n), margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    if n <= 20:  # counts in the cells while they still fit
        fig.update_traces(text=np.round(z, 2) if normalize else counts, texttemplate="%{text}")
    return fig


def confusion_csv(ev: dict) -> bytes:
    """Every non-zero cell as CSV (true and predicted class by label and name, images): the
    whole matrix at any class count, in the size of its mistakes."""
    conf = ev["cells"]
    names = np.asarray([str(s) for s in ev["names"]], dtype=object)
    labels = np.asarray([str(s) for s in ev["labels"]], dtype=object)
    df = pd.DataFrame({"true_label": labels[conf.true], "true": names[conf.true],
                       "predicted_label": labels[conf.pred], "predicted": names[conf.pred], "images": conf.count})
    return df.to_csv(index=False).encode()


# ------------------------------------------------------------------ per-class accuracy

def per_class_frame(ev: dict) -> pd.DataFrame:
    """label, name, acc (NaN where the split has no image of the class), support, correct,
    predicted (images predicted as the class) and f1, one row per class."""
    conf = ev["cells"]
    acc = pd.to_numeric(pd.Series(ev["per_class"], dtype=object), errors="coerce").astype(float)
    return pd.DataFrame({"label": [str(l) for l in ev["labels"]], "name": [str(s) for s in ev["names"]],
                         "acc": acc.to_numpy(), "support": np.asarray(ev["support"], dtype=np.int64),
                         "correct": conf.correct(), "predicted": conf.predicted(), "f1": f1_per_class(conf)})


def find_classes(df: pd.DataFrame, query: str) -> pd.DataFrame:
    """Rows whose name or label contains `query` (case-insensitive); all rows for an empty query."""
    q = (query or "").strip().lower()
    if not q:
        return df
    hit = df["name"].str.lower().str.contains(q, regex=False) | df["label"].str.lower().str.contains(q, regex=False)
    return df[hit]


def worst_classes(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k classes with the lowest accuracy (more images first among equals); classes without
    images in the split are left out."""
    d = df.dropna(subset=["acc"])
    return d.sort_values(["acc", "support"], ascending=[True, False], kind="stable").head(int(k))


def class_options(ev: dict) -> dict[int, str]:
    """Class index -> a picker label that is unique even where names repeat: "name · label"."""
    return {i: f"{n} · {l}" if str(n) != str(l) else str(l) for i, (n, l) in enumerate(zip(ev["names"], ev["labels"]))}


def accuracy_colors(acc) -> list[str]:
    """Red (0 %) through yellow to green (100 %) as colour strings: plotly.js reads numbers given as
    bar colours as invalid colour specifiers when it picks the inside text's contrast (issue 21)."""
    return pcolors.sample_colorscale("RdYlGn", np.clip(np.asarray(acc, dtype=np.float64), 0, 1).tolist()) \
        if len(acc) else []


def per_class_figure(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Per-class accuracy: sorted bars (the seed's Fig. 4) up to BARS_MAX classes, above it a
    histogram of how many classes reach each accuracy; classes without images are left out."""
    d = df.dropna(subset=["acc"]).sort_values(["acc", "support"], ascending=[False, False]).reset_index(drop=True)
    if len(d) > BARS_MAX:
        return _histogram({"classes": d["acc"]}, "accuracy", title, (0, 1))
    fig = go.Figure(go.Bar(
        x=list(range(len(d))), y=d["acc"], marker_color=accuracy_colors(d["acc"]),
        customdata=np.stack([d["name"], d["label"], d["support"], d["correct"]], axis=1) if len(d) else None,
        hovertemplate="%{customdata[0]} (label %{customdata[1]})<br>accuracy %{y:.1%} "
                      "= %{customdata[3]}/%{customdata[2]} images<extra></extra>",
        text=[str(int(n)) for n in d["support"]], textposition="inside", insidetextanchor="end"))
    fig.update_layout(uniformtext=dict(minsize=8, mode="hide"))   # support labels that fit, none that overlap
    _class_axis(fig, d["name"].tolist())
    fig.update_layout(title=title, yaxis=dict(title="accuracy", range=[0, 1.02], tickformat=".0%"),
                      height=420, margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


def _histogram(series: dict, what: str, title: str | None, span: tuple[float, float]) -> go.Figure:
    """How many classes fall in each 5 % bin of `what`, one (overlaid) histogram per series."""
    lo, hi = span
    size = 0.05 * (hi - lo)
    edges = np.linspace(lo, hi, int(round((hi - lo) / size)) + 1)
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        v = np.clip(np.asarray(values, dtype=np.float64), lo, hi)
        counts, _ = np.histogram(v, bins=edges)          # the last bin holds `hi` (e.g. accuracy 100 %)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=size * 0.9, name=name,
                             opacity=1 if len(series) == 1 else 0.55,
                             marker_color=_palette(i) if len(series) > 1 else "#2a9d8f",
                             customdata=np.stack([edges[:-1], edges[1:]], axis=1),
                             hovertemplate=f"{name + ': ' if len(series) > 1 else ''}%{{y}} classes with {what} "
                                           "%{customdata[0]:.0%}–%{customdata[1]:.0%}<extra></extra>"))
    fig.update_layout(title=title, barmode="overlay", height=360,
                      xaxis=dict(title=f"{what} (bins of {size:.0%})", tickformat=".0%", range=[lo, hi]),
                      yaxis=dict(title="classes"), margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      showlegend=len(series) > 1, legend=dict(orientation="h", y=1.1))
    return fig


def _class_axis(fig: go.Figure, names: list) -> None:
    n = len(names)
    fig.update_xaxes(tickmode="array", tickvals=list(range(n)), ticktext=tick_labels(names),
                     tickangle=-60 if n > 6 else 0, showticklabels=n <= 120,
                     tickfont=dict(size=10 if n > 20 else 12), title="class")


# ------------------------------------------------------------------ comparing runs

def shared_labels(label_lists) -> list[str]:
    """Labels present in every list, in the order of the first."""
    lists = [[str(l) for l in ls] for ls in label_lists]
    if not lists:
        return []
    common = set(lists[0]).intersection(*map(set, lists[1:]))
    return [l for l in lists[0] if l in common]


def shared_accuracy(ev: dict, labels: list) -> tuple[float | None, int]:
    """(accuracy, images) of one eval over the images whose true class is in `labels`: a fair
    number for runs trained on different class sets (a prediction outside `labels` counts wrong)."""
    c = ev["cells"]
    inside = _positions(ev, labels)[c.true] >= 0
    n = int(c.count[inside].sum())
    right = int(c.count[inside & (c.true == c.pred)].sum())
    return (right / n if n else None), n


def class_overlap(label_lists) -> dict:
    """How many classes all runs share and how many each run has that not all others have."""
    shared = set(shared_labels(label_lists))
    return {"shared": len(shared), "only": [len({str(l) for l in ls} - shared) for ls in label_lists]}


def per_class_difference(ev_a: dict, ev_b: dict) -> pd.DataFrame:
    """acc_a − acc_b per class both runs have (matched by label), largest difference first;
    classes without images in either split get a NaN difference and sort last."""
    a = per_class_frame(ev_a).set_index("label")
    b = per_class_frame(ev_b).set_index("label")
    shared = shared_labels([a.index, b.index])
    df = pd.DataFrame({"label": shared, "name": a.loc[shared, "name"].to_numpy(),
                       "acc_a": a.loc[shared, "acc"].to_numpy(), "acc_b": b.loc[shared, "acc"].to_numpy(),
                       "support_a": a.loc[shared, "support"].to_numpy(),
                       "support_b": b.loc[shared, "support"].to_numpy()})
    df["diff"] = df["acc_a"] - df["acc_b"]
    return df.sort_values("diff", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def per_class_diff_figure(df: pd.DataFrame, name_a: str, name_b: str) -> go.Figure:
    """acc A − B per shared class: one bar each up to BARS_MAX classes, above it a histogram."""
    d = df.dropna(subset=["diff"]).reset_index(drop=True)
    title = f"accuracy A − B  (A = {name_a}, B = {name_b})"
    if len(d) > BARS_MAX:
        return _histogram({"classes": d["diff"]}, "accuracy A − B", title, (-1, 1))
    fig = go.Figure(go.Bar(
        x=list(range(len(d))), y=d["diff"], marker_color=np.where(d["diff"] >= 0, "#2a9d8f", "#e76f51"),
        customdata=np.stack([d["name"], d["acc_a"], d["acc_b"], d["support_a"], d["support_b"]], axis=1)
        if len(d) else None,
        hovertemplate="%{customdata[0]}<br>A %{customdata[1]:.1%} (n=%{customdata[3]}) − "
                      "B %{customdata[2]:.1%} (n=%{customdata[4]})<br>= %{y:+.1%}<extra></extra>"))
    _class_axis(fig, d["name"].tolist())
    fig.update_layout(title=title,
                      yaxis=dict(title="accuracy difference", tickformat="+.0%", range=[-1.05, 1.05]),
                      height=420, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def per_class_grouped_figure(evs: dict, labels: list) -> go.Figure:
    """Grouped bars: per-class accuracy of each run (name -> eval) on the given labels, classes
    ordered by mean accuracy over the runs; above BARS_MAX classes one histogram per run."""
    frames = {k: per_class_frame(ev).set_index("label").loc[[str(l) for l in labels]] for k, ev in evs.items()}
    if len(labels) > BARS_MAX:
        return _histogram({k: f["acc"].dropna() for k, f in frames.items()}, "accuracy", None, (0, 1))
    mean = pd.concat([f["acc"] for f in frames.values()], axis=1).mean(axis=1)
    order = mean.sort_values(ascending=False, kind="stable").index
    names = next(iter(frames.values())).loc[order, "name"].tolist() if frames else []
    fig = go.Figure([go.Bar(name=k, x=list(range(len(order))), y=f.loc[order, "acc"], customdata=names,
                            hovertemplate=f"{k}<br>%{{customdata}}: %{{y:.1%}}<extra></extra>")
                     for k, f in frames.items()])
    _class_axis(fig, names)
    fig.update_layout(barmode="group", yaxis=dict(title="accuracy", range=[0, 1.02], tickformat=".0%"),
                      height=440, margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=1.1))
    return fig


def curves_figure(epochs: dict, log: bool = False) -> go.Figure:
    """Validation accuracy beside the loss per epoch (validation dashed, training solid), one
    colour per run (name -> epochs frame); `log`: the loss on a log axis."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation accuracy",
                                                        "loss: validation (dashed), training (solid)"))
    panels = (("val_acc", 1, ".1%", "solid", "val acc"), ("val_loss", 2, ".4f", "dash", "val loss"),
              ("train_loss", 2, ".4f", "solid", "train loss"))
    for i, (name, df) in enumerate(epochs.items()):
        color = _palette(i)
        for metric, col, fmt, dash, what in panels:
            if metric not in df:
                continue
            fig.add_trace(go.Scatter(x=df["epoch"], y=df[metric], mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=metric == "val_acc",
                                     line=dict(color=color, dash=dash),
                                     hovertemplate=f"{name}<br>{what}, epoch %{{x}}: %{{y:{fmt}}}<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(title="epoch", dtick=1)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title="loss", type="log" if log else "linear", row=1, col=2)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def smooth(values, weight: float) -> pd.Series:
    """TensorBoard's smoothing: an exponential moving average with weight `weight` (0 = none,
    0.99 = very smooth), debiased so the first points are not pulled towards 0."""
    v = pd.Series(np.asarray(values, dtype=np.float64))
    w = float(np.clip(weight, 0.0, 0.999))
    return v.ewm(alpha=1.0 - w, adjust=True).mean()


def step_curves_figure(steps: dict, weight: float = SMOOTHING, log: bool = False,
                       title: str | None = "Training loss per step") -> go.Figure:
    """Per-step training loss of one or more runs (name -> steps frame with step, loss): the raw
    loss faint and thin, the smoothed loss bold. One run: raw grey, smoothed blue; several runs:
    one colour each (raw in the run's colour, faint)."""
    fig = go.Figure()
    single = len(steps) == 1
    for i, (name, df) in enumerate(steps.items()):
        if df.empty:
            continue
        color = TRAIN_COLOR if single else _palette(i)
        raw = df.iloc[::max(len(df) // STEP_POINTS, 1)]
        if weight > 0:
            fig.add_trace(go.Scatter(x=raw["step"], y=raw["loss"], mode="lines", legendgroup=name,
                                     name="raw loss per step" if single else f"{name} (raw)", showlegend=single,
                                     line=dict(color=RAW_COLOR if single else color, width=1.2), opacity=0.7 if single else 0.3,
                                     hovertemplate=f"{'' if single else name + '<br>'}step %{{x}}: raw loss "
                                                   "%{y:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=df["step"], y=smooth(df["loss"], weight) if weight > 0 else df["loss"],
                                 mode="lines", legendgroup=name,
                                 name=(f"smoothed (EMA weight {weight:.2f})" if weight > 0 else "loss per step")
                                 if single else name,
                                 line=dict(color=color, width=2.5),
                                 hovertemplate=f"{'' if single else name + '<br>'}step %{{x}}: "
                                               f"{'smoothed ' if weight > 0 else ''}loss %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", height=340,
                      yaxis_type="log" if log else "linear",
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick values and texts for a log axis spanning [lo, hi]: 1, 10, 100, 1k … over many decades,
    1, 2, 5, 10, 20, 50 … over a few, every 1–9 × 10^k within about a decade, plus lo and hi
    where no tick is near them; texts are whole numbers ("50", "68", never plotly's bare "5",
    "7" between powers of ten). An empty or non-positive range gives no ticks."""
    lo, hi = float(lo), float(hi)
    if not (lo > 0 and hi >= lo and math.isfinite(hi)):
        return [], []
    decades = math.log10(hi / lo)
    mults = (1,) if decades > 4 else (1, 2, 5) if decades > 1.2 else range(1, 10)
    grid = (float(f"{m}e{k}") for k in range(math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1)
            for m in mults)
    vals = [v for v in grid if lo <= v <= hi]
    # the ends themselves (the largest class, the last rank) where no tick is near them
    if len(vals) < 2 or hi >= 1.3 * vals[-1]:
        vals.append(hi)
    if len(vals) < 2 or lo <= vals[0] / 1.3:
        vals.insert(0, lo)
    vals = sorted(set(vals))
    return vals, [compact(v) for v in vals]


def log_axis(lo: float, hi: float) -> dict:
    """A log axis over [lo, hi] with log_ticks and a little room at both ends (plotly layout dict)."""
    vals, texts = log_ticks(lo, hi)
    if not vals:
        return dict(type="log")
    a, b = math.log10(lo), math.log10(hi)
    pad = 0.04 * max(b - a, 0.5)
    return dict(type="log", tickmode="array", tickvals=vals, ticktext=texts, range=[a - pad, b + pad])


def compact(v: float) -> str:
    """1 -> "1", 68 -> "68", 2000 -> "2k", 1500 -> "1.5k", 3e6 -> "3M"."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}" if v != int(v) else str(int(v))


def align_confusions(cm_a, names_a, cm_b, names_b, normalize: bool = False):
    """Two confusion matrices over the same classes (as restrict_confusion gives them) made the
    same shape: a run without an "(other)" row and column gets a zero one when the other run has
    it. `normalize`: row shares instead of counts. Returns (a, b, names); A − B is a − b."""
    a, b = np.asarray(cm_a, dtype=np.float64), np.asarray(cm_b, dtype=np.float64)
    if normalize:
        a, b = row_normalize(a), row_normalize(b)
    names = [str(s) for s in (names_a if len(names_a) >= len(names_b) else names_b)]
    n = len(names)
    a, b = (np.pad(m, ((0, n - len(m)), (0, n - len(m)))) for m in (a, b))
    return a, b, names


def confusion_difference_figure(a, b, names, normalize: bool = False, title: str | None = None) -> go.Figure:
    """A − B of two aligned confusion matrices on a diverging scale centred on 0 (blue: A has
    more in the cell, red: B has); hover shows the full class names, A, B and the difference."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = a - b
    n = len(names)
    ix = list(range(n))
    true_names = np.repeat(np.asarray([str(s) for s in names], dtype=object)[:, None], n, axis=1)
    custom = np.dstack([true_names, true_names.T, a.astype(object), b.astype(object)])
    top = float(np.abs(diff).max(initial=0)) or 1.0
    fmt = ".1%" if normalize else ",.0f"
    fig = go.Figure(go.Heatmap(
        z=diff, x=ix, y=ix, customdata=custom, colorscale="RdBu", zmid=0, zmin=-top, zmax=top,
        colorbar=dict(title="A − B share" if normalize else "A − B images"),
        hovertemplate="true: %{customdata[0]}<br>predicted: %{customdata[1]}<br>"
                      f"A %{{customdata[2]:{fmt}}} − B %{{customdata[3]:{fmt}}} = %{{z:+{fmt}}}<extra></extra>"))
    ticks = dict(tickmode="array", tickvals=ix, ticktext=tick_labels(names),
                 tickfont=dict(size=10 if n > 20 else 12), showticklabels=n <= 120)
    fig.update_xaxes(title="predicted class", tickangle=-60 if n > 8 else 0, **ticks)
    fig.update_yaxes(title="true class", autorange="reversed", **ticks)
    fig.update_layout(title=title, height=heatmap_height(n), margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    if n <= 20:
        fig.update_traces(text=np.round(diff, 2) if normalize else diff.astype(np.int64), texttemplate="%{text}")
    return fig


def _palette(i: int) -> str:
    import plotly.express as px
    colors = px.colors.qualitative.Plotly
    return colors[i % len(colors)]


# ------------------------------------------------------------------ several runs on one chart (Runs page)

OVERLAY = {   # what -> (title, y axis title, hover format)
    "val_acc": ("Validation accuracy per epoch", "val acc", ".1%"),
    "loss": ("Loss per epoch: validation (dashed), training (solid)", "loss", ".4f"),
    "lr": ("Learning rate per epoch", "learning rate", ".3g"),
}


def overlay_figure(epochs: dict, what: str, log: bool = False) -> go.Figure:
    """One metric of several runs on one chart (name -> epochs frame, as the run store gives it),
    as TensorBoard and W&B overlay runs: one colour per run, the legend says the run's name.
    `what`: "val_acc", "loss" (validation dashed and training solid, one legend entry per run) or
    "lr" (the learning rate each epoch trained with). `log`: a log y axis (loss and lr only)."""
    title, ytitle, fmt = OVERLAY[what]
    metrics = (("val_loss", "dash", "val loss"), ("train_loss", "solid", "train loss")) if what == "loss" \
        else ((what, "solid", ytitle),)
    fig = go.Figure()
    for i, (name, df) in enumerate(epochs.items()):
        color = _palette(i)
        shown = False
        for metric, dash, label in metrics:
            if metric not in df or df[metric].isna().all():
                continue
            fig.add_trace(go.Scatter(x=df["epoch"], y=df[metric], mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=not shown, line=dict(color=color, dash=dash),
                                     hovertemplate=f"{name}<br>{label}, epoch %{{x}}: %{{y:{fmt}}}<extra></extra>"))
            shown = True
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=ytitle, height=320,
                      yaxis_type="log" if log and what != "val_acc" else "linear",
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    if what == "val_acc":
        fig.update_yaxes(tickformat=".0%")
    elif what == "lr":
        fig.update_yaxes(exponentformat="e")
    fig.update_xaxes(dtick=1)
    return fig


def filter_runs(df: pd.DataFrame, query: str = "", statuses=()) -> pd.DataFrame:
    """The runs whose name, run id, model or data set contains `query` (any case; every word of it
    somewhere), and whose status is one of `statuses` (all when none are given)."""
    keep = pd.Series(True, index=df.index)
    if statuses:
        keep &= df["status"].isin(list(statuses))
    fields = [c for c in ("name", "run_id", "model", "dataset") if c in df]
    text = df[fields].fillna("").astype(str).agg(" ".join, axis=1).str.lower() if fields and len(df) else \
        pd.Series("", index=df.index)
    for word in (query or "").lower().split():
        keep &= text.str.contains(word, regex=False)
    return df[keep]
