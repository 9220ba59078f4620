"""The Results tab of the Sweeps page: pick a sweep, its status and controls (cancel, continue),
the best configuration (train it again with a holdout), the charts (core.runs.sweeps.info drawn by
dashboard.sweep_charts), the trials with links to their runs, and for the poster's table the
table itself. Reads the study through dashboard.sweep_study; live while trials run."""
from __future__ import annotations

import time
from dataclasses import replace

import streamlit as st

from core.errors import UserError
from core.runs import jobs, reproduce, sweeps
from core.train.config import DEFAULTS as CONFIG_DEFAULTS
from dashboard import charts, nav
from dashboard import sweep_charts as sc
from dashboard.common import run_status, store, to_url, trial_slots, url_pick, user_error
from dashboard.sweep_study import POLL_S, driver_job, importance, is_live, load_info, stamp, storage_key, sweep_list

PCT = sc.PCT


def link(page: nav.AppPage, label: str, icon: str | None = None, disabled: bool = False, help: str | None = None,
         **query) -> None:
    """A link to another page (with the page's icon unless one is given), its query from `query`."""
    st.page_link(page.page(), label=label, icon=icon, disabled=disabled, help=help,
                 query_params={k: v for k, v in query.items() if v} or None)


def flash() -> None:
    msg = st.session_state.pop("sweeps_flash", None)
    if msg:
        getattr(st, msg[0])(msg[1])



def params_text(params: dict) -> str:
    return ", ".join(f"{k}={sc.fmt(v)}" for k, v in params.items()) or "the base configuration"


# ------------------------------------------------------------------ picker, status, controls

def pick_sweep(names: list[dict]) -> str:
    ids = [n["name"] for n in names]
    by = {n["name"]: n for n in names}
    url_pick("sweeps_pick", "sweep", ids, False)
    kind = {"reproduce": "poster's table"}

    def label(n):
        d = by[n]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d["created"])) if d.get("created") else "?"
        return f"{n} · {kind.get(d['kind'], d['sampler'] or 'sweep')} · {d['planned'] or '?'} configurations · {when}"
    picked = st.selectbox("Sweep (newest first)", ids, format_func=label, key="sweeps_pick", persist_state="session")
    to_url("sweeps_pick", "sweep", picked)
    return picked


def status_line(info: dict, job: dict | None) -> None:
    c = info["counts"]
    running, queued = trial_slots(info["configs"], run_status)   # what runs vs what waits for a slot
    parts = [f"**{c['ended']}/{info['planned']}** ended", f"✅ {c['complete']} complete", f"✂️ {c['pruned']} pruned",
             f"❌ {c['failed']} failed", f"🏃 {running} running",
             f"⏳ {c['waiting'] + queued} waiting" + (f" ({queued} for a free slot)" if queued else "")]
    st.markdown(" · ".join(parts))
    driver = ("driver job " + job["status"] + (f" ({job['job_id']})" if job.get("job_id") else "")) if job \
        else "no driver job on this machine"
    state = "⏹️ cancelled" if info["cancelled"] else "🏁 finished" if info["finished"] else \
        "🏃 running" if is_live(info, job) else "⏸️ paused"
    st.caption(f"{state} · sampler **{info['sampler']}** · pruning {'on' if info['prune'] else 'off'} · "
               f"{driver} · storage `{info['storage']}`")
    if not info["finished"] and not info["cancelled"] and not (job and job["active"]):
        st.warning("No driver is working on this sweep: press **Continue** to queue its remaining trials"
                   + (" (its running trials go on)." if c["running"] else "."), icon="⏸️")
    if job and job.get("status") == "failed" and job.get("error"):
        st.error(f"The last driver job failed: {job['error']}", icon="🚫")


