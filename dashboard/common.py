"""Widgets and cached loaders shared by the pages. Pages read the run store and call core;
they never train. The files and the store are the truth, not st.session_state."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from core import access, paths
from core.data.demo import DEMO_DEFAULTS
from core.errors import UserError
import core.runs.tasks  # noqa: F401 - the job kinds register themselves (pages submit them)
from core.runs.provenance import PARENT  # TrainConfig.extra key: the run a "Train again like this" run was made from
from core.runs.store import RunStore
from core.train.config import DEFAULTS as CONFIG_DEFAULTS
from core.train.config import LEGACY
from dashboard import nav
from dashboard.charts import short_labels  # noqa: F401 - one helper for every per-class axis

STATUS_ICON = {"queued": "⏳", "starting": "🚀", "running": "🏃",                     # core.runs.store.ACTIVE
               "done": "✅", "failed": "❌", "cancelled": "⏹️", "interrupted": "⚠️", "pruned": "✂️"}  # and FINAL


def home_key() -> str:
    return os.environ.get("LANDMARKS_HOME", "")


@st.cache_resource(show_spinner=False)
def _store(key: str) -> RunStore:
    return RunStore()


def store() -> RunStore:
    """The run store of the current LANDMARKS_HOME (one connection factory per home)."""
    return _store(home_key() + str(paths.home()))


def schedule_queue() -> None:
    """Move the persisted queue along (also after an app restart); cheap when nothing waits."""
    from core.runs.jobs import schedule
    try:
        schedule(store())
    except Exception as e:  # noqa: BLE001 - a page must render even if a worker cannot start
        st.warning(f"Could not start queued runs: {e}")


# ------------------------------------------------------------------ datasets

def demo_path() -> Path:
    return paths.demo_dir()


def ensure_demo() -> Path:
    """The synthetic demo data set, generated on first use by a background job (a few seconds);
    while it is being generated the page shows the job's progress and stops there."""
    d = demo_path()
    if (d / "train.csv").exists():
        return d
    from core.runs import jobs
    job = jobs.latest(store(), "demo", out=str(d))
    if job is not None and job["status"] in ("failed", "interrupted"):
        st.error(f"Generating the demo data set failed: {job.get('error') or job['status']}", icon="🚫")
        if not st.button("Try again", key="demo_retry"):
            st.stop()                  # not resubmitted by itself: a failing job would loop every second
    if job is None or not job["active"]:
        jobs.submit(store(), "demo", dict(out=str(d), **DEMO_DEFAULTS))
    job_progress("demo", "Generating the synthetic demo data set (first use only)…", out=str(d))
    st.stop()


def job_button(label: str, kind: str, run_id: str, key: str, args: dict | None = None, **button) -> None:
    """A button that queues a background job of `kind` on the run (then reruns to show its progress);
    the job's refusal is one sentence on the page."""
    from core.runs import jobs
    if st.button(label, key=key, **button):
        try:
            jobs.submit(store(), kind, args or {}, run_id=run_id)
        except UserError as e:
            user_error(e)
        else:
            st.rerun()


def live_job(job_id: str, render, poll_s: float = 1.0) -> None:
    """A running job's progress, redrawn every `poll_s` by `render(job, progress, done, total)` in a
    fragment; the whole page reruns once the job has ended (its result then shows)."""
    from core.runs import jobs

    @st.fragment(run_every=poll_s)
    def view():
        job = jobs.status(store(), job_id)
        if job is None or not job["active"]:
            st.rerun(scope="app")
        p = job.get("progress") or {}
        render(job, p, int(p.get("done") or 0), int(p.get("total") or 0))
    view()


def job_progress(kind: str, text: str, poll_s: float = 1.0, **match) -> None:
    """A progress bar of the newest job of `kind`, refreshed until it ends, then one full rerun."""
    from core.runs import jobs

    @st.fragment(run_every=poll_s)
    def view():
        job = jobs.latest(store(), kind, **match)
        if job is None or not job["active"]:
            st.rerun(scope="app")
        p = job.get("progress") or {}
        frac = min(p.get("done", 0) / max(p.get("total") or 1, 1), 1.0)
        st.progress(frac, text=f"{text} {p.get('done', 0):,}/{p.get('total') or '?'}")
    view()


DEMO = "demo"          # the synthetic demo's name in pickers and in the URL (?data=demo)
DATA_PARAM = "data"    # the data set in use, in the URL: bookmarkable, kept across reloads
OTHER = "Other path…"


