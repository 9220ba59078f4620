"""Runs: every run in one table; the selected run's live curves and progress, its final
metrics, and the controls to cancel, resume or delete it. Reads the run store only; the
workers write it. Live parts poll inside st.fragment(run_every=...) only while a run is active."""
import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data.splits import thin_holdout
from core.errors import UserError
from core.runs import jobs, provenance
from core.runs.store import ACTIVE, FINAL, check_tag
from dashboard import charts, nav
from dashboard.common import (PARENT, STATUS_ICON, classes_count, classes_text, home_key, loss_controls, run_label,
                              run_names, runs_frame, store, train_again)
from dashboard.export_panel import export_panel

# ------------------------------------------------------------------ session keys
st.session_state.setdefault("runs_selected", None)   # run id shown below the table (survives page switches)
st.session_state.setdefault("runs_seen", [])          # run ids seen before: a run launched here gets selected
st.session_state.setdefault("runs_flash", None)       # (kind, message) left by a button callback
st.session_state.setdefault("runs_again_check", None) # {"run", "found"}: what differs now from the run to train again

POLL_S = 2            # live refresh interval of the selected run, seconds
LOG_LINES = 40        # log tail shown for a failed run
RESUMABLE = tuple(s for s in FINAL if s not in ("done", "pruned"))   # stopped before their last epoch


# ------------------------------------------------------------------ formatting

def fmt_secs(s) -> str:
    if s is None or pd.isna(s):
        return "—"
    s = int(round(float(s)))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def fmt_acc(v) -> str:
    return "—" if v is None or pd.isna(v) else f"{v:.3f}"


def flash() -> None:
    msg, st.session_state["runs_flash"] = st.session_state["runs_flash"], None
    if msg:
        getattr(st, msg[0])(msg[1])


# ------------------------------------------------------------------ data

def table() -> pd.DataFrame:
    """runs_frame plus the validation accuracy of the last epoch (charts.VAL_ACC: the final evaluation's
    where the run has one, else the last finished epoch's) and a duration for live runs too."""
    df = runs_frame()
    if df.empty:
        return df
    last = store().last_val_accs()
    df["val_last"] = [v if v is not None and not pd.isna(v) else last.get(r)
                      for r, v in zip(df["run_id"], df["val_acc"])]
    df["classes_n"] = [classes_count(r) for _, r in df.iterrows()]
    live = [time.time() - t if st_ in ("starting", "running") and t else None
            for st_, t in zip(df["status"], df["started"])]
    df["duration"] = [fmt_secs(s if s is not None and not pd.isna(s) else l)
                      for s, l in zip(df["seconds"], live)]
    df["status_label"] = [f"{STATUS_ICON.get(s, '')} {s}" for s in df["status"]]
    return df


