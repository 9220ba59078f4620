"""Evaluate and Compare pages: the chart helpers behind them (exact, on hand-made matrices) and
both pages rendered through the whole app with AppTest, without runs and with two trained runs."""
import io
from pathlib import Path

import numpy as np
import pytest

from dashboard import charts

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
EVALUATE, COMPARE = "../pages/evaluate.py", "../pages/compare.py"   # relative to the app's folder


def _ev(labels, cm, names=None):
    """An eval dict as a run evaluated before issue 20 stored it (a dense confusion matrix), with
    its `cells` as the pages load them."""
    from core.train.metrics import Confusion
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    per_class = [None if s == 0 else float(cm[i, i] / s) for i, s in enumerate(support)]
    return {"n": int(cm.sum()), "acc": float(np.trace(cm) / cm.sum()), "labels": [str(l) for l in labels],
            "names": names or [f"class {l}" for l in labels], "per_class": per_class,
            "support": support.tolist(), "confusion": cm.tolist(), "cells": Confusion.from_dense(cm)}


def _stored(ev):
    """What a run evaluated before issue 20 has in its evals.json (no cells file)."""
    return {k: v for k, v in ev.items() if k != "cells"}


# ------------------------------------------------------------------ charts (pure)

def test_most_confused_ranks_by_off_diagonal_mass():
    cm = np.array([[9, 0, 0, 0],
                   [0, 5, 3, 0],
                   [0, 4, 2, 1],
                   [1, 0, 0, 7]])
    # off-diagonal mass (row + column): 0 -> 0+1, 1 -> 3+4, 2 -> 5+3, 3 -> 1+1
    assert charts.most_confused(cm, 2) == [2, 1]
    assert charts.most_confused(cm, 4) == [2, 1, 3, 0]


def test_reduce_confusion_keeps_mistakes_and_buckets_the_rest_without_its_diagonal():
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 20, size=(60, 60))
    names = [f"c{i}" for i in range(60)]
    keep = charts.most_confused(cm, 30)
    out, out_names = charts.reduce_confusion(cm, keep, names)
    assert out.shape == (31, 31) and out_names[-1] == charts.OTHER
    rest = np.setdiff1d(np.arange(60), keep)
    assert out.sum() == cm.sum() - np.trace(cm[np.ix_(rest, rest)])    # the rest's right answers left out
    assert out[-1, -1] == cm[np.ix_(rest, rest)].sum() - np.trace(cm[np.ix_(rest, rest)])
    assert out[0, 1] == cm[keep[0], keep[1]]
    assert out[0, -1] == cm[keep[0], rest].sum()
    np.testing.assert_array_equal(out.sum(axis=1)[:-1], cm[keep].sum(axis=1))   # rows keep their support
    np.testing.assert_array_equal(out[:-1, :-1], cm[np.ix_(keep, keep)])


def test_reduce_confusion_without_rest_has_no_other_bucket():
    cm = np.arange(9).reshape(3, 3)
    out, names = charts.reduce_confusion(cm, [2, 0, 1], ["a", "b", "c"])
    assert names == ["c", "a", "b"]
    np.testing.assert_array_equal(out, cm[np.ix_([2, 0, 1], [2, 0, 1])])


def test_row_normalize_rows_sum_to_one_and_empty_rows_stay_zero():
    cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    n = charts.row_normalize(cm)
    np.testing.assert_allclose(n.sum(axis=1), [1, 0, 1])
    np.testing.assert_allclose(n[0], [0.75, 0.25, 0])