def controls(name: str, info: dict, job: dict | None) -> None:
    active = bool(job and job["active"])
    a, b, _ = st.columns([1, 1, 4])
    if a.button("⏹️ Cancel sweep", key="sweeps_cancel", disabled=info["finished"] and not active,
                help="No new trials; its queued and running trial runs are cancelled. Continue picks it up again."):
        try:
            sweeps.cancel_sweep(name, store())
            st.session_state["sweeps_flash"] = ("info", f"Sweep {name} cancelled: its running trials stop.")
        except UserError as e:
            st.session_state["sweeps_flash"] = ("error", str(e))
        st.rerun()
    if b.button("▶️ Continue", key="sweeps_continue", disabled=active or info["finished"],
                help="Start a driver for the remaining trials (after a cancel, a crash or an app restart)."):
        try:
            jobs.submit(store(), "sweep", {"name": name, "storage": None})
            st.session_state["sweeps_flash"] = ("success", f"Sweep {name} continues.")
        except UserError as e:
            st.session_state["sweeps_flash"] = ("error", str(e))
        st.rerun()


# ------------------------------------------------------------------ best, charts, table

def best_section(name: str, info: dict) -> None:
    best = info["best"]
    if best is None:
        st.caption("No trial has finished yet; the best configuration shows here once one has.")
        return
    figure = f"**{sweeps.describe(best)}** over its seeds" if best.get("group") else f"**{best['val_acc']:.3f}**"
    st.success(f"**Best: trial #{best['number']}** · {charts.VAL_ACC.lower()} {figure} · "
               f"{params_text(best['params'])}", icon="🏆")
    noise_note(info)
    a, b, c = st.columns([2, 1, 1])
    with b:
        link(nav.EVALUATE, "Open the best in Evaluate", run=best.get("run_id"), disabled=not best.get("run_id"))
    with c:
        link(nav.RUNS, "Its run on the Runs page", run=best.get("run_id"), disabled=not best.get("run_id"))
    if a.button("🔁 Train the best again with the holdout evaluation", key="sweeps_retrain", type="primary",
                help="Queues the best configuration as an ordinary run (with a holdout split) on the Train queue."):
        try:
            cfg = sweeps.trial_config(info["base"], best["params"])
            if cfg.holdout <= 0:
                cfg = replace(cfg, holdout=CONFIG_DEFAULTS["holdout"] or 0.01)
            cfg = replace(cfg, extra={**cfg.extra, "sweep": name, "trial": best["number"]})
            run_id = jobs.launch(cfg, store())
            store().set(run_id, name=f"{name} best (#{best['number']}) again")
            st.session_state["sweeps_retrained"] = (name, run_id)
        except UserError as e:
            user_error(e)
        except Exception as e:  # noqa: BLE001 - e.g. the store is not writable: say so, keep the page
            user_error(e)
    done = st.session_state.get("sweeps_retrained")
    if done and done[0] == name:
        st.info(f"Queued run **{done[1]}**: the best configuration trains again, then is evaluated on the holdout.",
                icon="🔁")
        link(nav.RUNS, "Follow it on the Runs page", run=done[1])


def noise_note(info: dict) -> None:
    """In a seed-group sweep: whether the best two trials differ by more than the seed noise."""
    noise = info.get("noise")
    if noise is None:
        return
    if noise["within"]:
        st.warning(f"{noise['sentence']} Do not read the ranking of these two as real: train more seeds.",
                   icon="🎲")
    else:
        st.info(noise["sentence"], icon="🎲")