@st.cache_data(show_spinner=False, max_entries=16)
def curves(run_id: str, stamp: tuple, home: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Epoch and step rows of a run; `stamp` (row counts) changes whenever new rows arrive."""
    return store().epochs(run_id), store().steps(run_id)


def curve_stamp(run_id: str) -> tuple:
    """Changes when rows are added or rewritten (a resumed run replaces rows in place)."""
    return store().run(run_id).curve_stamp()


# ------------------------------------------------------------------ table and picker

def runs_table(any_active: bool) -> None:
    """What matters first (status, name, data set, model, accuracy, duration); every setting in
    the expander below; blanks as "—"."""
    df = table()
    if df.empty or any_active and not df["status"].isin(ACTIVE).any():
        st.rerun()  # the last active run just ended: refresh everything once, then stop polling
    df = table_filter(df)
    if grouped_table(df):
        return
    main = df.assign(name=df["name"].replace("", "—"), group=df["group"].replace("", "—"),
                     val_last=df["val_last"].map(fmt_acc), holdout_acc=df["holdout_acc"].map(fmt_acc),
                     classes=[str(int(n)) if n is not None and not pd.isna(n) else "—" for n in df["classes_n"]],
                     tags=[", ".join(t) for t in df["tags"]])
    cols = ["status_label", "name", "dataset", "model", "classes", "val_last", "holdout_acc", "duration", "tags", "group",
            "run_id"]
    cols = [c for c in cols if c not in ("tags", "group") or (main[c] != "—").any() and (main[c] != "").any()]
    # (tags and seed groups only once a run has one: the table fits 1,400 px without scrolling)
    st.dataframe(main[cols], hide_index=True, width="stretch", column_config={
        "status_label": "Status", "name": "Name", "dataset": "Data set", "model": "Model",
        "classes": st.column_config.TextColumn("Classes", help="How many classes the run trains on (the run's "
                                               "title says “all” where it took every class of its data set)."),
        "val_last": st.column_config.TextColumn(charts.VAL_ACC, help=charts.VAL_ACC_HELP),
        "holdout_acc": st.column_config.TextColumn("Holdout acc", help="The final model on the holdout split."),
        "duration": "Duration", "tags": "Tags", "run_id": "Run",
        "group": st.column_config.TextColumn("Group", help="The seed group (train --seeds): the id of its first run; "
                                             "its runs share one split and differ only in their seed.")})
    with st.expander("Every setting of every run"):
        detail = df.assign(augment=df["augment"], lr=df["lr"].map(lambda v: "—" if v is None or pd.isna(v) else f"{v:g}"))
        cols = ["run_id", "name", "epochs", "lr", "batch", "optimizer", "image_size", "augment", "freeze",
                "train_acc", "val_acc", "holdout_top5", "holdout_gap", "data"]
        for c in ("train_acc", "val_acc", "holdout_top5", "holdout_gap"):
            detail[c] = detail[c].map(fmt_acc)
        st.dataframe(detail[cols].fillna("—"), hide_index=True, width="stretch", column_config={
            "run_id": "Run", "name": "Name", "epochs": "Epochs", "lr": "LR", "batch": "Batch",
            "optimizer": "Optimizer", "image_size": "Image size", "augment": "Augment",
            "freeze": st.column_config.CheckboxColumn("Frozen"), "train_acc": "Train acc",
            "val_acc": st.column_config.TextColumn(charts.VAL_ACC, help=charts.VAL_ACC_HELP),
            "holdout_top5": "Holdout top-5", "holdout_gap": "Holdout GAP", "data": "Data folder"})


def table_filter(df: pd.DataFrame) -> pd.DataFrame:
    """A search box (name, run id, model, data set) and a status filter over the runs table, kept
    for the session; says how many runs they leave. The run picker below still offers every run."""
    c1, c2 = st.columns([2, 1])
    query = c1.text_input("Search runs", key="runs_search", persist_state="session",
                          placeholder="name, run id, model or data set",
                          help="Shows the runs whose name, run id, model or data set contains every word typed.")
    statuses = c2.multiselect("Status", list(ACTIVE) + list(FINAL), key="runs_status", persist_state="session",
                              format_func=lambda s: f"{STATUS_ICON.get(s, '')} {s}", placeholder="every status")
    shown = charts.filter_runs(df, query, statuses)
    shown = tag_filter(shown, sorted({t for ts in df["tags"] for t in ts}))
    st.caption(f"{len(shown)} of {len(df)} runs shown")
    return shown


# ------------------------------------------------------------------ tags and groups (issue 21: as in W&B)

GROUPS = {"": "no grouping", "dataset": "data set", "sweep": "sweep", "model": "model", "tag": "tag",
          "status": "status"}


def tag_filter(df: pd.DataFrame, known: list[str]) -> pd.DataFrame:
    """Runs with any of the picked tags (all runs when none is picked), and the "group by" choice."""
    c1, c2 = st.columns([2, 1])
    picked = c1.multiselect("Tags", known, key="runs_tags_filter", persist_state="session",
                            placeholder="every tag" if known else "no run has a tag yet",
                            help="Shows the runs that carry any of these tags (tag a run below, or "
                                 "`python -m core runs tag RUN TAG`).")
    c2.selectbox("Group by", list(GROUPS), format_func=GROUPS.get, key="runs_group", persist_state="session",
                 help="One row per group: how many runs, and the best validation accuracy among them.")
    picked = [t for t in picked if t in known]
    return df[[bool(set(ts) & set(picked)) for ts in df["tags"]]] if picked else df


def grouped_table(df: pd.DataFrame) -> bool:
    """The runs table grouped by st.session_state["runs_group"]: runs per group and their best
    validation accuracy (charts.VAL_ACC); False when no grouping is chosen."""
    by = st.session_state.get("runs_group") or ""
    if by not in GROUPS or not by:
        return False
    d = df.assign(tag=[list(t) or ["—"] for t in df["tags"]]).explode("tag") if by == "tag" else df
    d = d.assign(**{by: d[by].fillna("—").replace("", "—")})
    g = d.groupby(by, sort=False).agg(runs=("run_id", "size"), best_val=("val_last", "max"))
    g = g.sort_values(["best_val", "runs"], ascending=False, na_position="last").reset_index()
    st.dataframe(g, hide_index=True, width="stretch", column_config={
        by: GROUPS[by].capitalize(), "runs": st.column_config.NumberColumn("Runs", format="%d"),
        "best_val": st.column_config.NumberColumn(f"Best {charts.VAL_ACC.lower()}", format="%.3f",
                                                  help=charts.VAL_ACC_HELP)})
    st.caption("A run with several tags counts in each of its tags' rows." if by == "tag" else
               f"Runs grouped by {GROUPS[by]}; pick “no grouping” to list them one by one.")
    return True


def tags_field(run: dict, known: list[str]) -> None:
    """The selected run's tags: pick known ones or type new ones; saved at once (index and run.json)."""
    run_id = run["run_id"]
    st.multiselect("Tags of this run", sorted(set(known) | set(run["tags"])), default=run["tags"],
                   key=f"runs_tags_{run_id}", accept_new_options=True, on_change=_save_tags, args=(run_id,),
                   placeholder="type a tag and press Enter", max_selections=20)


def _save_tags(run_id: str) -> None:
    try:
        tags = list(dict.fromkeys(check_tag(t) for t in st.session_state[f"runs_tags_{run_id}"]))
    except UserError as e:
        st.session_state["runs_flash"] = ("error", str(e))
        return
    store().set(run_id, tags=tags)
    st.session_state["runs_flash"] = ("success", "Saved the run's tags: " + (", ".join(tags) or "none") + ".")


def pick_run(df: pd.DataFrame) -> str:
    """Select box over runs (newest first). The selection changes only when the user changes it: by
    the picker, a link or bookmark (?run=), or launching a run on the Train page (that run is shown
    once). Runs queued by others (a sweep's next trial) never take it. Without a selection: the
    newest active run, else the newest run."""
    ids = df["run_id"].tolist()
    active = df.loc[df["status"].isin(ACTIVE), "run_id"].tolist()
    launched = st.session_state.get("train_last_run")
    linked = st.query_params.get("run")        # a bookmark or a reload keeps its run
    if linked in ids and linked != st.session_state.get("runs_linked"):
        st.session_state["runs_selected"] = st.session_state["runs_linked"] = linked
    elif launched in ids and launched not in st.session_state["runs_seen"]:
        st.session_state["runs_selected"] = launched
    elif st.session_state["runs_selected"] not in ids:
        st.session_state["runs_selected"] = (active or ids)[0]
    st.session_state["runs_seen"] = ids
    st.session_state["runs_pick"] = st.session_state["runs_selected"]  # widget state is dropped on page switch
    labels = {r["run_id"]: run_label(r) for _, r in df.iterrows()}
    picked = st.selectbox("Run", ids, format_func=labels.get, key="runs_pick", on_change=_keep_pick)
    st.query_params["run"] = st.session_state["runs_linked"] = picked
    return picked


def _keep_pick() -> None:
    st.session_state["runs_selected"] = st.session_state["runs_pick"]


# ------------------------------------------------------------------ live view

def live_view(run_id: str, was_active: bool, runs: pd.DataFrame) -> None:
    jobs.reap(store())  # a worker that died mid-run shows as interrupted
    run = store().get(run_id)
    if run is None or (was_active and run["status"] not in ACTIVE):
        st.rerun()  # finished (or deleted) while polling: one full rerun shows the final state
    status_line(run)
    if run["status"] in ACTIVE:
        progress_bar(run)
    plot_curves(run_id, runs)
    resource_line(run_id)


def resource_line(run_id: str) -> None:
    """What the run used, from its epoch rows (core.train.engine.resource_use): CPU time, cores
    kept busy, peak memory and, on CUDA, peak GPU memory (rank 0's process for a several-process run)."""
    ep, _ = curves(run_id, curve_stamp(run_id), home_key())
    if ep.empty or "cpu_s" not in ep or ep["cpu_s"].isna().all():
        return
    cpu, secs = ep["cpu_s"].sum(), ep["seconds"].sum()
    parts = [f"CPU {fmt_secs(cpu)}" + (f" ({cpu / secs:.1f} cores busy)" if secs else "")]
    if ep["rss_mb"].notna().any():
        parts.append(f"peak memory {ep['rss_mb'].max():,.0f} MiB")
    if ep["gpu_mb"].notna().any():
        parts.append(f"peak GPU memory {ep['gpu_mb'].max():,.0f} MiB")
    st.markdown("**Resources:** " + " · ".join(parts),
                help="The training process over its epochs: CPU seconds (and how many cores that kept busy), "
                     "its peak resident memory and PyTorch's peak CUDA memory.")


def status_line(run: dict) -> None:
    icon = STATUS_ICON.get(run["status"], "")
    c = run["config"]
    nproc = int(c.get("nproc") or 1)
    where = f"device {run.get('device') or '—'}" + (f" · {nproc} processes" if nproc > 1 else "")
    st.markdown(f"**Status:** {icon} {run['status']} · **{run['model']}** · {classes_text(run)} classes · "
                f"{c.get('epochs')} epochs · {c.get('recipe', 'poster')} recipe · lr {c.get('lr')} · "
                f"batch {c.get('batch_size')}{' per process' if nproc > 1 else ''} · "
                f"{c.get('optimizer')} · {c.get('image_size')} px · {where}")


def progress_bar(run: dict) -> None:
    p = run["progress"] or {}
    if run["status"] == "queued":
        ahead = store().run(run["run_id"]).queue_position()
        st.progress(0.0, text=f"Waiting in the queue for the {run['device']} device ({ahead} ahead)")
        return
    if run["status"] == "starting" or not p.get("steps_per_epoch"):
        last = store().events(run["run_id"])[-1:]
        st.progress(0.0, text="Starting the worker… " + (f"({last[0]['message']})" if last else ""))
        return
    done = (p["epoch"] - 1) * p["steps_per_epoch"] + p["step_in_epoch"]
    frac = min(done / max(p["epochs"] * p["steps_per_epoch"], 1), 1.0)
    phase, eta = p.get("phase") or f"epoch {p['epoch']}/{p['epochs']}", p.get("eta_s")   # core.runs.eta's
    st.progress(frac, text=f"{phase[:1].upper()}{phase[1:]} · {p.get('images_per_s', 0):.0f} images/s · "
                           f"ETA {fmt_secs(eta) if eta is not None else 'measuring…'}")


def line(fig, x, y, name, **kw) -> None:
    fig.add_trace(go.Scatter(x=x, y=y, name=name, mode=kw.pop("mode", "lines+markers"), **kw))


def epoch_figure(ep: pd.DataFrame, what: str, log: bool = False) -> go.Figure:
    """Train (solid blue) and val (dashed orange) per epoch; `log`: a log y axis (loss only)."""
    fig = go.Figure()
    line(fig, ep["epoch"], ep[f"train_{what}"], f"train {what}", line=dict(color=charts.TRAIN_COLOR, width=2.5))
    line(fig, ep["epoch"], ep[f"val_{what}"], f"val {what}", line=dict(color=charts.VAL_COLOR, width=2.5, dash="dash"),
         marker=dict(symbol="diamond"))
    title = "Accuracy per epoch" if what == "acc" else "Loss per epoch"
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=what, height=320,
                      yaxis_type="log" if log and what == "loss" else "linear",
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(dtick=1)
    return fig


def step_figure(steps: pd.DataFrame, weight: float = charts.SMOOTHING, log: bool = False) -> go.Figure:
    """Raw per-step training loss (faint grey) and its smoothed line (bold blue), as TensorBoard
    draws them: `weight` is the EMA weight (0 = no smoothing)."""
    return charts.step_curves_figure({"train": steps}, weight=weight, log=log)


def overlay_pick(run_id: str, runs: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The "Overlay runs" picker: which runs' curves share the charts (as in TensorBoard or W&B).
    It follows the selected run until the user changes it; then it keeps the user's runs (deleted
    ones dropped; none left: the selected run). `runs`: the page's runs frame (read once a rerun, not
    again at every poll). Returns the run ids, the selected run's first."""
    ids = runs["run_id"].tolist()
    mine = [r for r in st.session_state.get("runs_overlay_ids") or [] if r in ids]
    if not st.session_state.get("runs_overlay_own") or not mine:
        mine = [run_id]
        st.session_state["runs_overlay_own"] = False
    st.session_state["runs_overlay_ids"] = st.session_state["runs_overlay"] = mine  # survives page switches
    names = run_names(runs)
    picked = st.multiselect("Overlay runs", ids, key="runs_overlay", format_func=names.get, on_change=_keep_overlay,
                            placeholder="pick runs to draw on the same charts",
                            help="Draw the curves of several runs on one chart each, one colour per run.")
    picked = picked or [run_id]
    return sorted(picked, key=lambda r: r != run_id), names


