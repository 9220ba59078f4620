"""The forms of the Sweeps page that create a sweep: a search space over the training settings
(New sweep), and the poster's holdout table as one action (Poster's table). Each validates every
configuration before anything is stored, creates the Optuna study and queues its driver job; the
settings' defaults and bounds come from core.train.config, as on the Train page."""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from core.errors import UserError
from core.runs import jobs, reproduce, sweeps
from core.train.config import DEFAULT_MODEL, DEVICES, OPTIMIZERS, TrainConfig, default_classes, spec
from core.train.config import DEFAULTS as CONFIG_DEFAULTS
from dashboard.common import counts_of, dataset_picker, store, synthetic_note, user_error
from dashboard.sweep_charts import PCT
from dashboard.sweep_study import forget_cache

GRID = sweeps.SAMPLERS[0]          # every combination of the search space: the default sampler, and the poster's
SAMPLER_LABELS = {GRID: f"{GRID} (every combination)", "tpe": "tpe (Optuna's Bayesian search)"}  # else its name
POSTER_GRID = "lr=0.01,0.005,0.001\noptimizer=adam,sgd\nbatch_size=16,24,32,48,96\nepochs=1,3,5,10"
POSTER_MODELS = list(dict.fromkeys(m for m, _ in reproduce.POSTER))     # the poster's rows: resnet18, vgg16
POSTER_CLASSES = sorted({c for _, c in reproduce.POSTER})               # 10, 20, 30, 50
# form widget key -> TrainConfig field (defaults and bounds from the dataclass, as on the Train page)
FIELDS = dict(sw_classes="classes", sw_epochs="epochs", sw_batch="batch_size", sw_lr="lr", sw_optimizer="optimizer",
              sw_size="image_size", sw_holdout="holdout", sw_val="val", sw_seed="seed", sw_device="device",
              sw_max_images="max_images")
SS_DEFAULTS = {**{k: CONFIG_DEFAULTS[f] for k, f in FIELDS.items()}, "sw_grid": "lr=0.01,0.001\noptimizer=adam,sgd",
               "sw_sampler": GRID, "sw_seeds": "", "sw_trials": 20, "sw_prune": True, "sw_name": "",
               "sw_model": DEFAULT_MODEL, "rp_quick": True, "rp_seeds": "", "rp_classes": POSTER_CLASSES,
               "rp_models": POSTER_MODELS, "rp_epochs": CONFIG_DEFAULTS["epochs"]}    # the poster's 10


def session_defaults() -> None:
    """The forms' session keys, set once per session (a choice survives page switches)."""
    for k, v in SS_DEFAULTS.items():
        st.session_state.setdefault(k, v)
    st.session_state.setdefault("sw_weights", "imagenet" if imagenet_ok(st.session_state["sw_model"]) else "none")


@st.cache_data(show_spinner=False, ttl=60)
def imagenet_ok(model: str) -> bool:
    from core.train.models import imagenet_available
    return bool(imagenet_available(model)[0])


def fit_classes(root: Path) -> None:
    """The class count follows the data set in use (core.train.config.default_classes: the poster's 10,
    or every class of a smaller set) until someone types a value of their own, as on the Train page."""
    ss = st.session_state
    try:
        n = len(counts_of(root))
    except UserError:
        return                                   # an unreadable folder: Launch says why
    if ss.setdefault("sw_classes_auto", CONFIG_DEFAULTS["classes"]) == ss["sw_classes"]:
        ss["sw_classes"] = ss["sw_classes_auto"] = default_classes(n)


def on_model_change() -> None:
    st.session_state["sw_weights"] = "imagenet" if imagenet_ok(st.session_state["sw_model"]) else "none"


def apply_poster_grid() -> None:
    st.session_state.update(sw_grid=POSTER_GRID, sw_sampler=GRID)
    st.session_state["sw_preset_note"] = True


def number(col, label: str, key: str, **kw):
    s = spec(FIELDS[key])
    return col.number_input(label, min_value=s["lo"], max_value=s["hi"], key=key, help=kw.pop("help", s["help"]),
                            persist_state="session", **kw)


def grid_lines(text: str) -> list[str]:
    """The text area's lines: blank lines and # comments dropped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


SEEDS_HELP = ("Two or more seeds, such as 0,1,2: each configuration trains one run per seed on one shared split "
              "(a seed group), and its figure is the group's mean ± sd. Empty: one run per configuration.")


def seeds_of(key: str) -> list[int] | None:
    """The form's Seeds field: None when empty, else the checked list (core.runs.groups.parse_seeds)."""
    from core.runs.groups import parse_seeds
    text = str(st.session_state.get(key) or "").strip()
    try:
        return parse_seeds(text) if text else None
    except UserError:
        raise UserError(f"Seeds take two or more different whole numbers of 0 or more, such as 0,1,2; got {text!r}.") \
            from None


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