def charts_section(name: str, info: dict) -> None:
    df, params = sc.frame(info)
    st.subheader("Validation accuracy per configuration")
    opts = [*params, "state"]
    if st.session_state.get("sweeps_color") not in opts:
        st.session_state["sweeps_color"] = opts[0]
    color = st.selectbox("Colour by", opts, key="sweeps_color")
    st.plotly_chart(sc.bars_figure(df, color), key="sweeps_bars")
    waiting = int((df["state"] == "waiting").sum())
    no_val = int(((df["state"] != "waiting") & df["val_acc"].isna()).sum())
    notes = ["Hatched: pruned (stopped early; hover for the epoch); grey crossed: failed; dotted: still running."]
    if waiting:
        notes.append(f"{waiting} configuration(s) wait to be trained.")
    if no_val:
        notes.append(f"{no_val} trial(s) have no validation accuracy yet (or failed before their first epoch).")
    st.caption(" ".join(notes))

    left, right = st.columns(2)
    with left:
        st.subheader("Two parameters at once")
        if len(params) < 2:
            st.caption("A heatmap needs two searched parameters; this sweep searches one.")
        else:
            if st.session_state.get("sweeps_heat_x") not in params:
                st.session_state["sweeps_heat_x"] = params[0]
            x = st.selectbox("Across", params, key="sweeps_heat_x")
            rest = [p for p in params if p != x]
            if st.session_state.get("sweeps_heat_y") not in rest:
                st.session_state["sweeps_heat_y"] = rest[0]
            y = st.selectbox("Down", rest, key="sweeps_heat_y")
            st.plotly_chart(sc.heatmap_figure(df, x, y), key="sweeps_heat")
            st.caption("Each cell: the best validation accuracy of the finished trials with those values.")
    with right:
        st.subheader("Which parameter mattered")
        imp = importance(name, info)
        if imp:
            st.plotly_chart(sc.importance_figure(imp), key="sweeps_importance")
            st.caption("Optuna's parameter importance (fANOVA) over the finished trials.")
        else:
            st.caption("Optuna cannot tell which parameter mattered yet: it needs at least three finished trials "
                       "with different parameters.")

    optuna_plots(name, params)
    st.subheader("All trials")
    st.plotly_chart(sc.parallel_figure(df, params), key="sweeps_parallel")
    st.caption("One line per trial with a validation accuracy; drag along an axis to filter.")
    st.subheader("Validation accuracy per epoch")
    st.plotly_chart(sc.curves_figure(info), key="sweeps_curves")
    trial_table(df, params, info)


@st.cache_data(show_spinner="Drawing Optuna's plots…", max_entries=16)
def _optuna_figures(url: str, name: str, stamp_: tuple, x: str | None, y: str | None) -> dict:
    return sc.optuna_figures(sweeps.load(name), x, y)


def optuna_plots(name: str, params: list[str]) -> None:
    """Optuna's optimization history, slice and contour plots, drawn only while their expander is
    open (a 120-trial study stays quick), again only when the study changes."""
    box = st.expander("Optuna's plots: optimization history, slices, contour", key="sweeps_optuna",
                      on_change="rerun", icon=":material/insights:")
    if not box.open:
        return
    with box:
        x, y = (st.session_state.get("sweeps_heat_x"), st.session_state.get("sweeps_heat_y")) \
            if len(params) >= 2 else (None, None)
        figs = _optuna_figures(storage_key(), name, stamp(name), x, y)
        st.plotly_chart(figs["history"], key="sweeps_history")
        st.caption("Each finished trial's validation accuracy in the order it ran, and the best so far.")
        st.plotly_chart(figs["slice"], key="sweeps_slice")
        st.caption("The validation accuracy against each parameter, one panel per parameter.")
        if "contour" in figs:
            st.plotly_chart(figs["contour"], key="sweeps_contour")
            st.caption(f"Contour over {x} and {y}, the two parameters picked for the heatmap above.")
        else:
            st.caption("A contour needs two searched parameters; this sweep searches one.")