def _keep_overlay() -> None:
    st.session_state["runs_overlay_ids"] = st.session_state["runs_overlay"]
    st.session_state["runs_overlay_own"] = True


def plot_curves(run_id: str, runs: pd.DataFrame) -> None:
    picked, names = overlay_pick(run_id, runs)
    ep, steps = curves(run_id, curve_stamp(run_id), home_key())
    if picked == [run_id] and ep.empty and steps.empty:
        st.caption("No metrics yet: curves appear after the first training steps.")
        return
    log, weight = loss_controls("runs")
    if picked != [run_id]:
        overlay_curves(run_id, picked, names, log, weight)
        return
    left, right = st.columns(2)
    if not ep.empty:
        left.plotly_chart(epoch_figure(ep, "acc"), key=f"runs_acc_{run_id}")
        right.plotly_chart(epoch_figure(ep, "loss", log=log), key=f"runs_loss_{run_id}")
    else:
        left.caption("Epoch curves appear when the first epoch ends.")
    low_left, low_right = st.columns([2, 1])
    if not steps.empty:
        low_left.plotly_chart(step_figure(steps, weight, log), key=f"runs_steps_{run_id}")
    if not ep.empty:
        low_right.plotly_chart(charts.overlay_figure({names[run_id]: ep}, "lr"), key=f"runs_lr_{run_id}")


