"""Train: the training settings in one form; launch queues a run and starts a worker process.

The page never trains: core.runs.jobs.launch writes a queued run to the store and starts
`python -m core.runs.worker` in its own session when the device is free. The form is validated
first (TrainConfig.validate and the data set's class count), so bad input creates no run.
"""
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from core.data.readers import detect_layout, has_clean
from core.data.versions import is_version
from core.errors import UserError
from core.runs.store import ACTIVE
from core.data.splits import split_sizes, thin_holdout, top_classes
from core.train.config import (AUGMENTATIONS, BALANCES, DEFAULT_MODEL, DEVICES, HEADS, OPTIMIZERS, PIPELINES,
                               PRECISIONS, RECIPES, STORES, SWITCHES, TrainConfig, default_classes, spec)
from core.train.config import DEFAULTS as CONFIG_DEFAULTS
from core.train.models import REGISTRY, imagenet_available
from dashboard import common as ui  # as a module: tests replace ui.internet_reachable
from dashboard import nav
from dashboard.common import (STATUS_ICON, TRAIN_FIELDS, clean_toggle, counts_of, dataset_picker, runs_frame, store,
                              synthetic_note, user_error)

FLASH_S = 20  # seconds a Cancel's message stays above the queue
AUG_LABELS = {"crop": "Random resized crop", "hflip": "Random horizontal flip",
              "vflip": "Random vertical flip", "rot90": "Random 90° rotations"}
WEIGHT_LABELS = {"imagenet": "ImageNet", "none": "None (from scratch)", "path": "Weight file…"}
OPT_LABELS = {"adam": "Adam", "sgd": "SGD (momentum 0.9)"}
BALANCE_LABELS = {"none": "None", "weighted": "Weighted loss (1/frequency)", "sampler": "Class-balanced sampler"}
RECIPE_LABELS = {"finetune": "Fine-tune", "poster": "Poster"}
RECIPE_LINES = {  # one line each, what core.train.recipes does
    "finetune": "AdamW, warm-up then cosine decay, label smoothing 0.1, horizontal flips; on pretrained weights the "
                "new head starts at zero and trains at the learning rate, pretrained layers at 0.3× with their "
                "batch-norm statistics frozen (frozen features: the head at 5×).",
    "poster": "Adam at a constant learning rate, plain cross-entropy, only the augmentations ticked: "
              "exactly the poster's recipe.",
}
HEAD_LABELS = {"softmax": "Softmax", "arcface": "ArcFace"}
HEAD_CAPTION = ("**ArcFace** learns a 512-number description of each photo and asks every photo to sit closer to "
                "its own landmark than to any other by a margin (wider for landmarks with few photos). It helps "
                "with many landmarks and few photos each, and when photos are matched to their nearest neighbours "
                "among the training photos. It needs the Fine-tune recipe.")
# every field kept for the session (page switches) and in the page's address (a reload, a bookmark);
# the URL carries a field under its widget key (?train_lr=0.01), only where it differs from the default
KEEP = dict(persist_state="session", bind="query-params")
FIELDS = TRAIN_FIELDS  # form widget key -> TrainConfig field (shared with the Runs page's “train again”)
DEFAULTS = {"train_weights_path": "", **{k: CONFIG_DEFAULTS[f] for k, f in FIELDS.items()},
            **{f"train_aug_{a}": a in CONFIG_DEFAULTS["augment"] for a in AUGMENTATIONS}}


def number(col, label: str, key: str, **kw):
    """A number input whose bounds are the config field's (so the form and validate() agree)."""
    s = spec(FIELDS[key])
    return col.number_input(label, min_value=s["lo"], max_value=s["hi"], key=key, **KEEP,
                            help=kw.pop("help", s["help"]), **kw)


# ------------------------------------------------------------------ helpers

@st.cache_data(show_spinner=False, ttl=60)
def weights_status(model: str) -> tuple[bool, str]:
    ok, note = imagenet_available(model)
    return ok, note if ok else note + " Choose **None** to train from scratch offline."