def trial_table(df, params: list[str], info: dict) -> None:
    st.subheader("Trials")
    show = df.assign(state=[("★ " if b else "") + f"{sc.STATE_ICON.get(s, '')} {s}"
                            for s, b in zip(df["state"], df["best"])])
    for p in params:        # text, booleans, mixed types: as text (one Arrow column type); numbers stay numbers
        if not sc.is_number_column(show[p]):
            show[p] = [sc.fmt(v) for v in show[p]]
    show = show.sort_values(["val_acc", "trial"], ascending=[False, True], na_position="last")
    num = st.column_config.NumberColumn
    seeded = bool(info.get("seeds"))
    if seeded:                          # a seed group per trial: its mean ± sd (n)
        by = {c["number"]: sweeps.describe(c) for c in info["configs"]}
        show = show.assign(seeds=[by.get(int(t), "—") for t in show["trial"]])
    cols = ["trial", "state", "val_acc", *(["seeds"] if seeded else []), *params, "note", "stopped_at", "epochs_done",
            "seconds", "run_id", "host", "error"]
    st.dataframe(show[cols], hide_index=True, width="stretch", key="sweeps_table", placeholder=sc.BLANK,
                 column_config={
        "trial": num("Trial", format="#%d"), "state": "State",
        "val_acc": num(charts.VAL_ACC, format=PCT, help=charts.VAL_ACC_HELP),
        "stopped_at": num("Stopped at epoch", format="%d"), "epochs_done": num("Epochs", format="%d"),
        "seconds": num("Seconds", format="%.0f"), "run_id": "Run", "host": "Host", "error": "Error", "note": "Note",
        "seeds": st.column_config.TextColumn("Mean ± sd (n seeds)", help="The trial's seed group: mean and sample sd "
                                             "of the validation accuracy over its finished runs (the objective)."),
        **{p: num(p, format="%g") for p in params if sc.is_number_column(show[p])}})
    with_runs = [int(t) for t in show.loc[show["run_id"].notna(), "trial"]]
    if not with_runs:
        return
    rows = {int(r["trial"]): r for _, r in show.iterrows()}
    if st.session_state.get("sweeps_open") not in with_runs:     # another sweep's trial: start at the best
        st.session_state["sweeps_open"] = with_runs[0]
    pick = st.selectbox("Open a trial's run", with_runs, key="sweeps_open",
                        format_func=lambda t: f"#{t} · {rows[t]['state']} · "
                                              + params_text({p: rows[t][p] for p in params if rows[t][p] is not None}))
    r = rows[pick]
    best_run = (info.get("best") or {}).get("run_id")
    a, b, c = st.columns(3)
    with a:
        link(nav.EVALUATE, "Evaluate", run=r["run_id"], disabled=not r["state"].endswith("complete"),
             help=None if r["state"].endswith("complete") else "Only a finished trial has an evaluation.")
    with b:
        other = r["run_id"] != best_run and best_run and r["state"].endswith("complete")
        link(nav.COMPARE, "Compare with the best", disabled=not other,
             runs=f"{best_run},{r['run_id']}" if other else None)
    with c:
        link(nav.RUNS, "Runs page", run=r["run_id"])
    trial_note(info["name"], pick, r["note"])


def trial_note(name: str, number: int, note: str | None) -> None:
    """The picked trial's note (kept in the study: core.runs.sweeps.set_note), shown in the table."""
    key = f"sweeps_note_{name}_{number}"
    with st.form(f"sweeps_note_form_{name}_{number}", border=False):
        st.text_area(f"Note on trial #{number}", value=note or "", key=key, max_chars=sweeps.NOTE_MAX, height=68,
                     placeholder="what this trial shows, what to try next")
        st.form_submit_button("Save note", on_click=_save_note, args=(name, number, key))


def _save_note(name: str, number: int, key: str) -> None:
    try:
        note = sweeps.set_note(name, number, st.session_state[key])
        st.session_state["sweeps_flash"] = ("success", f"Saved the note on trial #{number}." if note else
                                            f"Cleared the note on trial #{number}.")
    except UserError as e:
        st.session_state["sweeps_flash"] = ("error", str(e))


# ------------------------------------------------------------------ the poster's table