def overlay_curves(run_id: str, picked: list[str], names: dict, log: bool, weight: float) -> None:
    """Validation accuracy, loss, learning rate and per-step loss of every picked run, one chart each."""
    rows = {r: curves(r, curve_stamp(r), home_key()) for r in picked}
    epochs = {names[r]: ep for r, (ep, _) in rows.items() if not ep.empty}
    steps = {names[r]: s for r, (_, s) in rows.items() if not s.empty}
    left, right = st.columns(2)
    if epochs:
        left.plotly_chart(charts.overlay_figure(epochs, "val_acc"), key=f"runs_acc_{run_id}")
        right.plotly_chart(charts.overlay_figure(epochs, "loss", log=log), key=f"runs_loss_{run_id}")
    else:
        left.caption("Epoch curves appear when the first epoch ends.")
    low_left, low_right = st.columns([2, 1])
    if steps:
        low_left.plotly_chart(charts.step_curves_figure(steps, weight=weight, log=log), key=f"runs_steps_{run_id}")
    if epochs:
        low_right.plotly_chart(charts.overlay_figure(epochs, "lr"), key=f"runs_lr_{run_id}")


# ------------------------------------------------------------------ final state and controls

def on_images(n) -> str:
    """' (on 4 images)': how many images a figure rests on ('' where the run did not record it)."""
    return f" (on {n:,} image{'s' if n != 1 else ''})" if n else ""