def model_title(model: str) -> str:
    """'ResNet-18' for resnet18: the model's name as its description in the form spells it."""
    return REGISTRY[model].about.split(" (")[0].split(",")[0]


def imagenet_refusal(model: str) -> str | None:
    """Why ImageNet weights cannot be had for `model` here (in the form's words), or None when they
    can: shipped, cached, or downloadable because the internet is reachable."""
    if weights_status(model)[0]:
        return None
    alt = DEFAULT_MODEL if DEFAULT_MODEL != model and weights_status(DEFAULT_MODEL)[0] else None  # offline
    other = f", or the model {model_title(alt)}, whose ImageNet weights come with the app" if alt else ""
    if REGISTRY[model].imagenet is None:
        return (f"{model_title(model)} has no ImageNet weights. Choose Weights: None (from scratch), "
                f"a weight file{other}.")
    if ui.internet_reachable():
        return None
    return (f"{model_title(model)}'s ImageNet weights are not on this machine and cannot be downloaded without "
            f"internet. Choose Weights: None (from scratch), a weight file{other}.")


def use_scratch() -> None:
    st.session_state["train_weights"] = "none"
    st.session_state["train_fix_note"] = "Weights set to **None (from scratch)**."


def use_offline_model() -> None:
    st.session_state.update(train_model=DEFAULT_MODEL, train_weights="imagenet")
    st.session_state["train_fix_note"] = f"Model set to **{model_title(DEFAULT_MODEL)}** with its ImageNet weights."


def offer_fixes(model: str) -> None:
    """The working choices, one click each, under the refusal."""
    a, b, _ = st.columns(3)
    a.button("Use Weights: None (from scratch)", key="train_fix_scratch", on_click=use_scratch)
    if DEFAULT_MODEL != model and weights_status(DEFAULT_MODEL)[0]:
        b.button(f"Use {model_title(DEFAULT_MODEL)} with ImageNet weights", key="train_fix_offline",
                 on_click=use_offline_model)


def gpu_count() -> int:
    from core.runs import jobs
    return jobs.gpu_count()


def default_weights(model: str) -> str:
    return "imagenet" if weights_status(model)[0] else "none"


def on_model_change() -> None:
    st.session_state["train_weights"] = default_weights(st.session_state["train_model"])


def apply_preset(n_classes: int) -> None:
    """Quick demo run: small and fast on a CPU (a minute or two on the demo data set)."""
    model = DEFAULT_MODEL if weights_status(DEFAULT_MODEL)[0] else "small_cnn"
    st.session_state.update({**DEFAULTS, "train_weights_path": st.session_state.get("train_weights_path", "")})
    classes = default_classes(n_classes)
    st.session_state.update(train_model=model, train_weights=default_weights(model), train_classes=classes,
                            train_classes_auto=classes, train_size=64, train_epochs=3)
    st.session_state["train_preset_note"] = True
    st.session_state["train_parent"] = None      # a preset is no longer the run "Train again" copied


# ------------------------------------------------------------------ sections

def fit_classes(n_classes: int) -> None:
    """The class count follows the data set in use (core.train.config.default_classes: the poster's
    10, or every class of a smaller set) until someone sets a value of their own: typed in the form,
    or a run's configuration brought by "Train again"."""
    ss = st.session_state
    if ss.get("train_again_note"):
        ss["train_classes_auto"] = None
    elif ss.setdefault("train_classes_auto", CONFIG_DEFAULTS["classes"]) == ss["train_classes"]:
        ss["train_classes"] = ss["train_classes_auto"] = default_classes(n_classes)


def split_note(counts: pd.Series) -> None:
    """The images each split will hold with the form's settings (core.data.splits, as training splits),
    and a warning when the holdout will be too small to read. Says nothing when the class count is
    refused (Launch says why)."""
    ss = st.session_state
    try:
        n = split_sizes(counts, int(ss["train_classes"]), float(ss["train_holdout"]), float(ss["train_val"]),
                        int(ss["train_max_images"]))
    except UserError:
        return
    st.caption(f"With these settings: {n['train']:,} training, {n['val']:,} validation and {n['holdout']:,} holdout "
               f"images over {n['classes']:,} classes.")
    if warning := thin_holdout(n["holdout"], n["classes"], planned=True):
        st.warning(warning, icon="⚠️")