def datasets() -> dict[str, str]:
    """Name -> folder of every data set the app knows: the demo, then the remembered ones (a typed
    path, a download), the most recently used first. Folders under LANDMARKS_HOME/datasets and the
    data sets of existing runs are remembered on first sight, so nothing has to be typed twice."""
    from core.data import registry
    known = {d["path"] for d in registry.listed()}
    demo = str(demo_path().resolve())
    found = [(str(d), "typed") for d in registry.discover()]    # links leaving the allowed roots: skipped
    found += [(str(Path(r["data"])), "run") for r in store().list() if r.get("data")]
    for path, source in found:
        if path not in known and path != demo and Path(path).is_dir():
            registry.remember(path, source=source, touch=False)
            known.add(path)
    out = {DEMO: demo}
    out.update({(d["name"] if d["name"] != DEMO else f"{DEMO} ({d['path']})"): d["path"]   # named before "demo" was reserved
                for d in registry.listed(browser=True) if d["path"] != demo})
    return out


def dataset_in_use(opts: dict[str, str] | None = None) -> str:
    """The name of the data set in use: the URL's ?data=, else this session's, else the most
    recently used real data set (the demo only when there is no other)."""
    opts = opts or datasets()
    for cand in (st.query_params.get(DATA_PARAM), st.session_state.get("data_in_use")):
        if cand in opts:
            return cand
    real = [n for n, p in opts.items() if n != DEMO and not is_synthetic(p)]
    return real[0] if real else DEMO


def dataset_path_in_use() -> str | None:
    """The folder of the data set in use without drawing a picker (for pages that pick runs)."""
    name = dataset_in_use()
    return None if name == DEMO and not (demo_path() / "train.csv").exists() else datasets()[name]


def use_dataset(name: str) -> None:
    st.session_state["data_in_use"] = name
    st.query_params[DATA_PARAM] = name


@st.cache_resource(show_spinner="Counting images per class…", max_entries=8)
def _counts(root: str, sig: str, clean: bool) -> pd.Series:
    from core.data.readers import class_counts
    return class_counts(root, clean)


def clean_toggle(root, key: str, help: str) -> bool:
    """A toggle for GLDv2's cleaned subset, shown only when the data set has train_clean.csv."""
    from core.data.readers import has_clean
    return has_clean(root) and st.toggle("Cleaned subset only (train_clean.csv)", key=key,
                                         persist_state="session", help=help)


def counts_of(root, clean: bool = False) -> pd.Series:
    """Images per class, shared read-only: at GLDv2 scale copying 200 k rows per rerun (as
    st.cache_data would) costs more than drawing the page. Keyed on the data set's signature.
    `clean`: GLDv2's cleaned subset (train_clean.csv)."""
    from core.data.readers import signature
    return _counts(str(root), signature(Path(root), clean), clean)


def is_synthetic(path: str | Path) -> bool:
    return (Path(path) / "SYNTHETIC.txt").exists()


def synthetic_note(path) -> None:
    if is_synthetic(path):
        st.info("This is the **synthetic** demo data set: procedurally drawn landmarks, not real photos. "
                "Point the app at a Google Landmarks or class-per-folder directory for real data.", icon="🧪")


def dataset_picker(key: str = "dataset") -> str | None:
    """The data set in use (one for every page, kept in the URL) or a typed folder, which is then
    remembered under its folder's name; returns a path or None."""
    from core.data import registry
    from core.data.readers import detect_layout
    opts = datasets()
    current = dataset_in_use(opts)
    if st.session_state.pop(f"{key}_remembered", False) or st.session_state.get(key) != OTHER:
        st.session_state[key] = current
    use_dataset(current)
    labels = {DEMO: "Demo (synthetic landmarks)"} | {d["name"]: registry.describe(d) for d in registry.listed()
                                                   if d.get("source") == "version"}   # "… version of X: 2 excluded"
    choice = st.selectbox("Data set", [*opts, OTHER], key=key, on_change=lambda: _picked(key),
                          format_func=lambda n: labels.get(n, n),
                          help="Every data set you have opened, downloaded or trained on. The choice is "
                               "shared by all pages and kept in the page's address.")
    if choice == OTHER:
        typed = st.text_input("Data set folder", key=f"{key}_path",
                              placeholder="/data/google-landmarks-v2 or a folder of class folders")
        if not typed.strip():
            return None
        try:  # before anything reads it: only LANDMARKS_HOME/datasets and LANDMARKS_DATA_ROOTS
            folder = access.confine(typed)
            detect_layout(folder)
            entry = registry.remember(folder, source="typed")
        except UserError as e:
            user_error(e)
            return None
        use_dataset(entry["name"])
        st.session_state[f"{key}_remembered"] = True   # the widget shows it by name from the next run
        st.rerun()
    if choice == DEMO:
        return str(ensure_demo())
    return opts[choice]