def final_metrics(run: dict) -> None:
    s = run["summary"] or {}
    evals = store().evals(run["run_id"])
    n = {split: (evals.get(split) or {}).get("n") for split in ("train", "val", "holdout")}
    cols = st.columns(5)
    for col, (label, key, split) in zip(cols, [("Train accuracy", "train_acc", "train"),
                                               ("Val accuracy", "val_acc", "val"),   # (of the last epoch: see caption)
                                               ("Holdout accuracy", "holdout_acc", "holdout"),
                                               ("Holdout top-5", "holdout_top5", "holdout"),
                                               ("Holdout GAP", "holdout_gap", "holdout")]):
        col.metric(label + on_images(n[split]), fmt_acc(s.get(key)))
    st.caption(f"Final evaluation of the last checkpoint · training time {fmt_secs(s.get('seconds'))}"
               + (f" · {s['images_per_s']:.0f} images/s" if s.get("images_per_s") else ""))
    holdout = evals.get("holdout") or {}
    if warning := thin_holdout(int(holdout.get("n") or 0), len(holdout.get("labels") or [])):
        st.warning(warning, icon="⚠️")
    if st.button("Confusion matrix, per-class accuracy and mistakes on the Evaluate page", icon="🎯",
                 type="tertiary", key=f"runs_evaluate_{run['run_id']}"):
        st.session_state["eval_run"] = run["run_id"]       # open Evaluate on this run, not the best one
        st.switch_page(nav.EVALUATE.page())


