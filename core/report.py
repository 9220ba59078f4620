"""The poster regenerated from the user's runs: one self-contained HTML file (issue 24).

Sections, as on the poster: Fig. 1 the class distribution of the runs' data set(s), Fig. 2 the
sweep's validation accuracies (or, without a sweep among the runs, their validation curves, and the
report says so), the holdout table with the poster's numbers beside (and mean ± sd of seed groups),
Fig. 3 the confusion matrices, Fig. 4 per-class accuracy, Figs. 5–6 saliency and vanilla
backpropagation of chosen photos for each run, Fig. 7 class model images (those already made; the
missing ones marked, or made first), and each run's record (provenance.json, else its config).

Everything is inlined: charts are plotly figures over one copy of plotly.js taken from the installed
package (kaleido is not installed, so no static export), images are PNG data: URIs. The file opens
with no network and no server and prints (a print style sheet keeps each figure on one page).

This module sits beside explain/ and serve/: it never imports the run store. Callers pass run objects
(core.runs.store.Run or anything with the same reads), the poster's table and the sweeps' trials.
"""
from __future__ import annotations

import base64
import html
import json
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from core.errors import UserError
from core.files import atomic_write
from core.serve.card import group_of, provenance

MAX_CLASSES = 6              # Figs. 5–7: photos (one per class) and class model images per run
METHODS = ("saliency", "vanilla")   # Figs. 5 and 6
SHOW_PX = 160                # px, the side at which photos and maps are drawn in Figs. 5–7
CLASS_MODEL_STEPS = 150      # --class-models: gradient-ascent steps of a missing image (the page's default)
TICK = 28                    # characters of a class name on an axis

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} .note{background:#fff6d6;border-left:4px solid #e0b000;
padding:.5em 1em} .missing{width:%dpx;height:%dpx;border:2px dashed #bbb;color:#888;display:flex;
align-items:center;justify-content:center;font-size:12px;text-align:center} figure{margin:0 0 1em 0}
figcaption{font-size:13px;color:#555} .grid{display:flex;flex-wrap:wrap;gap:8px} .cell img{width:%dpx} .cell{font-size:12px;
width:%dpx} pre{background:#f7f7f7;padding:.5em;font-size:11px;white-space:pre-wrap}
@media print{body{margin:0;max-width:none} section{break-inside:avoid;page-break-inside:avoid}
h2{break-before:page} h2.first{break-before:auto} details{display:block} .noprint{display:none}}
""" % (SHOW_PX, SHOW_PX, SHOW_PX, SHOW_PX)


def build_report(runs: list, out, *, poster: dict | None = None, sweeps: dict | None = None, data: str | None = None,
                 photos: list | None = None, class_models: bool = False, progress=None) -> dict:
    """Write the report of `runs` to `out` (one HTML file). `poster`: (model, classes) -> the poster's
    (train, val, holdout) accuracy; `sweeps`: sweep name -> [{"run_id", "label", "val_acc"}] of its
    trials; `data`: the data set of Fig. 1 (default: the runs' own); `photos`: image files of Figs. 5–6;
    `class_models`: draw Fig. 7's missing images first. Returns path, bytes, seconds, data_sets, notes."""
    if not runs:
        raise UserError("Choose at least one run for the report.")
    t0 = time.time()
    step = _stepper(progress, 8)
    cfgs = {r.id: r.read_config() for r in runs}
    data_sets = list(dict.fromkeys(str(cfgs[r.id].get("data", "")) for r in runs))
    notes = []
    if len(data_sets) > 1:
        notes.append(f"These runs were trained on {len(data_sets)} different data sets ("
                     + "; ".join(f"{d}: {', '.join(r.id for r in runs if cfgs[r.id].get('data') == d)}" for d in data_sets)
                     + "); their numbers are not comparable with each other, and each figure names its run.")
    step("Fig. 1")
    parts = [_fig1(runs, [data] if data else data_sets)]
    step("Fig. 2")
    parts.append(_fig2(runs, sweeps or {}))
    parts.append(_holdout_table(runs, cfgs, poster or {}))
    step("Figs. 3–4")
    parts += [_fig3(runs), _fig4(runs)]
    step("Figs. 5–6")
    parts.append(_figs56(runs, photos))
    step("Fig. 7")
    parts.append(_fig7(runs, class_models))
    parts.append(_records(runs, cfgs))
    page = _page(runs, notes, parts)
    path = Path(out).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, page)
    except OSError as e:
        raise UserError(f"Cannot write the report {path} ({e.strerror or e}).") from None
    step("done")
    return {"path": str(path), "bytes": path.stat().st_size, "seconds": round(time.time() - t0, 2),
            "runs": [r.id for r in runs], "data_sets": data_sets, "notes": notes}


def _stepper(progress, total: int):
    done = [0]

    def step(stage: str) -> None:
        if progress is not None:
            progress(done=done[0], total=total, stage=stage)
        done[0] += 1
    return step


# ---------------------------------------------------------------- the page

def _page(runs, notes, parts) -> str:
    import plotly.offline
    title = f"Landmark recognition — report of {len(runs)} run{'s' if len(runs) != 1 else ''}"
    head = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script>{plotly.offline.get_plotlyjs()}</script></head><body>")
    intro = (f"<h1>{html.escape(title)}</h1><p>Made {time.strftime('%Y-%m-%d %H:%M')} by the landmark recognition "
             "workbench after the poster <i>Google Landmark Recognition Challenge</i> (Iordache &amp; Gogianu). Runs: "
             + ", ".join(f"<b>{html.escape(_label(r))}</b>" for r in runs) + ".</p>")
    warn = "".join(f"<p class='note' id='different-data'>{html.escape(n)}</p>" for n in notes)
    return head + intro + warn + "".join(parts) + "</body></html>"


def _section(key: str, title: str, body: str, first: bool = False) -> str:
    return (f"<section id='{key}'><h2{' class=first' if first else ''}>{html.escape(title)}</h2>{body}</section>")


def _figure(data=None) -> go.Figure:
    """A figure without a plotly template: applying one deep-copies it (a quarter second a figure)."""
    axis = dict(gridcolor="#e5e5e5", zerolinecolor="#ccc", automargin=True)
    return go.Figure(data, layout=dict(template="none", margin=dict(l=60, r=20, t=40, b=60), xaxis=axis, yaxis=axis,
                                       font=dict(size=11)))


def _fig_html(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _png(arr) -> bytes:
    from PIL import Image
    buf = BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _label(run) -> str:
    try:
        name = (run.get() or {}).get("name")
    except Exception:  # noqa: BLE001 - a bare run object without the index: its id names it
        name = None
    return f"{name} ({run.id})" if name else run.id


def _short(name, n: int = TICK) -> str:
    s = str(name)
    return s if len(s) <= n else s[:n - 1] + "…"


def _holdout(run) -> dict:
    return run.read_evals().get("holdout") or {}


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


# ---------------------------------------------------------------- Fig. 1: the class distribution

def _fig1(runs, data_sets) -> str:
    body = ""
    for d in data_sets:
        counts, whence = _class_counts(d, runs)
        if counts is None:
            body += f"<p class='note'>{html.escape(whence)}</p>"
            continue
        fig = _figure()
        if len(counts) <= 60:
            fig.add_bar(x=[_short(n) for n in counts.index], y=counts.to_numpy())
            fig.update_xaxes(title="class", type="category")
        else:   # a long tail: images per class against the class's rank, log-log (thinned to 2,000 points)
            keep = np.unique(np.geomspace(1, len(counts), 2000).astype(int)) - 1
            fig.add_scatter(x=keep + 1, y=counts.to_numpy()[keep], mode="lines")
            fig.update_xaxes(title="class rank", type="log")
            fig.update_yaxes(type="log")
        fig.update_yaxes(title="images")
        fig.update_layout(title=f"{_short(Path(d).name or d, 60)}: {len(counts):,} classes, {int(counts.sum()):,} images",
                          height=360)
        body += f"<figure>{_fig_html(fig)}<figcaption>{html.escape(whence)}</figcaption></figure>"
    return _section("fig1", "Fig. 1 — Class distribution", body, first=True)


def _class_counts(data: str, runs):
    """(images per class, most frequent first, or None; where they come from)."""
    from core.data.readers import label_counts
    try:
        counts, _ = label_counts(data)
        return counts, f"Images per class of the data set {data}, most frequent first."
    except (UserError, OSError, ValueError) as e:
        mine = [r for r in runs if str(r.read_config().get("data")) == str(data)]
        split = _split_counts(mine[0]) if mine else None
        reason = str(e).rstrip(".")
        if split is None:
            return None, f"The data set {data} cannot be read here ({reason}), and no run of it has a split to count."
        return split, f"The data set {data} cannot be read here ({reason}): the classes run {mine[0].id} used instead."


def _split_counts(run):
    from core.data.splits import load_manifest
    try:
        m = load_manifest(run.split_file)
    except (UserError, OSError, ValueError):
        return None
    names = run.class_names()
    counts = m["label"].astype(str).value_counts()
    counts.index = [names.get(l, l) for l in counts.index]
    return counts


# ---------------------------------------------------------------- Fig. 2: the sweep, or the curves

def _fig2(runs, sweeps: dict) -> str:
    if sweeps:
        body = ""
        for name, trials in sweeps.items():
            trials = [t for t in trials if t.get("val_acc") is not None]
            fig = _figure(go.Bar(x=[_short(t["label"], 40) for t in trials], y=[t["val_acc"] for t in trials],
                                   text=[f"{t['val_acc']:.3f}" for t in trials], textposition="outside"))
            fig.update_layout(title=f"Sweep {name}: best validation accuracy of each trial", height=380,
                              yaxis=dict(title="validation accuracy", range=[0, 1.05]), xaxis=dict(type="category"))
            body += f"<figure>{_fig_html(fig)}</figure>"
        return _section("fig2", "Fig. 2 — The sweep's validation accuracies", body)
    fig = _figure()
    for r in runs:
        rows = [e for e in r.read_epochs() if e.get("val_acc") is not None]
        fig.add_scatter(x=[e["epoch"] for e in rows], y=[e["val_acc"] for e in rows], mode="lines+markers",
                        name=_short(_label(r), 50))
    fig.update_layout(height=380, xaxis=dict(title="epoch", dtick=1), yaxis=dict(title="validation accuracy"),
                      legend=dict(orientation="h", y=-0.25))
    note = ("<p class='note' id='no-sweep'>None of these runs belongs to a sweep, so this figure shows the runs' "
            "validation curves instead of a sweep's validation accuracies.</p>")
    return _section("fig2", "Fig. 2 — Validation accuracy of the runs", note + _fig_html(fig))


# ---------------------------------------------------------------- the holdout table

def _accs(run) -> tuple:
    ev = run.read_evals()
    return tuple((ev.get(s) or {}).get("acc") for s in ("train", "val", "holdout")) + ((ev.get("holdout") or {}).get("n"),)


def _holdout_table(runs, cfgs, poster: dict) -> str:
    head = ("<tr><th class=l>run</th><th class=l>model</th><th>classes</th><th>train</th><th>val</th><th>holdout</th>"
            "<th>holdout images</th><th>poster train</th><th>poster val</th><th>poster holdout</th></tr>")
    rows, groups = [], {}
    for r in runs:
        c = cfgs[r.id]
        classes = r.class_count() if hasattr(r, "class_count") else c.get("classes")
        tr, va, ho, n = _accs(r)
        p = poster.get((c.get("model"), classes), (None, None, None))
        rows.append(f"<tr><td class=l>{html.escape(_label(r))}</td><td class=l>{html.escape(str(c.get('model')))}</td>"
                    f"<td>{classes}</td><td>{_pct(tr)}</td><td>{_pct(va)}</td><td>{_pct(ho)}</td><td>{n or '—'}</td>"
                    + "".join(f"<td>{_pct(v)}</td>" for v in p) + "</tr>")
        if group_of(c):
            groups.setdefault(group_of(c), []).append((tr, va, ho))
    for g, vals in groups.items():
        cells = "".join(f"<td>{_spread([v[i] for v in vals])}</td>" for i in range(3))
        rows.append(f"<tr><td class=l colspan=3>seed group {html.escape(g)}: mean ± sd (n = {len(vals)})</td>{cells}"
                    "<td colspan=4></td></tr>")
    note = ("<p>Accuracy of each run on its train, validation and holdout splits; the poster's numbers for the same "
            "model and class count beside (— where the poster has no such row).</p>")
    return _section("holdout", "Holdout table", note + f"<table>{head}{''.join(rows)}</table>")


def _spread(values) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return "—"
    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return f"{v.mean():.3f} ± {sd:.3f}" if len(v) > 1 else f"{v.mean():.3f}"


# ---------------------------------------------------------------- Figs. 3 and 4

def _fig3(runs) -> str:
    body = ""
    for r in runs:
        ev = _holdout(r)
        conf = r.read_confusion("holdout", ev) if ev else None
        if conf is None:
            body += f"<p>Run {html.escape(r.id)} has no holdout evaluation yet.</p>"
            continue
        n = len(ev.get("labels") or ev.get("support") or ())
        cm = np.zeros((n, n))
        np.add.at(cm, (conf.true, conf.pred), conf.count)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        names = [_short(x) for x in ev.get("names") or ev.get("labels")]
        fig = _figure(go.Heatmap(z=norm, x=names, y=names, colorscale="Blues", zmin=0, zmax=1,
                                   text=cm.astype(int), hovertemplate="true %{y}<br>predicted %{x}<br>%{text} images"))
        fig.update_layout(title=_short(_label(r), 80), height=min(300 + 14 * n, 1000),
                          xaxis=dict(title="predicted", type="category"),
                          yaxis=dict(title="true", type="category", autorange="reversed"))
        body += f"<figure>{_fig_html(fig)}</figure>"
    note = "<p>Holdout confusion matrices, each row normalised to the class's holdout images.</p>"
    return _section("fig3", "Fig. 3 — Confusion matrix", note + body)


def _fig4(runs) -> str:
    fig = _figure()
    for r in runs:
        ev = _holdout(r)
        if ev.get("per_class"):
            names = [_short(x) for x in ev.get("names") or ev.get("labels")]
            fig.add_bar(x=names, y=[np.nan if v is None else v for v in ev["per_class"]], name=_short(_label(r), 50))
    fig.update_layout(barmode="group", height=420, yaxis=dict(title="holdout accuracy", range=[0, 1.05]),
                      xaxis=dict(type="category"), legend=dict(orientation="h", y=-0.35))
    return _section("fig4", "Fig. 4 — Per-class accuracy", "<p>Accuracy of each class on the holdout split.</p>"
                    + _fig_html(fig))


# ---------------------------------------------------------------- Figs. 5–6: saliency and vanilla backprop

def default_photos(runs, k: int = MAX_CLASSES) -> list[str]:
    """The first correct holdout photo of each of the first `k` classes (of the first run that has
    holdout predictions)."""
    for r in runs:
        df = r.predictions("holdout") if hasattr(r, "predictions") else None
        if df is None or not len(df):
            continue
        right = df[df["target"] == df["pred"]]
        return [str(right.loc[right["target"] == t, "path"].iloc[0]) for t in sorted(right["target"].unique())[:k]]
    return []


def _figs56(runs, photos) -> str:
    from core.data.readers import open_image
    chosen = list(photos) if photos else default_photos(runs)
    images = []
    for p in chosen:
        try:
            with open_image(p) as im:
                images.append((Path(p).name, im.convert("RGB")))
        except (UserError, OSError, ValueError) as e:
            raise UserError(f"Cannot read the photo {p} for Figs. 5–6 ({e}); give image files to --photos.") from None
    if not images:
        body = "<p class='note'>No photo to explain: no run has a correctly classified holdout photo; give --photos.</p>"
        return _section("fig5", "Figs. 5–6 — Saliency and vanilla backpropagation", body)
    how = "the photos given" if photos else "the first correctly classified holdout photo of each of the first classes"
    body = f"<p>For {how}: each run's map of the class it predicts.</p>"
    for r in runs:
        body += _explained(r, images)
    fig6 = "<span id='fig6'></span>"
    return _section("fig5", "Figs. 5–6 — Saliency (Fig. 5) and vanilla backpropagation (Fig. 6)", fig6 + body)


def _explained(run, images) -> str:
    from core.data.readers import resize_square
    from core.explain.api import explain
    from core.explain.methods import get_method
    from core.explain.render import render
    from core.serve.predictor import load_predictor
    try:
        pred = load_predictor(run)
    except UserError as e:
        return f"<p class='note'>{html.escape(str(e))}</p>"
    layer = pred.model.submodule(pred.model.cam_layer)
    rows = ["<tr><th class=l>photo</th>" + "".join(f"<th class=l>{html.escape(get_method(m).label)}</th>" for m in METHODS)
            + "</tr>"]
    for name, im in images:
        x = pred.tensor(im)
        probs = pred.probs(x)[0]
        target = int(probs.argmax())
        shown = np.asarray(resize_square(im, SHOW_PX))
        cells = [_img(_png(render(m, shown, explain(pred.model, x, target, m, target_layer=layer)[0])), f"{m} {name}")
                 for m in METHODS]
        caption = f"{name}<br>predicted {html.escape(_short(pred.names[target], 40))} ({probs[target]:.2f})"
        rows.append(f"<tr><td class=l>{_img(_png(shown), name)}<br><small>{caption}</small></td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<h3>{html.escape(_label(run))}</h3><table>{''.join(rows)}</table>"


# ---------------------------------------------------------------- Fig. 7: class model images

def _fig7(runs, make: bool) -> str:
    body = ("<p>Class model images (Simonyan et al. 2014) of the first classes of each run: those already made"
            + (", the missing ones made first" if make else "; a missing one is marked (make it on the Class model "
               "page, or pass --class-models)") + ".</p>")
    for r in runs:
        cells = []
        for target, name, png in _class_models(r, make):
            pic = (_img(Path(png).read_bytes(), f"class model {name}") if png else
                   "<div class='missing'>missing</div>")
            cells.append(f"<div class='cell'>{pic}<br>{html.escape(_short(name, 40))}</div>")
        body += f"<h3>{html.escape(_label(r))}</h3><div class='grid'>{''.join(cells)}</div>"
    return _section("fig7", "Fig. 7 — Class model images", body)


def _class_models(run, make: bool) -> list[tuple]:
    """(target, name, newest PNG or None) for the run's first classes; `make`: draw the missing ones."""
    ev = _holdout(run)
    names = [str(n) for n in (ev.get("names") or list(run.class_names().values()))][:MAX_CLASSES]
    found = []
    for t, name in enumerate(names):
        files = sorted(Path(run.class_models_dir).glob(f"class_{t}_*_*.png"), key=lambda f: f.stat().st_mtime)
        found.append([t, name, str(files[-1]) if files else None])
    if make and any(f[2] is None for f in found) and run.has_checkpoint():
        from core.explain.files import class_model_png
        from core.serve.predictor import load_predictor
        pred = load_predictor(run)
        for f in found:
            if f[2] is None:
                f[2] = class_model_png(pred, f[0], Path(run.class_models_dir), steps=CLASS_MODEL_STEPS)["png"]
    return [tuple(f) for f in found]


# ---------------------------------------------------------------- the record of each run

def _records(runs, cfgs) -> str:
    body = ""
    for r in runs:
        prov = provenance(r)
        what = ("its provenance record" if prov is not None else
                "no provenance record (the run was made before runs kept one): its config")
        text = json.dumps(prov if prov is not None else cfgs[r.id], indent=1, default=str)
        body += (f"<details open><summary><b>{html.escape(_label(r))}</b>: {what}</summary>"
                 f"<pre>{html.escape(text)}</pre></details>")
    return _section("provenance", "The record of each run", body)