def form(counts: pd.Series, model: str) -> str | None:
    """The form; returns the Weights the radio holds in this run when Launch was pressed, else None.
    Launch checks that value, the radio's own, never a copy kept elsewhere (issue 21: a copy could
    say ImageNet while the radio showed None)."""
    n_classes = len(counts)
    ok, note = weights_status(model)
    if not ok and REGISTRY[model].imagenet is not None:
        note = imagenet_refusal(model) or note   # offline: say so before anyone presses Launch
    with st.form("train_form", border=True):
        a, b, c = st.columns(3)
        weights = a.radio("Weights", list(WEIGHT_LABELS), format_func=WEIGHT_LABELS.get, key="train_weights",
                          horizontal=True, **KEEP)
        a.caption(("✅ " if ok else "⚠️ ") + note)
        a.text_input("Weight file (for “Weight file…”)", key="train_weights_path", **KEEP,
                     placeholder="/path/to/state_dict.pt or a run's checkpoints/last.pt")
        number(a, f"N most frequent classes (0 = all {n_classes:,})", "train_classes", step=1,
               help="The poster this app follows trains on the 10, 20, 30 and 50 most frequent classes.")
        a.selectbox("Class imbalance", BALANCES, format_func=BALANCE_LABELS.get, key="train_balance",
                    **KEEP, help=spec("balance")["help"])
        b.selectbox("Recipe", RECIPES, format_func=RECIPE_LABELS.get, key="train_recipe", **KEEP,
                    help=spec("recipe")["help"])
        b.caption("  \n".join(f"**{RECIPE_LABELS[r]}**: {RECIPE_LINES[r]}" for r in RECIPES))
        b.radio("Head", HEADS, format_func=HEAD_LABELS.get, key="train_head", horizontal=True, **KEEP,
                help=spec("head")["help"])
        b.caption(HEAD_CAPTION)
        number(b, "Learning rate", "train_lr", step=1e-4, format="%.5f",
               help="Fine-tune: the new head's (pretrained layers 0.3×); poster: every layer's.")
        number(b, "Epochs", "train_epochs", step=1)
        b.selectbox("Optimizer", OPTIMIZERS, format_func=OPT_LABELS.get, key="train_optimizer",
                    **KEEP)
        number(b, "Batch size", "train_batch", step=8)
        number(c, "Image size (px, square)", "train_size", step=16,
               help="224 px is the poster's size (for a GPU); 64 px is plenty for the demo on a CPU.")
        c.markdown("**Augmentation**")
        for aug in AUGMENTATIONS:
            c.checkbox(AUG_LABELS[aug], key=f"train_aug_{aug}", **KEEP)
        c.checkbox("Frozen feature extractor (train only the head)", key="train_freeze", **KEEP)
        c.checkbox("Test-time flip averaging (evaluation)", key="train_tta", **KEEP,
                   help=spec("tta")["help"])
        with st.expander("Splits, device, pipeline and speed"):
            d, e, f, g = st.columns(4)
            number(d, "Holdout fraction (split off first)", "train_holdout", step=0.01, format="%.3f")
            number(d, "Validation fraction (of the rest)", "train_val", step=0.05, format="%.3f")
            number(e, "Seed", "train_seed", step=1)
            e.selectbox("Device", DEVICES, key="train_device", **KEEP)
            if (gpus := gpu_count()) > 1:      # one run on several GPUs (torch.distributed); else one process
                number(e, f"GPUs (this machine has {gpus})", "train_nproc", step=1,
                       help="Train this run on N GPUs at once (DistributedDataParallel): each takes the batch "
                            "size per step. It waits until N GPUs are free and holds them all.")
            f.selectbox("Pipeline", PIPELINES, key="train_pipeline", **KEEP,
                        help=spec("pipeline")["help"])
            f.selectbox("Prepared store", STORES, key="train_store", persist_state="session",
                        help=spec("store")["help"])
            number(f, "Max images (0 = all)", "train_max_images", step=100)
            g.selectbox("Precision", PRECISIONS, key="train_precision", **KEEP,
                        help=spec("precision")["help"])
            g.selectbox("Channels last", SWITCHES, key="train_channels_last", **KEEP,
                        help=spec("channels_last")["help"])
            g.selectbox("Fused optimizer", SWITCHES, key="train_fused", **KEEP,
                        help=spec("fused")["help"])
            g.selectbox("torch.compile", SWITCHES, key="train_compile", **KEEP,
                        help=spec("compile")["help"])
        split_note(counts)
        launched = st.form_submit_button("🚀 Launch training run", type="primary", key="train_launch")
    return weights if launched else None