def _pick_root(key: str) -> Path | None:
    """The data set chosen in this form's picker (with its synthetic note), or None and a hint."""
    path = dataset_picker(key)
    if not path:
        st.info("Type the folder of a data set, or pick one above.", icon="ℹ️")
        return None
    root = Path(path).expanduser().resolve()
    synthetic_note(root)
    return root


def new_sweep_tab() -> None:
    from core.train.models import REGISTRY
    ss = st.session_state
    st.caption("Every configuration trains as an ordinary run in the one queue (one per GPU, one on the CPU), "
               "and shows on the Runs page labelled with its sweep.")
    root = _pick_root("sweep_dataset")
    if root is None:
        return
    fit_classes(root)
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
                    format_func=lambda s: SAMPLER_LABELS.get(s, s))
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
        number(c, "Seed", "sw_seed", step=1, help="The split's, the initialisation's and the batches' seed (with "
               "Seeds below: unused, each run takes its own and the split the first's).")
        c.text_input("Seeds (a seed group per configuration)", key="sw_seeds", placeholder="0,1,2",
                     persist_state="session", help=SEEDS_HELP)
        c.selectbox("Device", DEVICES, key="sw_device", persist_state="session")
        number(c, "Max images (0 = all)", "sw_max_images", step=100)
        st.caption("The settings are every trial's base; the search space overrides them per trial.")
        go = st.form_submit_button("🔬 Launch sweep", type="primary", key="sw_launch")
    if go:
        try:
            name, cfg, space = build_sweep(root)
            seeds = seeds_of("sw_seeds")
            start(name, lambda: sweeps.create(name, cfg, space, ss["sw_sampler"], int(ss["sw_trials"]),
                                              bool(ss["sw_prune"]), None, seeds=seeds))  # a grid has as many as it has
        except UserError as e:
            user_error(e)
        except Exception as e:  # noqa: BLE001 - e.g. the store or the sweep database is not writable
            user_error(e)


# ------------------------------------------------------------------ the poster's table as one action

def poster_tab() -> None:
    from core.train.models import REGISTRY
    ss = st.session_state
    st.markdown("The poster's holdout table as one action: ResNet-18 at 10/20/30/50 classes and VGG-16 at 10/20 "
                "(Adam, lr 0.001, 10 epochs, 1% holdout then 80/20), with the poster's numbers beside this run's. "
                "Rows that need more classes than the data set has are skipped, and the table names them; "
                "on a set smaller than every row, each model trains on all its classes. "
                "The table fills in on the **Results** tab as its runs finish.")
    rows = [{"model": m, "classes": c, "train": p[0], "val": p[1], "holdout": p[2]}
            for (m, c), p in reproduce.POSTER.items()]
    st.dataframe(rows, hide_index=True, key="rp_poster", column_config={
        "model": "Model", "classes": "Classes", "train": st.column_config.NumberColumn("Poster train", format=PCT),
        "val": st.column_config.NumberColumn("Poster val", format=PCT),
        "holdout": st.column_config.NumberColumn("Poster holdout", format=PCT)})
    root = _pick_root("repro_dataset")
    if root is None:
        return
    with st.form("repro_form", border=True):
        a, b = st.columns(2)
        a.multiselect("Classes (the poster's, or type other numbers)", POSTER_CLASSES, key="rp_classes",
                      accept_new_options=True, persist_state="session")
        a.multiselect("Models", list(REGISTRY), key="rp_models", persist_state="session",
                      help=f"The poster's are {' and '.join(POSTER_MODELS)}; a model whose ImageNet weights cannot "
                           f"be had here is stood in for by {reproduce.STAND_IN}, and the table says so.")
        b.number_input("Epochs", min_value=1, max_value=1000, step=1, key="rp_epochs", persist_state="session")
        b.text_input("Seeds (a seed group per row)", key="rp_seeds", placeholder="0,1,2", persist_state="session",
                     help=SEEDS_HELP)
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
        seeds = seeds_of("rp_seeds")
        full = classes == POSTER_CLASSES and models is not None and set(models) == set(POSTER_MODELS)
        with st.spinner("Checking which models' ImageNet weights can be had…"):
            name, cfg, configs, meta = reproduce.plan(str(root), None if full else classes, None if full else models,
                                                      int(ss["rp_epochs"]), bool(ss["rp_quick"]),
                                                      available=len(counts_of(root)), seeds=seeds)  # rows it can hold
        start(name, lambda: sweeps.create(name, cfg, configs=configs, kind="reproduce", meta=meta, seeds=seeds))
    except UserError as e:
        user_error(e)
    except Exception as e:  # noqa: BLE001 - e.g. the store or the sweep database is not writable
        user_error(e)