def failure(run: dict) -> None:
    st.error(run.get("error") or "The run failed without an error message.", icon="❌")
    r = store().run(run["run_id"])
    tail = r.log_tail(LOG_LINES)
    if tail is not None:
        st.caption(f"Last {len(tail)} lines of {r.log_file}")
        st.code("\n".join(tail) or "(empty log)", language="text")
    else:
        st.caption("This run has no log file.")


def has_checkpoint(run_id: str) -> bool:
    return store().run(run_id).has_checkpoint()


def on_cancel(run_id: str) -> None:
    what = jobs.cancel(store(), run_id)
    st.session_state["runs_flash"] = ("info", f"Cancelled {run_id} before it started." if what == "cancelled" else
                                      f"Cancel requested: {run_id} stops at its next step"
                                      + (" and keeps its last checkpoint." if store().run(run_id).has_checkpoint()
                                         else "; it has no checkpoint yet, so it cannot be resumed."))


def on_resume(run_id: str) -> None:
    try:
        jobs.resume(store(), run_id)
        st.session_state["runs_flash"] = ("success", f"{run_id} is queued to resume from its last checkpoint.")
    except Exception as e:  # noqa: BLE001 - one sentence, never a traceback
        st.session_state["runs_flash"] = ("error", str(e))


def on_delete(run_id: str) -> None:
    if not st.session_state.get(f"runs_confirm_{run_id}"):
        st.session_state["runs_flash"] = ("warning", "Tick “Yes, delete this run” first; nothing was deleted.")
        return
    try:
        store().delete(run_id)
    except Exception as e:  # noqa: BLE001 - e.g. "still running; cancel it before deleting"
        st.session_state["runs_flash"] = ("error", str(e))
        return
    st.session_state["runs_selected"] = None
    st.session_state["runs_flash"] = ("success", f"Deleted {run_id} and its folder.")


