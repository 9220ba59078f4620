"""Figures and tables of the Sweeps page (the poster's Fig. 2, done better): pure functions from
`core.runs.sweeps.info()` to a trial frame and plotly figures; no Streamlit here.

A trial frame has one row per trial: trial, state, val_acc, stopped_at, epochs_done, seconds,
run_id, host, error, note, label, hover, then one column per searched parameter (in `params`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

STATE_ICON = {"complete": "✅", "pruned": "✂️", "failed": "❌", "running": "🏃", "waiting": "⏳"}
PATTERN = {"pruned": "/", "failed": "x", "running": "."}     # hatching of non-complete bars
FAILED_GREY = "#9e9e9e"
PALETTE = qualitative.Plotly + qualitative.D3
MAX_CATEGORIES = 12        # a numeric parameter with more distinct values is drawn as a number, not ticks
HEAT_BINS = 6              # bins of a continuous parameter on a heatmap axis
LEGEND_CURVES = 20         # above this many trials the curve plot has no per-trial legend
PCT = "%.3f"                # accuracies in the Sweeps page's tables


BLANK = "—"        # a missing value in tables and labels (never a literal "None")


def fmt(v) -> str:
    """A parameter value as a short text: 0.001, 1e-05, adam, 32; a missing one as "—"."""
    if v is None or isinstance(v, float) and np.isnan(v):
        return BLANK
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"
    return str(v)


def param_names(info: dict) -> list[str]:
    names = list(info.get("space") or {})
    for c in info["configs"]:
        names += [k for k in c["params"] if k not in names]
    return names


def frame(info: dict) -> tuple[pd.DataFrame, list[str]]:
    """(one row per trial, the searched parameter names)."""
    params = param_names(info)
    best = (info.get("best") or {}).get("number")
    rows = []
    for c in info["configs"]:
        p = c["params"]
        state = c["state"]
        stop = c.get("pruned_at") or (max(c["curve"]) if state in ("pruned", "failed") and c["curve"] else None)
        text = " · ".join(f"{k}={fmt(p.get(k))}" for k in params if k in p)
        note = {"pruned": f"pruned after epoch {stop}" if stop else "pruned",
                "failed": f"failed{f' after epoch {stop}' if stop else ''}: {c.get('error') or 'see its run'}",
                "running": f"running, epoch {max(c['curve'])} so far" if c["curve"] else "running"}.get(state, state)
        acc = c["val_acc"]
        hover = (f"<b>#{c['number']}</b>{' ★ best' if c['number'] == best else ''}<br>{text.replace(' · ', '<br>')}"
                 f"<br>val acc (last epoch): {'—' if acc is None else f'{acc:.3f}'}<br>{note}"
                 + (f"<br>run {c['run_id']}" if c.get("run_id") else ""))
        rows.append({"trial": c["number"], "state": state, "val_acc": acc, "stopped_at": stop,
                     "epochs_done": max(c["curve"]) if c["curve"] else None, "seconds": c.get("seconds"),
                     "run_id": c.get("run_id"), "host": c.get("host"), "error": c.get("error"),
                     "note": c.get("note"), "best": c["number"] == best, "label": f"#{c['number']}", "hover": hover,
                     **{k: p.get(k) for k in params}})
    cols = ["trial", "state", "val_acc", "stopped_at", "epochs_done", "seconds", "run_id", "host", "error",
            "note", "best", "label", "hover"]
    return pd.DataFrame(rows, columns=cols + params), params


def is_number_column(s: pd.Series) -> bool:
    return _numeric(s)


def _numeric(s: pd.Series) -> bool:
    v = s.dropna()
    return not v.empty and all(isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
                               for x in v)


def is_categorical(s: pd.Series) -> bool:
    """Ticks (one per value) rather than a number line: text, booleans, or few distinct numbers."""
    return not _numeric(s) or s.nunique() <= MAX_CATEGORIES


def _log_scale(s: pd.Series) -> bool:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return not v.empty and v.min() > 0 and v.max() / v.min() >= 20


def ordered_values(s: pd.Series) -> list:
    vals = list(dict.fromkeys(s.dropna().tolist()))
    return sorted(vals) if _numeric(s) else sorted(vals, key=str)


def _empty(text: str, height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=height, xaxis_visible=False, yaxis_visible=False, margin=dict(l=20, r=20, t=30, b=20))
    return fig


# ------------------------------------------------------------------ validation accuracy per configuration

def bars_figure(df: pd.DataFrame, color_by: str) -> go.Figure:
    """Validation accuracy of every configuration, sorted, coloured by a parameter (or the state);
    pruned bars hatched, failed ones grey and cross-hatched, running ones dotted; the best starred.
    Bars sit at their rank (0 = best), so the order never depends on how an axis sorts categories."""
    d = df[df["val_acc"].notna()].sort_values(["val_acc", "trial"], ascending=[False, True])
    if d.empty:
        return _empty("No trial has a validation accuracy yet.")
    d = d.assign(rank=np.arange(len(d)))
    fig = go.Figure()
    ended_ok = d[d["state"] != "failed"]

    def bar(g, **kw):
        fig.add_bar(x=g["rank"], y=g["val_acc"], hovertext=g["hover"], hovertemplate="%{hovertext}<extra></extra>",
                    width=0.85, **kw)   # an explicit width: each trace's own spacing would widen sparse ones
    if color_by != "state" and color_by in d and not is_categorical(d[color_by]):
        vals = pd.to_numeric(ended_ok[color_by], errors="coerce")
        log = _log_scale(vals)
        bar(ended_ok, name=color_by, showlegend=False,
            marker=dict(color=np.log10(vals) if log else vals, colorscale="Viridis", showscale=True,
                        colorbar=dict(title=f"log10 {color_by}" if log else color_by),
                        pattern_shape=[PATTERN.get(s, "") for s in ended_ok["state"]]))
    else:
        key = "state" if color_by not in d else color_by
        for i, value in enumerate(ordered_values(ended_ok[key])):
            g = ended_ok[ended_ok[key] == value]
            bar(g, name=f"{key}={fmt(value)}" if key != "state" else f"{STATE_ICON.get(value, '')} {value}",
                marker=dict(color=PALETTE[i % len(PALETTE)], pattern_shape=[PATTERN.get(s, "") for s in g["state"]]))
    failed = d[d["state"] == "failed"]
    if not failed.empty:
        bar(failed, name="❌ failed", marker=dict(color=FAILED_GREY, pattern_shape="x"))
    for state, shape in PATTERN.items():
        if state != "failed" and (d["state"] == state).any():   # a legend entry that explains the hatching
            look = "hatched" if shape == "/" else "dotted"
            fig.add_bar(x=[None], y=[None], name=f"{STATE_ICON[state]} {state} ({look})",
                        marker=dict(color="white", pattern_shape=shape, line=dict(color="#666", width=1)))
    best = d[d["best"]]
    if not best.empty:
        b = best.iloc[0]
        fig.add_annotation(x=b["rank"], y=b["val_acc"], text=f"★ best ({b['label']})", showarrow=True, arrowhead=2,
                           ay=-28)
    ticks = len(d) <= 60
    fig.update_layout(barmode="overlay", bargap=0.15, height=380, margin=dict(l=40, r=20, t=30, b=40),
                      xaxis=dict(title="configuration (trial), best first", range=[-0.6, len(d) - 0.4],
                                 tickvals=d["rank"].tolist() if ticks else [], ticktext=d["label"].tolist() if ticks
                                 else [], showticklabels=ticks, zeroline=False),
                      yaxis=dict(title="val acc (last epoch)", range=[0, min(1.0, d["val_acc"].max() * 1.08 + 0.02)]),
                      legend=dict(orientation="h", y=1.12))
    return fig


# ------------------------------------------------------------------ heatmap over two parameters

def _axis(s: pd.Series) -> tuple[pd.Series, list[str]]:
    """Labels per row and their order: one per value, or HEAT_BINS bins of a continuous parameter."""
    if is_categorical(s):
        vals = ordered_values(s)
        return s.map(lambda v: fmt(v)), [fmt(v) for v in vals]
    v = pd.to_numeric(s, errors="coerce")
    log = _log_scale(v)
    x = np.log10(v) if log else v
    cats = pd.cut(x, HEAT_BINS)
    def label(iv):
        lo, hi = (10 ** iv.left, 10 ** iv.right) if log else (iv.left, iv.right)
        return f"{fmt(float(lo))}–{fmt(float(hi))}"
    labels = [label(iv) for iv in cats.cat.categories]
    return cats.map(lambda iv: label(iv) if isinstance(iv, pd.Interval) else None).astype(object), labels


def heatmap_figure(df: pd.DataFrame, x: str, y: str) -> go.Figure:
    """The best validation accuracy of the finished trials in each cell of two parameters."""
    d = df[(df["state"] == "complete") & df["val_acc"].notna()]
    if d.empty:
        return _empty("No finished trial yet.")
    xs, xorder = _axis(d[x])
    ys, yorder = _axis(d[y])
    g = pd.DataFrame({"x": xs.values, "y": ys.values, "acc": d["val_acc"].values}).groupby(["y", "x"])["acc"]
    best, n = g.max().unstack(), g.size().unstack()
    best = best.reindex(index=yorder, columns=xorder)
    n = n.reindex(index=yorder, columns=xorder).fillna(0).astype(int)
    fig = go.Figure(go.Heatmap(z=best.values, x=xorder, y=yorder, colorscale="Viridis", customdata=n.values,
                               texttemplate="%{z:.3f}", colorbar=dict(title="best val acc"), hoverongaps=False,
                               hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>best val acc %{{z:.3f}}"
                                             "<br>%{customdata} finished trial(s)<extra></extra>"))
    fig.update_layout(height=max(260, 60 * len(yorder) + 120), margin=dict(l=40, r=20, t=30, b=40),
                      xaxis=dict(title=x, type="category"), yaxis=dict(title=y, type="category"))
    return fig


# ------------------------------------------------------------------ parallel coordinates

def parallel_figure(df: pd.DataFrame, params: list[str]) -> go.Figure:
    """Every trial with a validation accuracy as one line over its parameters, its state and its
    accuracy; text and few-valued parameters are ticks, wide numeric ranges log10."""
    d = df[df["val_acc"].notna()]
    if d.empty:
        return _empty("No trial has a validation accuracy yet.")
    dims = []
    for p in [*params, "state"]:
        s = d[p]
        if is_categorical(s):
            # one tick per shown label: values that print alike (0.001 and 0.0010001, True and 1) share it
            labels = list(dict.fromkeys([fmt(v) for v in ordered_values(s)] + [fmt(v) for v in s.dropna()]))
            idx = {t: i for i, t in enumerate(labels)}
            dims.append(dict(label=p, values=[idx.get(fmt(v), -1) for v in s], tickvals=list(range(len(labels))),
                             ticktext=labels, range=[-0.3, len(labels) - 0.7] if len(labels) > 1 else [-1, 1]))
        else:
            v = pd.to_numeric(s, errors="coerce")
            log = _log_scale(v)
            dims.append(dict(label=f"log10 {p}" if log else p, values=np.log10(v) if log else v))
    dims.append(dict(label="val acc", values=d["val_acc"], range=[0, 1]))
    fig = go.Figure(go.Parcoords(dimensions=dims, line=dict(color=d["val_acc"], colorscale="Viridis", cmin=0, cmax=1,
                                                            showscale=True, colorbar=dict(title="val acc"))))
    fig.update_layout(height=380, margin=dict(l=60, r=40, t=50, b=30))
    return fig


# ------------------------------------------------------------------ curves

def curves_figure(info: dict) -> go.Figure:
    """Every trial's validation accuracy per epoch, overlaid: complete solid, pruned dashed, failed
    dotted grey, running thin; the best thick. One trace per kind (fast at hundreds of trials)."""
    best = (info.get("best") or {}).get("number")
    style = {"complete": dict(color="#1f77b4", width=1.5),
             "pruned": dict(color="#ff7f0e", width=1.5, dash="dash"),
             "failed": dict(color=FAILED_GREY, width=1.5, dash="dot"),
             "running": dict(color="#2ca02c", width=1.5, dash="dashdot")}
    groups: dict[str, list] = {}
    for c in info["configs"]:
        if not c["curve"]:
            continue
        key = "best" if c["number"] == best else c["state"]
        groups.setdefault(key, []).append(c)
    if not groups:
        return _empty("No trial has finished an epoch yet.")
    many = len(info["configs"]) > LEGEND_CURVES
    fig = go.Figure()
    for key in ("complete", "pruned", "failed", "running", "waiting", "best"):
        cs = groups.get(key)
        if not cs:
            continue
        xs, ys, text = [], [], []
        for c in cs:
            ep = sorted(c["curve"])
            xs += ep + [None]
            ys += [c["curve"][e] for e in ep] + [None]
            text += [f"#{c['number']}"] * len(ep) + [None]
        line = dict(color="#d62728", width=4) if key == "best" else style.get(key, dict(width=1))
        name = f"★ best (#{best})" if key == "best" else f"{STATE_ICON.get(key, '')} {key} ({len(cs)})"
        fig.add_scatter(x=xs, y=ys, text=text, mode="lines+markers" if not many or key == "best" else "lines",
                        line=line, name=name, opacity=1.0 if key == "best" else 0.55 if many else 0.8,
                        hovertemplate="%{text} · epoch %{x}: %{y:.3f}<extra></extra>", connectgaps=False)
    fig.update_layout(height=360, margin=dict(l=40, r=20, t=30, b=40), xaxis=dict(title="epoch", dtick=1),
                      yaxis=dict(title="validation accuracy"), legend=dict(orientation="h", y=1.12))
    return fig


# ------------------------------------------------------------------ importance

def importance_figure(imp: dict[str, float]) -> go.Figure:
    items = sorted(imp.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                           text=[f"{v:.2f}" for _, v in items], textposition="auto",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>", marker_color="#636efa"))
    fig.update_layout(height=max(180, 50 * len(items) + 80), margin=dict(l=40, r=20, t=30, b=40),
                      xaxis=dict(title="importance (fANOVA, sums to 1)", range=[0, 1]))
    return fig


# ------------------------------------------------------------------ Optuna's own plots (as optuna-dashboard draws them)

OBJECTIVE = "val acc (last epoch)"      # what the study's objective value is


def optuna_figures(study, x: str | None = None, y: str | None = None) -> dict[str, go.Figure]:
    """optuna.visualization's optimization history (each finished trial's objective and the best so
    far), slice plots (the objective against each parameter) and, given two parameters, their
    contour; sized for the page. Plots with nothing to draw yet come back empty, as Optuna draws them."""
    import optuna.visualization as ov
    figs = {"history": ov.plot_optimization_history(study, target_name=OBJECTIVE),
            "slice": ov.plot_slice(study, target_name=OBJECTIVE)}
    if x and y:
        figs["contour"] = ov.plot_contour(study, params=[x, y], target_name=OBJECTIVE)
    for fig in figs.values():
        fig.update_layout(height=360, margin=dict(l=40, r=20, t=50, b=40))
    return figs


# ------------------------------------------------------------------ the poster's table

def table_frame(rows: list[dict]) -> pd.DataFrame:
    """reproduce.table() rows flattened: the poster's train/val/holdout beside this run's."""
    out = []
    for r in rows:
        p, t = r["poster"], r["this"]
        gap = None if p["holdout"] is None or t["holdout"] is None else t["holdout"] - p["holdout"]
        out.append({"model": r["model"], "classes": r["classes"],
                    "trained": r["trained"] + (" (stand-in)" if r["stand_in"] else ""),
                    "state": f"{STATE_ICON.get(r['state'], '')} {r['state']}",
                    "poster_train": p["train"], "poster_val": p["val"], "poster_holdout": p["holdout"],
                    "train": t["train"], "val": t["val"], "holdout": t["holdout"], "holdout_diff": gap,
                    "run_id": r["run_id"]})
    return pd.DataFrame(out)


def table_csv(rows: list[dict]) -> str:
    return table_frame(rows).assign(state=[r["state"] for r in rows]).to_csv(index=False)