def _picked(key: str) -> None:
    if st.session_state[key] != OTHER:
        use_dataset(st.session_state[key])


# ------------------------------------------------------------------ runs

# the Train form: widget key -> TrainConfig field (defaults and bounds come from core.train.config)
TRAIN_FIELDS = dict(train_classes="classes", train_lr="lr", train_epochs="epochs", train_optimizer="optimizer",
                    train_batch="batch_size", train_size="image_size", train_freeze="freeze",
                    train_holdout="holdout", train_val="val", train_seed="seed", train_device="device",
                    train_pipeline="pipeline", train_max_images="max_images", train_precision="precision",
                    train_channels_last="channels_last", train_fused="fused", train_compile="compile",
                    train_balance="balance", train_recipe="recipe", train_tta="tta", train_nproc="nproc",
                    train_store="store", train_head="head")




def train_again(config: dict, parent: str | None = None) -> None:
    """Copy a run's whole configuration into the Train form (data set included) and open it;
    `parent` (that run's id) is recorded in the runs launched from the form (config extra)."""
    from core.data import registry
    from core.train.config import AUGMENTATIONS
    ss = st.session_state
    ss["train_parent"] = parent
    for key, field in TRAIN_FIELDS.items():
        ss[key] = config_value(config, field)
    if isinstance(ss["train_compile"], bool):  # stored before compile had "auto"
        ss["train_compile"] = "on" if ss["train_compile"] else "off"
    weights = str(config.get("weights") or "imagenet")
    ss["train_weights"] = weights if weights in ("imagenet", "none") else "path"
    ss["train_weights_path"] = "" if weights in ("imagenet", "none") else weights
    ss["train_model"] = config.get("model")
    ss["train_clean"] = bool(config.get("clean"))
    ss["train_new_holdout"] = bool(config.get("new_holdout"))     # a data set version's run (issue 22)
    for a in AUGMENTATIONS:
        ss[f"train_aug_{a}"] = a in (config.get("augment") or ())
    data = config.get("data")
    if data and Path(data).is_dir():
        name = DEMO if Path(data).resolve() == demo_path().resolve() else registry.remember(data, source="run")["name"]
        ss["data_in_use"] = name
    ss["train_again_note"] = True
    st.switch_page(nav.TRAIN.page())


def config_value(config: dict, field: str):
    """A field of a stored run configuration; a field it lacks (stored before the field existed)
    takes what it meant then (LEGACY), else the field's default."""
    return config.get(field, LEGACY.get(field, CONFIG_DEFAULTS[field]))


def split_labels(configs: list[dict]) -> dict[str, str]:
    """Split -> label, with the share the runs' configurations gave it ('Holdout (1%)',
    'Validation (20%)': of what the holdout left); without a share where the runs differ."""
    def share(field: str) -> str:
        values = {config_value(c, field) for c in configs}
        return f" ({100 * values.pop():.3g}%)" if len(values) == 1 else ""
    return {"holdout": f"Holdout{share('holdout')}", "val": f"Validation{share('val')}", "train": "Train"}


def runs_frame(statuses: tuple[str, ...] | None = None) -> pd.DataFrame:
    from core.data.registry import listed
    names = {d["path"]: d["name"] for d in listed()}
    demo = str(demo_path().resolve())
    rows = []
    for r in store().list():
        if statuses and r["status"] not in statuses:
            continue
        c, s = r["config"], r["summary"] or {}
        data = r["data"] or ""
        rows.append({"run_id": r["run_id"], "name": r.get("name") or "", "status": r["status"], "model": r["model"],
                     "classes": r["classes"], "classes_all": r.get("classes_all"),
                     "classes_text": classes_text(r), "epochs": c.get("epochs"), "lr": c.get("lr"),
                     "batch": c.get("batch_size"), "optimizer": c.get("optimizer"),
                     "image_size": c.get("image_size"), "augment": ",".join(c.get("augment") or []) or "—",
                     "freeze": c.get("freeze"), "group": c.get("group") or "",
                     "train_acc": s.get("train_acc"), "val_acc": s.get("val_acc"),
                     "holdout_acc": s.get("holdout_acc"), "holdout_top5": s.get("holdout_top5"),
                     "holdout_gap": s.get("holdout_gap"),
                     "seconds": s.get("seconds") or (r["finished"] - r["started"]
                                                     if r["finished"] and r["started"] else None),
                     "started": r["started"], "tags": r.get("tags") or [],
                     "sweep": (r.get("args") or {}).get("sweep") or (c.get("extra") or {}).get("sweep"),
                     "data": data, "dataset": DEMO if data == demo else names.get(data, Path(data).name or "—"),
                     "synthetic": bool(data) and is_synthetic(data),
                     "created": pd.to_datetime(r["created"], unit="s")})
    return pd.DataFrame(rows)


