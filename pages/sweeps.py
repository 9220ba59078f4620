"""Sweeps: hyperparameter searches on Optuna (the poster's Fig. 2, done better) and the poster's
holdout table, each launched from one form. Every trial is an ordinary run (Runs, Evaluate,
Compare show it); a background `sweep` job drives the study. The page only reads the study
(plain SELECTs, cached per change of the study) and never trains."""
from dashboard.common import (ROOT, to_url, url_pick, counts_of, dataset_picker, store, synthetic_note,  # noqa: I001
                              user_error)

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from core.errors import UserError
from core.runs import jobs, reproduce, sweeps
from core.train.config import DEFAULTS as CONFIG_DEFAULTS
from core.train.config import DEVICES, OPTIMIZERS, TrainConfig, spec
from dashboard import sweep_charts as sc

PAGES = ROOT / "pages"
POLL_S = 2.0                       # live refresh while trials run or a driver job is active
TABS = ["Results", "New sweep", "Poster's table"]
POSTER_GRID = "lr=0.01,0.005,0.001\noptimizer=adam,sgd\nbatch_size=16,24,32,48,96\nepochs=1,3,5,10"
PCT = "%.3f"
# form widget key -> TrainConfig field (defaults and bounds from the dataclass, as on the Train page)
FIELDS = dict(sw_classes="classes", sw_epochs="epochs", sw_batch="batch_size", sw_lr="lr", sw_optimizer="optimizer",
              sw_size="image_size", sw_holdout="holdout", sw_val="val", sw_seed="seed", sw_device="device",
              sw_max_images="max_images")
SS_DEFAULTS = {**{k: CONFIG_DEFAULTS[f] for k, f in FIELDS.items()}, "sw_grid": "lr=0.01,0.001\noptimizer=adam,sgd",
               "sw_sampler": "grid", "sw_trials": 20, "sw_prune": True, "sw_name": "",
               "rp_quick": True, "rp_classes": [10, 20, 30, 50], "rp_models": ["resnet18", "vgg16"],
               "rp_epochs": 10}


# ------------------------------------------------------------------ reading a study (cached)

@st.cache_resource(show_spinner=False, max_entries=4)
def _rdb(url: str):
    """One Optuna storage (engine, connection pool) per URL: opening one costs ~0.1 s."""
    return sweeps.open_storage(url)


def storage_key() -> str:
    return sweeps.storage_url(None)            # the default storage of the current LANDMARKS_HOME


STAMP_SQL = """
SELECT COUNT(*), MAX(t.datetime_complete),
       SUM(CASE WHEN t.state = 'RUNNING' THEN 1 ELSE 0 END),
       (SELECT COUNT(*) FROM trial_intermediate_values v JOIN trials t2 ON v.trial_id = t2.trial_id
         WHERE t2.study_id = s.study_id),
       (SELECT COUNT(*) FROM trial_user_attributes a JOIN trials t3 ON a.trial_id = t3.trial_id
         WHERE t3.study_id = s.study_id),
       (SELECT MAX(u.value_json) FROM study_user_attributes u WHERE u.study_id = s.study_id AND u.key = 'cancelled')
FROM studies s LEFT JOIN trials t ON t.study_id = s.study_id
WHERE s.study_name = :name GROUP BY s.study_id"""