def test_per_class_difference_on_shared_labels():
    a = _ev(["10", "20", "30", "40"], np.diag([4, 2, 1, 3]) + np.array([[0, 0, 0, 0], [0, 0, 2, 0],
                                                                         [0, 0, 0, 3], [0, 1, 0, 0]]))
    b = _ev(["30", "20", "50"], [[1, 1, 0], [0, 4, 0], [0, 0, 2]])   # other order, one class not in a
    assert charts.shared_labels([a["labels"], b["labels"]]) == ["20", "30"]
    assert charts.class_overlap([a["labels"], b["labels"]]) == {"shared": 2, "only": [2, 1]}
    df = charts.per_class_difference(a, b)
    got = dict(zip(df["label"], df["diff"]))
    # a: "20" 2/4, "30" 1/4 ; b: "20" 4/4, "30" 1/2
    assert got == pytest.approx({"20": 0.5 - 1.0, "30": 0.25 - 0.5})
    assert list(df["label"]) == ["30", "20"]   # largest difference first


def test_restrict_confusion_matches_labels_and_leaves_out_the_rests_right_answers():
    b = _ev(["30", "20", "50"], [[1, 1, 0], [0, 4, 0], [1, 0, 2]])
    cm, names = charts.restrict_confusion(b, ["20", "30"])
    np.testing.assert_array_equal(cm, [[4, 0, 0], [1, 1, 0], [0, 1, 0]])     # 50 → 50 (2 right) not counted
    assert names == ["class 20", "class 30", charts.OTHER] and cm.sum() == 7


def test_figures_build_for_many_classes_and_csv_round_trips():
    import pandas as pd
    cm = np.random.default_rng(1).integers(0, 5, size=(55, 55))
    ev = _ev([str(i) for i in range(55)], cm)
    fig = charts.confusion_figure(*charts.reduce_confusion(cm, charts.most_confused(cm, 30), ev["names"]), normalize=True)
    assert len(fig.layout.yaxis.ticktext) == 31 and fig.layout.height >= 500
    assert len(charts.per_class_figure(charts.per_class_frame(ev)).data[0].y) == 55
    back = pd.read_csv(io.BytesIO(charts.confusion_csv(ev)), dtype={"true_label": str, "predicted_label": str})
    dense = np.zeros_like(cm)
    dense[back["true_label"].astype(int), back["predicted_label"].astype(int)] = back["images"]
    np.testing.assert_array_equal(dense, cm)                     # every non-zero cell, by label
    assert (back["images"] > 0).all() and len(back) == np.count_nonzero(cm)


def test_tick_labels_drop_shared_leading_words_and_truncate():
    names = ["Synthetic: pyramid", "Synthetic: Eiffel-like lattice tower", charts.OTHER]
    assert charts.tick_labels(names) == ["pyramid", "Eiffel-like latti…", charts.OTHER]
    assert charts.tick_labels(["Big Ben", "Bigger"]) == ["Big Ben", "Bigger"]   # no shared word


GLDV2_LIKE = ["chhatrapati_shivaji_terminus", "chhatrapati_shivaji_maharaj_vastu_sangrahalaya",
              "chhatrapati_shivaji_maharaj_international_airport", "golden_gate_bridge"]


def test_short_labels_keep_colliding_cuts_apart():
    labels = charts.short_labels(GLDV2_LIKE, 18)
    assert [charts.truncate(n) for n in GLDV2_LIKE[:3]] == ["chhatrapati_shiva…"] * 3   # what collided before
    assert len(set(labels)) == 4 and all(len(l) <= 18 for l in labels)
    assert labels[3] == "golden_gate_bridge"                     # names that fit stay whole
    assert labels[0].startswith("chhatrap") and labels[0].endswith("terminus")
    assert charts.short_labels(["same", "same"], 18) == ["same#1", "same#2"]   # equal names are numbered
    assert charts.short_labels(["abcdefgh", "abcdefgz", "abc…"], 4) == ["ab…h", "ab…z", "abc…"]
    assert charts.short_labels(["abcdefgh", "abcdefgz", "ab…h"], 4) == ["a…#1", "ab…z", "ab…h"]