class ImageNetRefused(UserError):
    """ImageNet weights chosen where they cannot be had: refused before anything is queued."""


def build_config(root: Path, model: str, weights: str) -> TrainConfig:
    """`model` and `weights`: the values the Model select box and the Weights radio returned in this run."""
    ss = st.session_state
    if weights == "imagenet" and (refusal := imagenet_refusal(model)):
        raise ImageNetRefused(refusal)
    if weights == "path":
        weights = ss["train_weights_path"].strip()
        if not weights:
            raise UserError("Type the path of a weight file, or choose ImageNet or None.")
        from core import access  # the browser may open weights only under the data roots and runs/
        weights = str(access.confine(weights, "weight file", access.weight_roots()))
        if not Path(weights).expanduser().is_file():
            raise UserError(f"Weight file {weights} does not exist.")
    values = {f: type(CONFIG_DEFAULTS[f])(ss[k]) for k, f in FIELDS.items()}
    return TrainConfig(
        data=str(root), model=model, weights=weights, **values,
        augment=tuple(a for a in AUGMENTATIONS if ss[f"train_aug_{a}"]),
        clean=bool(ss.get("train_clean")) and has_clean(root),
        new_holdout=bool(ss.get("train_new_holdout")) and is_version(root),
        extra={ui.PARENT: ss["train_parent"]} if ss.get("train_parent") else {},   # "Train again like this"
    ).validate()


def submit(root: Path, counts: pd.Series, model: str, weights: str) -> None:
    """Validate, then queue the run; bad input shows one sentence and creates nothing."""
    from core.runs.jobs import launch
    try:
        cfg = build_config(root, model, weights)
        top_classes(counts, cfg.classes)
        st.session_state["train_last_run"] = launch(cfg, store())
    except ImageNetRefused as e:
        user_error(e)
        offer_fixes(model)
    except UserError as e:
        user_error(e)
    except Exception as e:  # noqa: BLE001 - e.g. the store is not writable: say so, keep the page
        user_error(e)


def on_cancel(run_id: str) -> None:
    """As the Runs page's Cancel: a queued run at once, a running one at its next step."""
    from core.runs import jobs
    what = jobs.cancel(store(), run_id)
    if what == "cancelled":
        text = f"Cancelled {run_id} before it started."
    elif what == "requested":
        text = f"Cancel requested: {run_id} stops at its next step" + (
            " and keeps its last checkpoint." if store().run(run_id).has_checkpoint()
            else "; it has no checkpoint yet, so it cannot be resumed.")
    else:
        text = f"{run_id} had already stopped."
    st.session_state["train_flash"] = (text, time.time())


def active_runs() -> pd.DataFrame:
    return runs_frame(ACTIVE)