def controls(run: dict) -> None:
    run_id, status = run["run_id"], run["status"]
    c1, c2, c3 = st.columns([1, 1, 2])
    if status in ACTIVE:
        c1.button("⏹️ Cancel", key="runs_cancel", on_click=on_cancel, args=(run_id,),
                  help="Stop at the next step; the last checkpoint is kept so the run can be resumed.")
    elif status in RESUMABLE:
        if has_checkpoint(run_id):
            c1.button("▶️ Resume", key="runs_resume", on_click=on_resume, args=(run_id,),
                      help="Continue from the last checkpoint (end of the last finished epoch).")
        else:
            c1.caption("No checkpoint yet (it is written after each epoch), so this run cannot be resumed; "
                       "launch it again from the Train page.")
    with c3:
        st.checkbox("Yes, delete this run", key=f"runs_confirm_{run_id}")
    c2.button("🗑️ Delete", key="runs_delete", on_click=on_delete, args=(run_id,),
              help="Removes the run's metrics, checkpoints and folder. Tick the box to confirm.")


def on_rename(run_id: str) -> None:
    name = st.session_state[f"runs_name_{run_id}"].strip()[:120]
    notes = st.session_state[f"runs_notes_{run_id}"].strip()[:5000]
    store().set(run_id, name=name or None, notes=notes or None)
    st.session_state["runs_flash"] = ("success", "Saved the run's name and notes.")


def name_and_notes(run: dict) -> None:
    """A name and free notes, kept in the run store and in run.json (they survive a rebuild)."""
    run_id = run["run_id"]
    with st.form(f"runs_meta_{run_id}", border=False):
        c1, c2 = st.columns([1, 2])
        c1.text_input("Name", value=run.get("name") or "", key=f"runs_name_{run_id}", max_chars=120,
                      placeholder="e.g. baseline, lr sweep winner")
        c2.text_area("Notes", value=run.get("notes") or "", key=f"runs_notes_{run_id}", height=68,
                     placeholder="What was tried, what was seen")
        st.form_submit_button("Save name and notes", on_click=on_rename, args=(run_id,))


def details(run: dict, runs: pd.DataFrame) -> None:
    status = run["status"]
    if status == "interrupted":
        st.warning("The worker process stopped (killed, or the machine restarted) before the run finished. "
                   "**Resume** continues from its last checkpoint.", icon="⚠️")
    live = st.fragment(run_every=POLL_S if status in ACTIVE else None)(live_view)
    live(run["run_id"], status in ACTIVE, runs)
    if status == "done":
        final_metrics(run)
    elif status == "failed":
        failure(run)
    elif status == "pruned":
        why = [e["message"] for e in store().events(run["run_id"]) if e["kind"] == "pruned"]
        st.info((why[-1] if why else "Pruned by its sweep.") + " Its curves above are what it trained.", icon="✂️")
    controls(run)
    again(run)
    with st.expander("Name and notes", expanded=bool(run.get("notes"))):
        name_and_notes(run)
    tags_field(run, sorted({t for ts in runs["tags"] for t in ts}))
    if has_checkpoint(run["run_id"]):
        export_panel(run["run_id"], key="runs_export")
    with st.expander("Provenance"):
        provenance_panel(run["run_id"])
    with st.expander("Configuration"):
        st.json(run["config"])
    with st.expander("Events"):
        ev = pd.DataFrame(store().events(run["run_id"]))
        if ev.empty:
            st.caption("No events.")
        else:
            ev["t"] = pd.to_datetime(ev["t"], unit="s")
            st.dataframe(ev[["t", "kind", "message"]], hide_index=True, width="stretch",
                         column_config={"t": st.column_config.DatetimeColumn("Time", format="YYYY-MM-DD HH:mm:ss")})