def test_short_labels_unique_and_bounded_for_any_names():
    from hypothesis import given, settings, strategies as hs

    @settings(max_examples=100, deadline=None)
    @given(names=hs.lists(hs.text(alphabet="ab_ …#1", max_size=30) | hs.text(max_size=30), unique=True, max_size=60),
           width=hs.integers(1, 30))
    def check(names, width):
        labels = charts.short_labels(names, width)
        assert len(labels) == len(names)
        assert len(set(labels)) == len(labels)                    # unique whenever the names are
        room = max(width, len(str(len(names))) + 2)               # a tiny width still fits "…#k"
        assert all(len(label) <= room for label in labels)
        assert all(label == n for label, n in zip(labels, names) if len(n) <= width)   # names that fit stay

    check()


def test_confusion_and_per_class_axes_stay_unique_with_colliding_names():
    names = GLDV2_LIKE + [f"landmark_{i}_{'x' * 20}" for i in range(40)]
    ev = _ev([str(i) for i in range(44)], np.eye(44, dtype=int) * 3 + 1, names=names)
    for fig in (charts.confusion_figure(np.asarray(ev["confusion"]), names),
                charts.per_class_figure(charts.per_class_frame(ev))):
        ticks = fig.layout.xaxis.ticktext
        assert len(set(ticks)) == 44 and all(len(t) <= charts.TICK_CHARS for t in ticks)
    hover = {row[0] for row in charts.per_class_figure(charts.per_class_frame(ev)).data[0].customdata}
    assert hover == set(names)                                    # the full names on hover


def test_grouped_and_curve_figures_have_one_trace_per_run():
    import pandas as pd
    evs = {k: _ev(["1", "2", "3"], np.eye(3, dtype=int) * (i + 1) + 1) for i, k in enumerate("abc")}
    fig = charts.per_class_grouped_figure(evs, ["3", "1"])
    assert len(fig.data) == 3 and all(len(t.y) == 2 for t in fig.data)
    ep = pd.DataFrame({"epoch": [1, 2], "val_acc": [0.5, 0.7], "train_loss": [1.2, 0.9], "val_loss": [1.3, 1.1]})
    fig = charts.curves_figure({"a": ep, "b": ep}, log=True)
    assert len(fig.data) == 6                                     # val acc; val loss beside it, and train loss
    val_loss = [t for t in fig.data if list(t.y) == [1.3, 1.1]]
    assert len(val_loss) == 2 and all(t.xaxis == "x2" and t.line.dash == "dash" for t in val_loss)
    assert fig.layout.yaxis2.type == "log" and fig.layout.yaxis.type != "log"


# ------------------------------------------------------------------ pages (AppTest)

def _page(path):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(path)   # before the first run: no need to render the default page first
    return at.run()


def _charts(at):
    return at.get("plotly_chart")


def _heatmap(at, i):
    """(z matrix, y tick labels) of the i-th plotly chart; plotly sends arrays base64-packed."""
    import base64
    import json
    spec = json.loads(_charts(at)[i].proto.spec)
    z = spec["data"][0]["z"]
    if isinstance(z, dict):
        shape = [int(v) for v in str(z["shape"]).split(",")]
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.asarray(z), spec["layout"]["yaxis"]["ticktext"]


def _errors(at):
    return [e.value for e in at.error]


@pytest.mark.parametrize("page", [EVALUATE, COMPARE])
def test_pages_without_runs_say_so(page):
    at = _page(page)
    assert not at.exception
    assert any("No finished runs" in i.value for i in at.info)
    (link,) = at.page_link                                 # like the other pages: a way to the Train page
    assert link.proto.label == "Go to the Train page" and link.proto.page == "train"