def live(active: bool) -> None:
    """The last launched run's status and the queue; refreshes only while something is active."""
    @st.fragment(run_every=2.0 if active else None)
    def view():
        last = st.session_state.get("train_last_run")
        run = store().get(last) if last else None
        if run:
            icon = STATUS_ICON.get(run["status"], "")
            text = f"Launched run **{last}** — status: {icon} {run['status']}."
            if run["status"] == "failed":
                st.error(f"{text} {run.get('error') or ''}", icon="🚫")
            else:
                st.success(text, icon="✅")
            st.page_link(nav.RUNS.page(), label="Follow it on the Runs page")
        st.subheader("Queue")
        df = active_runs()
        if df.empty and active:
            st.rerun(scope="app")  # stop refreshing
        flash = st.session_state.get("train_flash")
        if flash and time.time() - flash[1] < FLASH_S:    # kept a while: the queue may refresh meanwhile
            st.info(flash[0], icon="⏹️")
        if df.empty:
            st.caption("Nothing is queued or running. One run trains at a time per device; the rest wait here.")
            return
        ids = df["run_id"].tolist()
        df["status"] = [f"{STATUS_ICON.get(s, '')} {s}" for s in df["status"]]
        st.dataframe(df[["run_id", "status", "model", "classes", "epochs", "image_size", "batch", "lr", "created"]],
                     hide_index=True, column_config={"created": st.column_config.DatetimeColumn(format="HH:mm:ss"),
                                                     "lr": st.column_config.NumberColumn(format="%.5f")})
        cols = st.columns(min(len(ids), 4))
        for i, run_id in enumerate(ids):
            cols[i % len(cols)].button(f"⏹️ Cancel {run_id}", key=f"train_cancel_{run_id}", on_click=on_cancel,
                                       args=(run_id,), help="A queued run is dropped at once; a running one stops "
                                                            "at its next step and keeps its last checkpoint.")
    view()


# ------------------------------------------------------------------ page

st.session_state.setdefault("train_last_run", None)
st.session_state.setdefault("train_model", DEFAULT_MODEL)
st.session_state.setdefault("train_weights", default_weights(st.session_state["train_model"]))
for k, v in DEFAULTS.items():
    st.session_state.setdefault(k, v)

st.title("🚀 Train")
st.caption("Choose a model and its training settings (number of classes, learning rate, epochs, optimizer, "
           "batch size, augmentation), then launch. Runs train in their own process; closing the tab does not "
           "stop them.")

path = dataset_picker("train_dataset")
counts = None
if not path:
    st.info("Type the folder of a data set, or pick one above.", icon="ℹ️")
else:
    try:
        root = Path(path).expanduser().resolve()
        detect_layout(root)
        clean = clean_toggle(root, "train_clean", "Train on GLDv2's cleaned list of images per landmark "
                                                  "instead of every row of train.csv.")
        counts = counts_of(root, clean)
        if is_version(root):     # a data set version (issue 22): its runs keep the base's holdout unless asked
            st.checkbox("Draw a new holdout", key="train_new_holdout", persist_state="session",
                        help="Off: the base data set's holdout, less the excluded photos, so that runs on the two "
                             "compare on the same photos. On: drawn afresh from this version's photos.")
    except UserError as e:
        user_error(e)
if counts is not None:
    fit_classes(len(counts))
    synthetic_note(root)
    st.caption(f"{len(counts):,} classes, {int(counts.sum()):,} images.")
    model = st.selectbox("Model", list(REGISTRY), key="train_model", on_change=on_model_change, **KEEP)
    st.caption(REGISTRY[model].about)
    st.button("⚡ Quick demo run preset", on_click=apply_preset, args=(len(counts),), key="train_preset",
              help="Fills small values (64 px, 3 epochs, up to 10 classes) so a run finishes in minutes on a CPU.")
    if st.session_state.pop("train_again_note", False):
        st.info("The form holds the configuration of the run you chose: change what you like, then "
                "press **Launch training run**.", icon="🔁")
    if fixed := st.session_state.pop("train_fix_note", None):
        st.info(f"{fixed} Press **Launch training run**.", icon="✅")
    if st.session_state.pop("train_preset_note", False):
        st.info("Preset filled in: small images, 3 epochs. Press **Launch training run**.", icon="⚡")
    if (weights := form(counts, model)) is not None:
        submit(root, counts, model, weights)

live(not active_runs().empty)