def classes_text(run: dict | pd.Series) -> str:
    """'10' or, for a run on every class, 'all 44' ('all' before it has started)."""
    if run.get("classes"):
        return str(int(run["classes"]))
    n = run.get("classes_all")
    return f"all {int(n)}" if n is not None and not pd.isna(n) else "all"


def classes_count(run: dict | pd.Series):
    """How many classes a run trains on, one number whether it took the top N or every class
    (None before a run on every class has started)."""
    if run.get("classes"):
        return int(run["classes"])
    n = run.get("classes_all")
    return int(n) if n is not None and not pd.isna(n) else None


def run_names(runs: list[dict] | pd.DataFrame) -> dict[str, str]:
    """Run id -> what legends and tables call it: its name, else a short label (the model and the
    last digits of the id, random); digits are added where two would read the same."""
    from collections import Counter
    rows = runs.to_dict("records") if isinstance(runs, pd.DataFrame) else list(runs)
    named = Counter(r.get("name") for r in rows if r.get("name"))
    for digits in (4, 6, 8):
        names = {}
        for r in rows:
            tag = r["run_id"][-digits:]          # the id's last digits, as its end is what differs
            name = r.get("name")
            names[r["run_id"]] = (name if named[name] == 1 else f"{name} · {tag}") if name else f"{r['model']} · {tag}"
        if len(set(names.values())) == len(names):
            return names
    return {r["run_id"]: r["run_id"] for r in rows}


def run_label(run: dict | pd.Series) -> str:
    icon = STATUS_ICON.get(run["status"], "")
    data = run.get("dataset") or (Path(run["data"]).name if run.get("data") else "—")
    if run.get("data") and is_synthetic(run["data"]):
        data = "🧪 synthetic demo" if data == DEMO else f"{data} 🧪 synthetic"
    name = f"{run['name']} · " if run.get("name") else ""
    return f"{icon} {name}{run['model']} · {classes_text(run)} classes · {data} · {run['run_id']}"


def url_pick(key: str, param: str, valid: list, multi: bool) -> None:
    """Seed a picker's state from the URL (a bookmark, a reload) and drop a stale choice."""
    raw = st.query_params.get(param)
    if raw and raw != st.session_state.get(f"_{key}_url"):   # not merely what this page wrote last
        want = [v for v in raw.split(",") if v in valid] if multi else (raw if raw in valid else None)
        if want:
            st.session_state[key] = want
            return
    cur = st.session_state.get(key)
    if cur is not None and (any(v not in valid for v in cur) if multi else cur not in valid):
        del st.session_state[key]


def to_url(key: str, param: str, value) -> None:
    text = ",".join(value) if isinstance(value, list) else (value or "")
    st.session_state[f"_{key}_url"] = text
    if text:
        st.query_params[param] = text
    elif param in st.query_params:
        del st.query_params[param]


def run_picker(label: str, statuses=("done",), key: str = "run", multi: bool = False, default_best: bool = True):
    """Pick one (or several) runs, kept in the URL (?run=ID, ?runs=A,B). The default: runs of the data
    set in use first, real data before the synthetic demo, then the best by holdout accuracy."""
    df = runs_frame(statuses)
    if df.empty:
        st.info("No finished runs yet. Launch one on the **Train** page.", icon="ℹ️")
        return [] if multi else None
    if default_best and "holdout_acc" in df:
        df = df.assign(_mine=df["data"] == (dataset_path_in_use() or ""), _real=~df["synthetic"])
        df = df.sort_values(["_mine", "_real", "holdout_acc", "val_acc"], ascending=False, na_position="last")
    ids = df["run_id"].tolist()
    fmt = {r["run_id"]: run_label(r) for _, r in df.iterrows()}
    param = "runs" if multi else "run"
    url_pick(key, param, ids, multi)
    if multi:
        if key not in st.session_state:
            st.session_state[key] = ids[:2]
        picked = st.multiselect(label, ids, format_func=fmt.get, key=key, persist_state="session")
    else:
        picked = st.selectbox(label, ids, format_func=fmt.get, key=key, persist_state="session")
    to_url(key, param, picked)
    return picked


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _predictor(run_id: str, ckpt_mtime: float, home: str):
    from core.serve.predictor import load_predictor
    return load_predictor(store().require(run_id))