def test_evaluate_with_two_runs(use_trained_home):
    at = _page(EVALUATE)
    assert not at.exception, at.exception
    assert all("🧪 synthetic" in o for o in at.selectbox(key="eval_run").options)
    (table,) = [d.value for d in at.dataframe if "support" in d.value.columns]     # per-class table
    from core.runs.store import RunStore
    run_id = at.selectbox(key="eval_run").value
    assert len(table) == RunStore().get(run_id)["classes"]
    conf = RunStore().run(run_id).read_confusion("holdout")               # the cells file beside the predictions
    assert table.set_index("label")["correct"].sum() == int(conf.correct().sum())
    assert table["acc"].is_monotonic_increasing                                   # worst class first
    assert len(at.dataframe[0].value) == 2                 # the holdout table: one row per run
    keys = [c.key for c in _charts(at)]                    # per-class bars, confusion heatmap, reliability diagram
    assert keys == ["eval_per_class", "eval_confusion", "eval_reliability"]
    assert at.get("download_button")                       # the full matrix as CSV
    assert not _errors(at)
    at.toggle(key="eval_normalize").set_value(True)
    at.radio(key="eval_split").set_value("val").run()
    assert not at.exception and len(_charts(at)) == 3
    assert "n=" in at.metric[0].label


def test_shared_accuracy_counts_predictions_outside_the_shared_classes_as_wrong():
    ev = _ev(["a", "b", "c"], [[5, 1, 0], [2, 3, 1], [0, 0, 9]])
    assert charts.shared_accuracy(ev, ["b", "a"]) == (8 / 12, 12)
    assert charts.shared_accuracy(ev, ["z"]) == (None, 0)


def test_compare_two_runs_with_different_class_sets(use_trained_home):
    at = _page(COMPARE)
    assert not at.exception, at.exception
    assert len(at.multiselect(key="cmp_runs").value) == 2
    assert any("shared classes" in i.value for i in at.info)   # 4 vs 3 classes
    shared = [d.value for d in at.dataframe if "acc" in d.value.columns]
    assert len(shared) == 1 and len(shared[0]) == 2 and shared[0]["n"].nunique() == 1   # same images
    assert len(_charts(at)) == 4                           # epoch curves, step curves, difference, one confusion matrix
    assert at.selectbox(key="cmp_image").options           # holdout images of the first run
    at.selectbox(key="cmp_method").set_value("saliency")
    at.button(key="cmp_explain").click().run()
    assert not at.exception, at.exception
    assert not _errors(at)
    assert len(at.image) >= 3                              # the input, then one explanation per run
    assert any("saliency for" in c for im in at.image for c in im.captions)


def test_compare_upload_bad_file_is_one_sentence(use_trained_home):
    from PIL import Image
    at = _page(COMPARE)
    at.radio(key="cmp_source").set_value("upload").run()
    at.file_uploader(key="cmp_upload").upload("notes.png", b"%PDF-1.4 not an image", "image/png")
    at.run()
    assert not at.exception and len(_errors(at)) == 1 and "not an image" in _errors(at)[0]
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 60, 30)).save(buf, "PNG")
    at.file_uploader(key="cmp_upload").set_value(("red.png", buf.getvalue(), "image/png"))
    at.run()
    at.button(key="cmp_explain").click().run()
    assert not at.exception and not _errors(at)
    assert sum(1 for im in at.image for c in im.captions if "saliency for" in c) == 2


def test_evaluate_many_classes_shows_top_k_with_other_bucket(tmp_path):
    """A run with 60 classes (metrics written straight to the store, no training): the heatmap
    shows the K most-confused classes plus "(other)", and the page copes without prediction files."""
    from core.runs.store import RunStore
    from tests.conftest import tiny_config
    store = RunStore()
    run_id = store.create(tiny_config(tmp_path, classes=60), status="done")
    cm = np.random.default_rng(2).integers(0, 4, size=(60, 60)) + np.eye(60, dtype=int) * 20
    ev = _ev([str(100 + i) for i in range(60)], cm, names=[f"Landmark number {i}" for i in range(60)])
    for split in ("train", "val", "holdout"):
        store.log_eval(run_id, split, _stored(ev))
    store.set(run_id, summary={"holdout_acc": ev["acc"]}, finished=1.0)
    at = _page(EVALUATE)
    assert not at.exception, at.exception
    assert at.slider(key="eval_top_k").value == 30
    z, ticks = _heatmap(at, 1)
    keep = charts.most_confused(cm, 30)
    rest = np.setdiff1d(np.arange(60), keep)
    assert z.shape == (31, 31) and ticks[-1] == charts.OTHER
    assert z.sum() == cm.sum() - np.trace(cm[np.ix_(rest, rest)])   # (other) without its right answers
    assert ticks[0].isdigit()                             # the shared "Landmark number " is dropped on axes
    at.slider(key="eval_top_k").set_value(10).run()
    assert _heatmap(at, 1)[0].shape == (11, 11)