def stamp(name: str) -> tuple:
    """Changes whenever the study does (a trial asked, reported, told; an attribute set; the sweep
    cancelled): one read-only aggregate query, no lock held beyond it. Falls back to a 2 s clock."""
    try:
        import sqlalchemy
        with _rdb(storage_key()).engine.connect() as c:
            row = c.execute(sqlalchemy.text(STAMP_SQL), {"name": name}).first()
        return tuple(str(v) for v in row) if row else ("missing",)
    except Exception:  # noqa: BLE001 - another schema or backend: refresh on a 2 s clock instead
        return ("clock", int(time.time() // POLL_S))


@st.cache_data(show_spinner=False, max_entries=32)
def _info(url: str, name: str, stamp_: tuple) -> dict:
    import optuna
    study = optuna.load_study(study_name=name, storage=_rdb(url))
    return sweeps.info(name, None, study=study)


def load_info(name: str) -> dict:
    return with_run_curves(_info(storage_key(), name, stamp(name)))


def _read_curve(run_id: str) -> dict[int, float]:
    try:
        ep = store().epochs(run_id)
    except Exception:  # noqa: BLE001 - a run deleted or unreadable: no curve, the rest still shows
        return {}
    return {int(e): float(v) for e, v in zip(ep["epoch"], ep["val_acc"]) if pd.notna(v)}


@st.cache_data(show_spinner=False, max_entries=4096)
def _ended_curve(url: str, run_id: str, state: str) -> dict[int, float]:
    return _read_curve(run_id)


def with_run_curves(info: dict) -> dict:
    """Curves from the trials' runs where Optuna holds none (the driver reports per-epoch values only
    when it prunes): an ended run's once, a running one's at every refresh."""
    if all(c["curve"] or not c.get("run_id") for c in info["configs"]):
        return info
    configs = []
    for c in info["configs"]:
        if not c["curve"] and c.get("run_id") and c["state"] != "waiting":
            curve = _read_curve(c["run_id"]) if c["state"] == "running" else \
                _ended_curve(storage_key(), c["run_id"], c["state"])
            c = {**c, "curve": curve}
            if c["val_acc"] is None and curve and c["state"] != "complete":
                c["val_acc"] = curve[max(curve)]
        configs.append(c)
    return {**info, "configs": configs}


@st.cache_data(show_spinner="Estimating parameter importance…", max_entries=16)
def _importance(url: str, name: str, stamp_: tuple) -> dict:
    return sweeps.importance(name)


@st.cache_data(show_spinner=False, ttl=POLL_S, max_entries=4)
def _names(url: str) -> list[dict]:
    return sweeps.names()


def sweep_list() -> list[dict]:
    try:
        return _names(storage_key())
    except UserError as e:
        user_error(e)
        return []


def forget_cache() -> None:
    _names.clear()


# ------------------------------------------------------------------ small helpers

def link(page: str, label: str, icon: str, disabled: bool = False, help: str | None = None, **query) -> None:
    try:
        st.page_link(str(PAGES / page), label=label, icon=icon, disabled=disabled, help=help,
                     query_params={k: v for k, v in query.items() if v} or None)
    except StreamlitAPIException:   # the page is not registered (the page runs on its own, e.g. in a test)
        st.caption(f"{label}: open the **{Path(page).stem.title()}** page.")


def flash() -> None:
    msg = st.session_state.pop("sweeps_flash", None)
    if msg:
        getattr(st, msg[0])(msg[1])


def driver_job(name: str) -> dict | None:
    return jobs.latest(store(), "sweep", name=name)


def is_live(info: dict, job: dict | None) -> bool:
    return bool(info["counts"]["running"] or (job and job["active"]))


def params_text(params: dict) -> str:
    return ", ".join(f"{k}={sc.fmt(v)}" for k, v in params.items()) or "the base configuration"


# ------------------------------------------------------------------ results: picker, status, controls

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
    parts = [f"**{c['ended']}/{info['planned']}** ended", f"✅ {c['complete']} complete", f"✂️ {c['pruned']} pruned",
             f"❌ {c['failed']} failed", f"🏃 {c['running']} running", f"⏳ {c['waiting']} waiting"]
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


# ------------------------------------------------------------------ results: best, charts, table

def best_section(name: str, info: dict) -> None:
    best = info["best"]
    if best is None:
        st.caption("No trial has finished yet; the best configuration shows here once one has.")
        return
    st.success(f"**Best: trial #{best['number']}** · validation accuracy **{best['val_acc']:.3f}** · "
               f"{params_text(best['params'])}", icon="🏆")
    a, b, c = st.columns([2, 1, 1])
    with b:
        link("evaluate.py", "Open the best in Evaluate", "🎯", run=best.get("run_id"), disabled=not best.get("run_id"))
    with c:
        link("runs.py", "Its run on the Runs page", "📈", run=best.get("run_id"), disabled=not best.get("run_id"))
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
        link("runs.py", "Follow it on the Runs page", "📈", run=done[1])


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
        imp = _importance(storage_key(), name, (info["counts"]["complete"], stamp(name)[1]))
        if imp:
            st.plotly_chart(sc.importance_figure(imp), key="sweeps_importance")
            st.caption("Optuna's parameter importance (fANOVA) over the finished trials.")
        else:
            st.caption("Optuna cannot tell which parameter mattered yet: it needs at least three finished trials "
                       "with different parameters.")

    st.subheader("All trials")
    st.plotly_chart(sc.parallel_figure(df, params), key="sweeps_parallel")
    st.caption("One line per trial with a validation accuracy; drag along an axis to filter.")
    st.subheader("Validation accuracy per epoch")
    st.plotly_chart(sc.curves_figure(info), key="sweeps_curves")
    trial_table(df, params, info)


def trial_table(df, params: list[str], info: dict) -> None:
    st.subheader("Trials")
    show = df.assign(state=[("★ " if b else "") + f"{sc.STATE_ICON.get(s, '')} {s}"
                            for s, b in zip(df["state"], df["best"])])
    for p in params:        # text, booleans, mixed types: as text (one Arrow column type); numbers stay numbers
        if not sc.is_number_column(show[p]):
            show[p] = [sc.fmt(v) if v is not None else None for v in show[p]]
    show = show.sort_values(["val_acc", "trial"], ascending=[False, True], na_position="last")
    num = st.column_config.NumberColumn
    st.dataframe(show[["trial", "state", "val_acc", *params, "stopped_at", "epochs_done", "seconds", "run_id",
                       "host", "error"]], hide_index=True, width="stretch", key="sweeps_table", column_config={
        "trial": num("Trial", format="#%d"), "state": "State", "val_acc": num("Val acc", format=PCT),
        "stopped_at": num("Stopped at epoch", format="%d"), "epochs_done": num("Epochs", format="%d"),
        "seconds": num("Seconds", format="%.0f"), "run_id": "Run", "host": "Host", "error": "Error",
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
        link("evaluate.py", "Evaluate", "🎯", run=r["run_id"], disabled=not r["state"].endswith("complete"),
             help=None if r["state"].endswith("complete") else "Only a finished trial has an evaluation.")
    with b:
        other = r["run_id"] != best_run and best_run and r["state"].endswith("complete")
        link("compare.py", "Compare with the best", "⚖️", disabled=not other,
             runs=f"{best_run},{r['run_id']}" if other else None)
    with c:
        link("runs.py", "Runs page", "📈", run=r["run_id"])


# ------------------------------------------------------------------ results: the poster's table

def poster_table(info: dict) -> None:
    meta = info["meta"]
    rows = reproduce.table(info, store(), [tuple(r) for r in meta.get("rows") or []] or None, meta.get("stand_in"))
    st.subheader("The poster's table, reproduced")
    df = sc.table_frame(rows)
    num = st.column_config.NumberColumn
    st.dataframe(df, hide_index=True, width="stretch", key="sweeps_poster_table", column_config={
        "model": "Model", "classes": "Classes", "trained": "Trained", "state": "State",
        "poster_train": num("Poster train", format=PCT), "poster_val": num("Poster val", format=PCT),
        "poster_holdout": num("Poster holdout", format=PCT), "train": num("Train", format=PCT),
        "val": num("Val", format=PCT), "holdout": num("Holdout", format=PCT),
        "holdout_diff": num("Holdout − poster", format="%+.3f"), "run_id": "Run"})
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
            link("evaluate.py", f"{r['model']} · {r['classes']} classes", "🎯", run=r["run_id"],
                 disabled=(r["model"], r["classes"]) not in done,
                 help=None if (r["model"], r["classes"]) in done else f"Not finished yet ({r['state']}).")
    f3 = next((done[k] for k in done if k[1] == 10), None)
    f4 = next((done[k] for k in done if k[1] == 50), None)
    a, b = st.columns(2)
    with a:
        link("evaluate.py", "Fig. 3: confusion matrix at 10 classes", "🧮", run=(f3 or {}).get("run_id"),
             disabled=f3 is None, help=None if f3 else "Needs a finished 10-class row.")
    with b:
        link("evaluate.py", "Fig. 4: per-class accuracy at 50 classes", "📊", run=(f4 or {}).get("run_id"),
             disabled=f4 is None, help=None if f4 else "Needs a finished 50-class row.")
    c, d, _ = st.columns([1, 1, 3])
    c.download_button("⬇️ CSV", sc.table_csv(rows), file_name=f"{info['name']}.csv", mime="text/csv",
                      key="sweeps_table_csv")
    d.download_button("⬇️ Markdown", reproduce.markdown(rows, bool(meta.get("quick"))),
                      file_name=f"{info['name']}.md", mime="text/markdown", key="sweeps_table_md")


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


# ------------------------------------------------------------------ new sweep

def default_model() -> str:
    from core.train.models import REGISTRY
    return "efficientnet_lite0" if "efficientnet_lite0" in REGISTRY else next(iter(REGISTRY))


@st.cache_data(show_spinner=False, ttl=60)
def imagenet_ok(model: str) -> bool:
    from core.train.models import imagenet_available
    return bool(imagenet_available(model)[0])


def on_model_change() -> None:
    st.session_state["sw_weights"] = "imagenet" if imagenet_ok(st.session_state["sw_model"]) else "none"


def apply_poster_grid() -> None:
    st.session_state.update(sw_grid=POSTER_GRID, sw_sampler="grid")
    st.session_state["sw_preset_note"] = True


def number(col, label: str, key: str, **kw):
    s = spec(FIELDS[key])
    return col.number_input(label, min_value=s["lo"], max_value=s["hi"], key=key, help=kw.pop("help", s["help"]),
                            persist_state="session", **kw)


def grid_lines(text: str) -> list[str]:
    """The text area's lines: blank lines and # comments dropped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def build_sweep(root: Path) -> tuple[str, TrainConfig, dict]:
    ss = st.session_state
    lines = grid_lines(ss["sw_grid"])
    if not lines:
        raise UserError("Type at least one line NAME=V1,V2,… to search, such as lr=0.01,0.001.")
    space = sweeps.parse_space(lines)
    values = {f: type(CONFIG_DEFAULTS[f])(ss[k]) for k, f in FIELDS.items()}
    cfg = TrainConfig(data=str(root), model=ss["sw_model"], weights=ss["sw_weights"], **values).validate()
    from core.data.splits import top_classes
    need = max(space["classes"]) if isinstance(space.get("classes"), list) else cfg.classes
    top_classes(counts_of(root), need)
    name = ss["sw_name"].strip() or time.strftime("sweep-%Y%m%d-%H%M%S")
    sweeps.check_name(name)
    return name, cfg, space


def start(name: str, create) -> None:
    """Create the study (validating every configuration first), queue its driver, show it."""
    create()
    job = jobs.latest(store(), "sweep", name=name)
    if not (job and job["active"]):
        jobs.submit(store(), "sweep", {"name": name, "storage": None})
    forget_cache()
    st.session_state["sweeps_goto"] = name
    st.rerun()


def new_sweep_tab() -> None:
    from core.train.models import REGISTRY
    ss = st.session_state
    st.caption("Every configuration trains as an ordinary run in the one queue (one per GPU, one on the CPU), "
               "and shows on the Runs page labelled with its sweep.")
    path = dataset_picker("sweep_dataset")
    if not path:
        st.info("Type the folder of a data set, or pick one above.", icon="ℹ️")
        return
    root = Path(path).expanduser().resolve()
    synthetic_note(root)
    st.selectbox("Model", list(REGISTRY), key="sw_model", on_change=on_model_change, persist_state="session")
    st.button("📋 Poster's grid (Fig. 2)", key="sw_poster_grid", on_click=apply_poster_grid,
              help="lr 0.01/0.005/0.001 × Adam/SGD × batch 16/24/32/48/96 × epochs 1/3/5/10.")
    if ss.pop("sw_preset_note", False):
        st.info("The poster's grid is filled in: 3 learning rates × 2 optimizers × 5 batch sizes, and the poster's "
                "1–10 epochs as the line epochs=1,3,5,10 — 120 runs. Delete that line to train 30 configurations "
                "for the epochs set below; pruning stops hopeless ones early.", icon="📋")
    with st.form("sweep_form", border=True):
        a, b, c = st.columns(3)
        a.text_area("Search space, one parameter a line", key="sw_grid", height=160, persist_state="session",
                    help="NAME=V1,V2,… (any training setting: lr, optimizer, batch_size, epochs, image_size, "
                         "augment=crop+hflip, freeze=true, …), or NAME=LOW:HIGH for a range (tpe and random).")
        a.selectbox("Sampler", sweeps.SAMPLERS, key="sw_sampler", persist_state="session",
                    format_func={"grid": "grid (every combination)", "tpe": "tpe (Optuna's Bayesian search)",
                                 "random": "random"}.get)
        a.number_input("Trials (tpe and random)", min_value=1, max_value=10000, step=1, key="sw_trials",
                       persist_state="session")
        a.toggle("Prune hopeless trials", key="sw_prune", persist_state="session",
                 help="Optuna's median pruner: from epoch 2 on, a trial below the median of earlier trials at the "
                      "same epoch stops and shows as pruned.")
        a.text_input("Name", key="sw_name", placeholder="sweep-YYYYmmdd-HHMMSS", persist_state="session",
                     help="Letters, digits, '.', '-', '_'. The same name and settings again continue that sweep.")
        b.selectbox("Weights", ["imagenet", "none"], key="sw_weights", persist_state="session",
                    format_func={"imagenet": "ImageNet", "none": "None (from scratch)"}.get)
        number(b, "N most frequent classes (0 = all)", "sw_classes", step=1)
        number(b, "Epochs", "sw_epochs", step=1)
        number(b, "Batch size", "sw_batch", step=8)
        number(b, "Learning rate", "sw_lr", step=1e-4, format="%.5f")
        b.selectbox("Optimizer", OPTIMIZERS, key="sw_optimizer", persist_state="session")
        number(c, "Image size (px)", "sw_size", step=16)
        number(c, "Holdout fraction", "sw_holdout", step=0.01, format="%.3f")
        number(c, "Validation fraction", "sw_val", step=0.05, format="%.3f")
        number(c, "Seed", "sw_seed", step=1)
        c.selectbox("Device", DEVICES, key="sw_device", persist_state="session")
        number(c, "Max images (0 = all)", "sw_max_images", step=100)
        st.caption("The settings are every trial's base; the search space overrides them per trial.")
        go = st.form_submit_button("🔬 Launch sweep", type="primary", key="sw_launch")
    if go:
        try:
            name, cfg, space = build_sweep(root)
            start(name, lambda: sweeps.create(name, cfg, space, ss["sw_sampler"],
                                              int(ss["sw_trials"]) if ss["sw_sampler"] != "grid" else None,
                                              bool(ss["sw_prune"]), None))
        except UserError as e:
            user_error(e)
        except Exception as e:  # noqa: BLE001 - e.g. the store or the sweep database is not writable
            user_error(e)


# ------------------------------------------------------------------ the poster's table

def poster_tab() -> None:
    from core.train.models import REGISTRY
    ss = st.session_state
    st.markdown("The poster's holdout table as one action: ResNet-18 at 10/20/30/50 classes and VGG-16 at 10/20 "
                "(Adam, lr 0.001, 10 epochs, 1% holdout then 80/20), with the poster's numbers beside this run's. "
                "The table fills in on the **Results** tab as its runs finish.")
    rows = [{"model": m, "classes": c, "train": p[0], "val": p[1], "holdout": p[2]}
            for (m, c), p in reproduce.POSTER.items()]
    st.dataframe(rows, hide_index=True, key="rp_poster", column_config={
        "model": "Model", "classes": "Classes", "train": st.column_config.NumberColumn("Poster train", format=PCT),
        "val": st.column_config.NumberColumn("Poster val", format=PCT),
        "holdout": st.column_config.NumberColumn("Poster holdout", format=PCT)})
    path = dataset_picker("repro_dataset")
    if not path:
        st.info("Type the folder of a data set, or pick one above.", icon="ℹ️")
        return
    root = Path(path).expanduser().resolve()
    synthetic_note(root)
    with st.form("repro_form", border=True):
        a, b = st.columns(2)
        a.multiselect("Classes (the poster's, or type other numbers)", [10, 20, 30, 50], key="rp_classes",
                      accept_new_options=True, persist_state="session")
        a.multiselect("Models", list(REGISTRY), key="rp_models", persist_state="session",
                      help="The poster's are resnet18 and vgg16; a model whose ImageNet weights cannot be had here "
                           f"is stood in for by {reproduce.STAND_IN}, and the table says so.")
        b.number_input("Epochs", min_value=1, max_value=1000, step=1, key="rp_epochs", persist_state="session")
        b.toggle(f"Quick ({reproduce.QUICK['image_size']} px, {reproduce.QUICK['epochs']} epochs: minutes on a CPU; "
                 "the table says so)", key="rp_quick", persist_state="session")
        go = st.form_submit_button("🧾 Reproduce the poster's table", type="primary", key="rp_launch")
    if not go:
        return
    try:
        try:
            classes = sorted({int(c) for c in ss["rp_classes"]}) or None
        except ValueError:
            raise UserError("Classes must be whole numbers, such as 10 or 20.") from None
        models = list(ss["rp_models"]) or None
        full = classes == [10, 20, 30, 50] and models is not None and set(models) == {"resnet18", "vgg16"}
        with st.spinner("Checking which models' ImageNet weights can be had…"):
            name, cfg, configs, meta = reproduce.plan(str(root), None if full else classes, None if full else models,
                                                      int(ss["rp_epochs"]), bool(ss["rp_quick"]))
        from core.data.splits import top_classes
        top_classes(counts_of(root), max(c["classes"] for c in configs))
        start(name, lambda: sweeps.create(name, cfg, configs=configs, kind="reproduce", meta=meta))
    except UserError as e:
        user_error(e)
    except Exception as e:  # noqa: BLE001 - e.g. the store or the sweep database is not writable
        user_error(e)


# ------------------------------------------------------------------ page

for k, v in SS_DEFAULTS.items():
    st.session_state.setdefault(k, v)
st.session_state.setdefault("sw_model", default_model())
st.session_state.setdefault("sw_weights", "imagenet" if imagenet_ok(st.session_state["sw_model"]) else "none")
goto = st.session_state.pop("sweeps_goto", None)
if goto:                                   # a sweep just launched: show it
    st.session_state["sweeps_tab"] = TABS[0]
    st.session_state["sweeps_pick"] = goto
    st.session_state["sweeps_flash"] = ("success", f"Sweep **{goto}** launched: its trials queue as ordinary runs.")

st.title("🔬 Sweeps")
st.caption("Hyperparameter searches on Optuna (the poster's Fig. 2, done better) and the poster's holdout table. "
           "Sweeps stored elsewhere (`--storage URL`) are seen with "
           "`python -m core sweep --status NAME --storage URL`.")
if "sweeps_tab" not in st.session_state and not sweep_list():
    st.session_state["sweeps_tab"] = TABS[1]
results, new, poster = st.tabs(TABS, key="sweeps_tab", on_change="rerun")
if results.open:
    with results:
        results_tab()
if new.open:
    with new:
        new_sweep_tab()
if poster.open:
    with poster:
        poster_tab()