def again(run: dict) -> None:
    """“Train again like this”: first says what differs now from the run's provenance (data set,
    packages, code: as `train --like` does), and then trains again only when asked once more."""
    run_id = run["run_id"]
    if st.button("🔁 Train again like this", key="runs_again",
                 help="Opens the Train page with this run's whole configuration filled in (data set included)."):
        found = provenance.like(store().run(run_id))[1]
        if not found:
            train_again(run["config"], parent=run_id)
        st.session_state["runs_again_check"] = {"run": run_id, "found": found}
    check = st.session_state["runs_again_check"]
    if not check or check["run"] != run_id:
        return
    for kind, sentence in check["found"]:
        (st.error if kind == "data" else st.warning)(sentence, icon="⚠️")
    if st.button("Train again anyway", key="runs_again_anyway",
                 help="Opens the Train page with this run's configuration, on the data set as it is now."):
        st.session_state["runs_again_check"] = None
        train_again(run["config"], parent=run_id)


def provenance_panel(run_id: str) -> None:
    """What the run was made from (core.runs.provenance): code, packages, hardware, data set."""
    rec = provenance.read(store().run(run_id))
    if not rec["recorded"]:
        st.caption("This run was made before runs recorded their provenance: its code, packages and hardware "
                   "are unknown.")
    code, data, hw = rec["code"], rec["data"], rec["hardware"]
    if isinstance(code, dict):
        dirty = code["dirty"]
        if isinstance(dirty, bool):
            dirty = f"yes (diff sha256 `{str(code['diff_sha256'])[:12]}`)" if dirty else "no"
        st.markdown(f"**Commit** `{code['commit']}` · **dirty** {dirty}")
    if isinstance(data, dict):
        files = data["files"] if not isinstance(data["files"], int) else f"{data['files']:,} images"
        split = f" · **split** `{data['split_sha256'][:12]}`" if data.get("split_sha256") else ""
        st.markdown(f"**Data** {data['name']} ({data['layout']}), {files} · **files sha256** "
                    f"`{str(data['files_sha256'])[:16]}`{split}")
    if isinstance(hw, dict):
        gpus = ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in hw["gpus"]) if isinstance(hw["gpus"], list) \
            else hw["gpus"]
        st.markdown(f"**Hardware** {hw['cpu']}, {hw['cores']} cores · **GPU** {gpus or 'none'} · "
                    f"**CUDA** {hw['cuda'] or 'none'}")
    if isinstance(rec["packages"], dict):
        st.markdown("**Packages** " + ", ".join(f"{k} {v or '—'}" for k, v in rec["packages"].items()))
    st.caption(f"`python -m core runs show {run_id} --json` prints the whole record.")


def parent_link(run: dict) -> None:
    """“Trained again from <parent>”, a link to the parent run, for a run made by “Train again”."""
    parent = (run["config"].get("extra") or {}).get(PARENT)
    if not parent:
        return
    prun = store().get(parent)
    if prun is None:
        st.caption(f"🔁 Trained again from {parent} (since deleted).")
        return
    st.page_link(nav.RUNS.page(), label=f"Trained again from {run_names([prun])[parent]}", icon="🔁",
                 query_params={"run": parent}, help=f"Open the run it was made from ({parent}).")


# ------------------------------------------------------------------ page

st.title("📈 Runs")
flash()
frame = runs_frame()
if frame.empty:
    st.info("No runs yet. Launch a training run on the **Train** page and follow it here live.", icon="ℹ️")
    st.page_link(nav.TRAIN.page(), label="Go to the Train page")
else:
    any_active = frame["status"].isin(ACTIVE).any()
    st.fragment(run_every=POLL_S * 2 if any_active else None)(runs_table)(bool(any_active))
    selected = pick_run(frame)
    run = store().get(selected)
    if run is None:
        st.rerun()
    st.subheader(run_label(run))
    parent_link(run)
    details(run, frame)