# ------------------------------------------------------------------ Compare: curves, confusion one at a time, A − B

def _spec(at, title_part: str, end: bool = False) -> dict:
    """The figure spec of the plotly chart whose title contains (or, `end`, ends with) `title_part`."""
    import json
    specs = [json.loads(c.proto.spec) for c in _charts(at)]
    titles = [str((s["layout"].get("title") or {}).get("text", "")) for s in specs]
    found = [s for s, t in zip(specs, titles) if (t.endswith(title_part) if end else title_part in t)]
    assert len(found) == 1, [(s["layout"].get("title") or {}).get("text") for s in specs]
    return found[0]


def _z(spec) -> np.ndarray:
    import base64
    z = spec["data"][0]["z"]
    if isinstance(z, dict):
        shape = [int(v) for v in str(z["shape"]).split(",")]
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.asarray(z, dtype=float)


def _y(trace) -> np.ndarray:
    import base64
    y = trace["y"]
    return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]) if isinstance(y, dict) else np.asarray(y, float)


def test_compare_confusion_one_run_at_a_time_and_the_difference_is_a_minus_b(use_trained_home):
    from core.runs.store import RunStore
    store = RunStore()
    at = _page(COMPARE)
    assert not at.exception, at.exception
    a, b = at.multiselect(key="cmp_runs").value
    evs = {r: {**store.evals(r)["val"], "cells": store.run(r).read_confusion("val")} for r in (a, b)}  # default split
    shared = charts.shared_labels([ev["labels"] for ev in evs.values()])
    cm = {r: charts.restrict_confusion(evs[r], shared)[0] for r in (a, b)}
    assert len(cm[a]) != len(cm[b])                               # 4 vs 3 classes: one has an "(other)" row

    shown = at.button_group(key="cmp_cm_run")
    assert shown.value == a
    np.testing.assert_array_equal(_z(_spec(at, a[-4:], end=True)), cm[a])   # one matrix, titled with its run
    shown.set_value(b).run()
    assert not at.exception, at.exception
    np.testing.assert_array_equal(_z(_spec(at, b[-4:], end=True)), cm[b])
    assert len(_charts(at)) == 4

    at.toggle(key="cmp_cm_diff").set_value(True).run()
    assert not at.exception, at.exception
    assert (at.selectbox(key="cmp_cm_a").value, at.selectbox(key="cmp_cm_b").value) == (a, b)
    spec = _spec(at, "confusion A − B")
    n = max(len(cm[a]), len(cm[b]))
    want = np.zeros((n, n))
    want[:len(cm[a]), :len(cm[a])] += cm[a]
    want[:len(cm[b]), :len(cm[b])] -= cm[b]
    np.testing.assert_array_equal(_z(spec), want)
    heat = spec["data"][0]
    assert heat["zmid"] == 0 and heat["zmax"] > 0 and heat["zmin"] == -heat["zmax"]   # diverging, centred on 0
    assert len(set(spec["layout"]["yaxis"]["ticktext"])) == n
    at.selectbox(key="cmp_cm_a").set_value(b)
    at.selectbox(key="cmp_cm_b").set_value(a).run()
    np.testing.assert_array_equal(_z(_spec(at, "confusion A − B")), -want)   # swapped: B − A
    at.selectbox(key="cmp_cm_b").set_value(b).run()
    assert any("two different runs" in i.value for i in at.info)