MANY_CLASS_MODELS = 50   # the Class model page asks for a confirmation before drawing more at once (time)


def predictor(run_id: str):
    """The run's model, loaded once per checkpoint (cache key: the checkpoint's mtime), with the
    run's calibration as it is now (a calibrate job may have written it since the model was loaded)."""
    from core.serve.predictor import current_calibration
    run = store().run(run_id)
    return _predictor(run_id, run.checkpoint_mtime(), home_key()).with_calibration(current_calibration(run))


def run_and_predictor(key: str):
    """Pick a finished run (best first) and load its model; stops the page when there is none."""
    run_id = run_picker("Model (a finished run; the best one is first)", key=key)
    if not run_id:
        st.page_link(nav.TRAIN.page(), label="Go to the Train page")
        st.stop()
    try:
        return run_id, predictor(run_id)
    except UserError as e:
        user_error(e)
        st.stop()


def user_error(e: Exception) -> None:
    """One clear sentence in the page instead of a traceback."""
    st.error(str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}", icon="🚫")


# ------------------------------------------------------------------ what runs vs what waits for a slot

def trial_slots(configs: list[dict], run_status) -> tuple[int, int]:
    """(trials whose run really runs, trials that wait for a slot) among a sweep's trials in Optuna's
    RUNNING state: the driver asks for the next trial before a slot is free, so Optuna's count of
    running trials can exceed the device's slots (issue 21: "2 running" with one CPU slot). A run runs
    once its job has a worker ("starting" or "running"); one queued, or not created yet, waits.
    `run_status(run_id)` -> the run's job status, or None."""
    running = waiting = 0
    for c in configs:
        if c.get("state") != "running":
            continue
        status = run_status(c["run_id"]) if c.get("run_id") else None
        if status in ("starting", "running"):
            running += 1
        elif status in (None, "queued"):
            waiting += 1
    return running, waiting


def run_status(run_id: str) -> str | None:
    """A run's job status from the store (None when the run is unknown)."""
    run = store().get(run_id)
    return run.get("status") if run else None


# ------------------------------------------------------------------ the internet, for ImageNet weights

@st.cache_data(show_spinner=False, ttl=60)
def internet_reachable(host: str = "download.pytorch.org", port: int = 443, timeout: float = 2.0) -> bool:
    """Can this machine reach where torchvision's ImageNet weights download from? Probed in a
    thread, so a hanging name lookup costs at most `timeout` seconds; asked again after a minute.
    LANDMARKS_OFFLINE=1 answers no without probing (an air-gapped machine, the tests)."""
    if os.environ.get("LANDMARKS_OFFLINE") == "1":
        return False
    import socket
    import threading
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


# ------------------------------------------------------------------ first visit

START_STEPS = (  # (page, label, what the step is for); each link shows its page's icon
    (nav.DATASET, "1 · Look at the data", "How many photos each landmark has, and samples of them."),
    (nav.TRAIN, "2 · Train a model", "The quick demo preset trains one in minutes on a CPU."),
    (nav.EVALUATE, "3 · Evaluate it", "Accuracy per class, and which landmarks it mixes up."),
    (nav.CLASSIFY, "4 · Classify a photo", "Upload a photo: the model names it and shows why."),
)


def start_here() -> None:
    """The four steps from data to a model that names landmarks, each a link; shown until the
    first run exists."""
    if store().list():
        return
    with st.container(border=True):
        st.markdown("**Start here**: four steps from a data set to a model that recognises landmarks.")
        for col, (page, label, text) in zip(st.columns(len(START_STEPS)), START_STEPS):
            col.page_link(page.page(), label=label)
            col.caption(text)


def loss_controls(prefix: str) -> tuple[bool, float]:
    """The log-scale toggle and the smoothing slider of the loss curves (kept for the session);
    keys `<prefix>_log_loss` and `<prefix>_smoothing`. Returns (log axis, EMA weight)."""
    from dashboard import charts
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    log = c1.toggle("Log-scale loss", key=f"{prefix}_log_loss", persist_state="session",
                    help="Plot the loss curves on a logarithmic axis: late, small improvements stay visible.")
    weight = c2.slider("Smoothing of the per-step loss", 0.0, 0.99, value=charts.SMOOTHING, step=0.01,
                       key=f"{prefix}_smoothing", persist_state="session",
                       help="The weight of an exponential moving average, as in TensorBoard: 0 draws the raw "
                            "loss, 0.99 a very smooth line. The raw loss stays behind it, faint.")
    return log, weight