def poster_table(info: dict) -> None:
    meta = info["meta"]
    rows = reproduce.table(info, store(), [tuple(r) for r in meta.get("rows") or []] or None, meta.get("stand_in"))
    st.subheader("The poster's table, reproduced")
    df = sc.table_frame(rows)
    df.insert(df.columns.get_loc("holdout") + 1, "holdout_n", [r["this"].get("holdout_n") for r in rows])
    df["shared"] = [reproduce.row_note(r) or None for r in rows]
    if any(r.get("group") for r in rows):      # seed groups: the figures are means; their spread beside
        df.insert(df.columns.get_loc("holdout_n") + 1, "holdout_spread", [_spread(r) for r in rows])
    num = st.column_config.NumberColumn
    st.dataframe(df, hide_index=True, width="stretch", key="sweeps_poster_table", placeholder=sc.BLANK,
                 column_config={
        "model": "Model", "classes": "Classes", "trained": "Trained", "state": "State",
        "poster_train": num("Poster train", format=PCT), "poster_val": num("Poster val", format=PCT),
        "poster_holdout": num("Poster holdout", format=PCT), "train": num("Train", format=PCT),
        "val": num("Val", format=PCT), "holdout": num("Holdout", format=PCT),
        "holdout_n": num("Holdout images", format="%d", help="The images the holdout figure rests on."),
        "holdout_diff": num("Holdout − poster", format="%+.3f"), "run_id": "Run",
        "holdout_spread": st.column_config.TextColumn("Holdout mean ± sd (n)", help="Over the row's seed group: "
                                                      "Train, Val and Holdout are its means."),
        "shared": st.column_config.TextColumn("Shared run", help="Rows that train the same configuration (two "
                                                                 "models with one stand-in) share one run.")})
    if meta.get("note"):
        st.info(meta["note"], icon="✂️")
    if meta.get("quick"):
        st.caption(f"Quick mode: {reproduce.QUICK['image_size']} px and {reproduce.QUICK['epochs']} epochs, not the "
                   "poster's 224 px and 10 epochs, so lower numbers are expected.")
    for model, used in (meta.get("stand_in") or {}).items():
        st.info(f"**Stand-in:** {model}'s ImageNet weights could not be had here, so {used} trained in its place; "
                "its row is marked.", icon="🔁")
    done = {(r["model"], r["classes"]): r for r in rows if r["run_id"] and r["status"] == "done"}
    st.markdown("**Each row's run**")
    cols = st.columns(min(len(rows), 4) or 1)
    for i, r in enumerate(rows):
        with cols[i % len(cols)]:
            link(nav.EVALUATE, f"{r['model']} · {r['classes']} classes", run=r["run_id"],
                 disabled=(r["model"], r["classes"]) not in done,
                 help=None if (r["model"], r["classes"]) in done else f"Not finished yet ({r['state']}).")
    f3 = next((done[k] for k in done if k[1] == 10), None)
    f4 = next((done[k] for k in done if k[1] == 50), None)
    a, b = st.columns(2)
    with a:
        link(nav.EVALUATE, "Fig. 3: confusion matrix at 10 classes", "🧮", run=(f3 or {}).get("run_id"),
             disabled=f3 is None, help=None if f3 else "Needs a finished 10-class row.")
    with b:
        link(nav.EVALUATE, "Fig. 4: per-class accuracy at 50 classes", "📊", run=(f4 or {}).get("run_id"),
             disabled=f4 is None, help=None if f4 else "Needs a finished 50-class row.")
    c, d, _ = st.columns([1, 1, 3])
    c.download_button("⬇️ CSV", sc.table_csv(rows), file_name=f"{info['name']}.csv", mime="text/csv",
                      key="sweeps_table_csv")
    d.download_button("⬇️ Markdown", reproduce.markdown(rows, bool(meta.get("quick")), meta.get("note")),
                      file_name=f"{info['name']}.md", mime="text/markdown", key="sweeps_table_md")


def _spread(row: dict) -> str:
    """A reproduce row's holdout accuracy as 'mean ± sd (n = N)' over its seed group."""
    m, sd = row["mean"].get("holdout_acc"), row["sd"].get("holdout_acc")
    if not row.get("group") or m is None:
        return "—"
    return f"{m:.3f}" + ("" if sd is None else f" ± {sd:.3f}") + f" (n = {row['n']})"


def results_tab() -> None:
    names = sweep_list()
    if not names:
        st.info("No sweeps yet. Launch one on the **New sweep** tab (or the poster's table on **Poster's table**), "
                "or from the command line: `python -m core sweep --data DATA --grid lr=0.01,0.001 …`.", icon="ℹ️")
        return
    name = pick_sweep(names)
    try:
        first = load_info(name)
    except UserError as e:
        user_error(e)
        return
    live0 = is_live(first, driver_job(name))

    @st.fragment(run_every=POLL_S if live0 else None)
    def view():
        info = load_info(name)
        job = driver_job(name)
        if live0 and not is_live(info, job):
            st.rerun(scope="app")          # it just ended: one full rerun, then no more polling
        flash()
        status_line(info, job)
        controls(name, info, job)
        if info["kind"] == "reproduce":
            poster_table(info)     # a best over different class counts would mean nothing
        else:
            best_section(name, info)
        charts_section(name, info)
    view()