def test_compare_step_curves_overlay_runs_with_smoothing_and_log_scale(use_trained_home):
    from core.runs.store import RunStore
    store = RunStore()
    at = _page(COMPARE)
    runs = at.multiselect(key="cmp_runs").value
    steps = _spec(at, "per step")
    smoothed = [t for t in steps["data"] if t.get("showlegend") is not False]
    assert len(smoothed) == 2 and len(steps["data"]) == 4        # one bold line per run, its raw loss faint
    assert len({t["line"]["color"] for t in smoothed}) == 2
    w = at.slider(key="cmp_smoothing").value
    for run_id, t in zip(runs, smoothed):
        loss = store.steps(run_id)["loss"]
        np.testing.assert_allclose(_y(t), loss.ewm(alpha=1 - w).mean(), rtol=1e-9)
    at.slider(key="cmp_smoothing").set_value(0.3)
    at.toggle(key="cmp_log_loss").set_value(True).run()
    assert not at.exception, at.exception
    steps = _spec(at, "per step")
    smoothed = [t for t in steps["data"] if t.get("showlegend") is not False]
    np.testing.assert_allclose(_y(smoothed[0]), store.steps(runs[0])["loss"].ewm(alpha=0.7).mean(), rtol=1e-9)
    assert steps["layout"]["yaxis"]["type"] == "log"
    import json
    epochs = json.loads(_charts(at)[0].proto.spec)                # val accuracy beside the val and train loss
    assert epochs["layout"]["yaxis2"]["type"] == "log"
    val_loss = [t for t in epochs["data"] if t.get("xaxis") == "x2" and t["line"].get("dash") == "dash"]
    assert len(val_loss) == 2
    np.testing.assert_allclose(_y(val_loss[0]), store.epochs(runs[0])["val_loss"], rtol=1e-9)


def test_compare_with_one_finished_run_links_to_train(use_trained_home):
    from core.runs.store import RunStore
    _, (a, b) = use_trained_home
    RunStore().delete(b)
    at = _page(COMPARE)
    assert not at.exception, at.exception
    assert any("Only one run has finished" in i.value for i in at.info)
    assert [link.proto.label for link in at.page_link] == ["Go to the Train page"]


def test_evaluate_and_compare_axes_with_colliding_class_names(tmp_path):
    """44 GLDv2-like names, three starting "chhatrapati_shiva…": every class axis stays unique and
    short, hover keeps the full names (runs written straight to the store, no training)."""
    from core.runs.store import RunStore
    from tests.conftest import tiny_config
    store = RunStore()
    names = GLDV2_LIKE + [f"landmark_{i}_{'x' * 20}" for i in range(40)]
    for seed in (3, 4):
        run_id = store.create(tiny_config(tmp_path, classes=44), status="done")
        cm = np.random.default_rng(seed).integers(0, 3, size=(44, 44)) + np.eye(44, dtype=int) * 10
        ev = _ev([str(i) for i in range(44)], cm, names=names)
        for split in ("train", "val", "holdout"):
            store.log_eval(run_id, split, _stored(ev))
        store.set(run_id, summary={"holdout_acc": ev["acc"]}, finished=1.0)
    import json
    for page, n_charts in ((EVALUATE, 2), (COMPARE, 4)):
        at = _page(page)
        assert not at.exception, at.exception
        specs = [json.loads(c.proto.spec) for c in _charts(at)]
        assert len(specs) == n_charts
        class_axes = [s for s in specs if (s["layout"].get("xaxis") or {}).get("ticktext")]
        assert len(class_axes) == 2                               # per-class bars and the confusion matrix
        for s in class_axes:
            ticks = s["layout"]["xaxis"]["ticktext"]
            assert len(ticks) == 44 and len(set(ticks)) == 44
            assert all(len(t) <= charts.TICK_CHARS for t in ticks)
        hover = json.dumps([s["data"] for s in class_axes])
        assert all(n in hover for n in GLDV2_LIKE)               # full names on hover
