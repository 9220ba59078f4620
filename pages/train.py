"""Train: the seed's knobs in one form; launch queues a run and starts a worker process.

The page never trains: core.jobs.launch writes a queued run to the store and starts
`python -m core.runs.worker` in its own session when the device is free. The form is validated
first (TrainConfig.validate and the data set's class count), so bad input creates no run.
"""
from dashboard.common import (STATUS_ICON, clean_toggle, counts_of, dataset_picker, runs_frame,  # noqa: I001
                              store, synthetic_note, user_error)

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.errors import StreamlitAPIException  # noqa: E402

from core.train.config import AUGMENTATIONS, DEVICES, OPTIMIZERS, PIPELINES, TrainConfig  # noqa: E402
from core.data.readers import detect_layout, has_clean  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.train.models import REGISTRY, imagenet_available  # noqa: E402
from core.runs.store import ACTIVE  # noqa: E402

RUNS_PAGE = Path(__file__).resolve().parent / "runs.py"
AUG_LABELS = {"crop": "Random resized crop", "hflip": "Random horizontal flip",
              "vflip": "Random vertical flip", "rot90": "Random 90° rotations"}
WEIGHT_LABELS = {"imagenet": "ImageNet", "none": "None (from scratch)", "path": "Weight file…"}
OPT_LABELS = {"adam": "Adam", "sgd": "SGD (momentum 0.9)"}
DEFAULTS = dict(  # the seed poster's final settings (Adam, lr 0.001, 10 epochs, batch 32, no augmentation)
    train_weights_path="", train_classes=10, train_lr=1e-3, train_epochs=10, train_optimizer="adam",
    train_batch=32, train_size=224, train_freeze=False, train_holdout=0.01, train_val=0.2, train_seed=0,
    train_device="auto", train_pipeline="prepared", train_max_images=0,
    **{f"train_aug_{a}": False for a in AUGMENTATIONS})


# ------------------------------------------------------------------ helpers

@st.cache_data(show_spinner=False, ttl=60)
def weights_status(model: str) -> tuple[bool, str]:
    ok, note = imagenet_available(model)
    return ok, note if ok else note + " Choose **None** to train from scratch offline."


def default_weights(model: str) -> str:
    return "imagenet" if weights_status(model)[0] else "none"


def default_model() -> str:
    return "efficientnet_lite0" if "efficientnet_lite0" in REGISTRY else next(iter(REGISTRY))


def on_model_change() -> None:
    st.session_state["train_weights"] = default_weights(st.session_state["train_model"])


def apply_preset(n_classes: int) -> None:
    """Quick demo run: small and fast on a CPU (a minute or two on the demo data set)."""
    model = "efficientnet_lite0" if weights_status("efficientnet_lite0")[0] else "small_cnn"
    st.session_state.update(train_model=model, train_weights=default_weights(model),
                            train_classes=min(10, n_classes), train_size=64, train_epochs=3, train_batch=32,
                            train_lr=1e-3, train_optimizer="adam", train_freeze=False, train_max_images=0,
                            train_pipeline="prepared", train_device="auto",
                            **{f"train_aug_{a}": False for a in AUGMENTATIONS})
    st.session_state["train_preset_note"] = True


# ------------------------------------------------------------------ sections

def form(n_classes: int) -> bool:
    ss = st.session_state
    ok, note = weights_status(ss["train_model"])
    with st.form("train_form", border=True):
        a, b, c = st.columns(3)
        a.radio("Weights", list(WEIGHT_LABELS), format_func=WEIGHT_LABELS.get, key="train_weights",
                horizontal=True, persist_state="session")
        a.caption(("✅ " if ok else "⚠️ ") + note)
        a.text_input("Weight file (for “Weight file…”)", key="train_weights_path", persist_state="session",
                     placeholder="/path/to/state_dict.pt or a run's checkpoints/last.pt")
        a.number_input(f"N most frequent classes (0 = all {n_classes:,})", min_value=0, step=1,
                       key="train_classes", persist_state="session",
                       help="The seed trains on the 10, 20, 30 and 50 most frequent classes.")
        b.number_input("Learning rate", min_value=1e-6, max_value=10.0, step=1e-4, format="%.5f",
                       key="train_lr", persist_state="session")
        b.number_input("Epochs", min_value=1, max_value=1000, step=1, key="train_epochs", persist_state="session")
        b.selectbox("Optimizer", OPTIMIZERS, format_func=OPT_LABELS.get, key="train_optimizer",
                    persist_state="session")
        b.number_input("Batch size", min_value=1, max_value=4096, step=8, key="train_batch",
                       persist_state="session")
        c.number_input("Image size (px, square)", min_value=16, max_value=1024, step=16, key="train_size",
                       persist_state="session",
                       help="224 is the seed's size (for a GPU); 64 is plenty for the demo on a CPU.")
        c.markdown("**Augmentation**")
        for aug in AUGMENTATIONS:
            c.checkbox(AUG_LABELS[aug], key=f"train_aug_{aug}", persist_state="session")
        c.checkbox("Frozen feature extractor (train only the head)", key="train_freeze", persist_state="session")
        with st.expander("Splits, device and pipeline"):
            d, e, f = st.columns(3)
            d.number_input("Holdout fraction (split off first)", min_value=0.0, max_value=0.49, step=0.01,
                           format="%.3f", key="train_holdout", persist_state="session")
            d.number_input("Validation fraction (of the rest)", min_value=0.01, max_value=0.89, step=0.05,
                           format="%.3f", key="train_val", persist_state="session")
            e.number_input("Seed", min_value=0, step=1, key="train_seed", persist_state="session")
            e.selectbox("Device", DEVICES, key="train_device", persist_state="session")
            f.selectbox("Pipeline", PIPELINES, key="train_pipeline", persist_state="session",
                        help="prepared: decode every image once (cached), augment in batches; "
                             "plain: decode with PIL every epoch.")
            f.number_input("Max images (0 = all)", min_value=0, step=100, key="train_max_images",
                           persist_state="session", help="Cap the images used, for a quick look.")
        return st.form_submit_button("🚀 Launch training run", type="primary", key="train_launch")


def build_config(root: Path) -> TrainConfig:
    ss = st.session_state
    weights = ss["train_weights"]
    if weights == "path":
        weights = ss["train_weights_path"].strip()
        if not weights:
            raise UserError("Type the path of a weight file, or choose ImageNet or None.")
        from core import paths  # the browser may open weights only under the data roots and runs/
        weights = str(paths.confine(weights, "weight file", paths.weight_roots()))
        if not Path(weights).expanduser().is_file():
            raise UserError(f"Weight file {weights} does not exist.")
    return TrainConfig(
        data=str(root), model=ss["train_model"], weights=weights, classes=int(ss["train_classes"]),
        epochs=int(ss["train_epochs"]), batch_size=int(ss["train_batch"]), lr=float(ss["train_lr"]),
        optimizer=ss["train_optimizer"], image_size=int(ss["train_size"]),
        augment=tuple(a for a in AUGMENTATIONS if ss[f"train_aug_{a}"]), freeze=bool(ss["train_freeze"]),
        holdout=float(ss["train_holdout"]), val=float(ss["train_val"]), seed=int(ss["train_seed"]),
        device=ss["train_device"], pipeline=ss["train_pipeline"], max_images=int(ss["train_max_images"]),
        clean=bool(ss.get("train_clean")) and has_clean(root),
    ).validate()


def submit(root: Path, counts: pd.Series) -> None:
    """Validate, then queue the run; bad input shows one sentence and creates nothing."""
    from core.runs.jobs import launch
    from core.data.splits import top_classes
    try:
        cfg = build_config(root)
        top_classes(counts, cfg.classes)
        st.session_state["train_last_run"] = launch(cfg, store())
    except UserError as e:
        user_error(e)
    except Exception as e:  # noqa: BLE001 - e.g. the store is not writable: say so, keep the page
        user_error(e)


def runs_link() -> None:
    try:
        st.page_link(str(RUNS_PAGE), label="Follow it on the Runs page", icon="📈")
    except StreamlitAPIException:  # page not registered (the page runs on its own, e.g. in a test)
        st.caption("Follow it on the **Runs** page.")


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
            runs_link()
        st.subheader("Queue")
        df = active_runs()
        if df.empty:
            st.caption("Nothing is queued or running. One run trains at a time per device; the rest wait here.")
            if active:
                st.rerun(scope="app")  # stop refreshing
            return
        df["status"] = [f"{STATUS_ICON.get(s, '')} {s}" for s in df["status"]]
        st.dataframe(df[["run_id", "status", "model", "classes", "epochs", "image_size", "batch", "lr", "created"]],
                     hide_index=True, column_config={"created": st.column_config.DatetimeColumn(format="HH:mm:ss"),
                                                     "lr": st.column_config.NumberColumn(format="%.5f")})
    view()


# ------------------------------------------------------------------ page

st.session_state.setdefault("train_last_run", None)
st.session_state.setdefault("train_model", default_model())
st.session_state.setdefault("train_weights", default_weights(st.session_state["train_model"]))
for k, v in DEFAULTS.items():
    st.session_state.setdefault(k, v)

st.title("🚀 Train")
st.caption("The seed's knobs: model, N classes, learning rate, epochs, optimizer, batch size, augmentation "
           "and frozen features. Runs train in their own process; closing the tab does not stop them.")

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
    except UserError as e:
        user_error(e)
if counts is not None:
    synthetic_note(root)
    st.caption(f"{len(counts):,} classes, {int(counts.sum()):,} images.")
    st.selectbox("Model", list(REGISTRY), key="train_model", on_change=on_model_change, persist_state="session")
    st.caption(REGISTRY[st.session_state["train_model"]].about)
    st.button("⚡ Quick demo run preset", on_click=apply_preset, args=(len(counts),), key="train_preset",
              help="Fills small values (64 px, 3 epochs, up to 10 classes) so a run finishes in minutes on a CPU.")
    if st.session_state.pop("train_preset_note", False):
        st.info("Preset filled in: small images, 3 epochs. Press **Launch training run**.", icon="⚡")
    if form(len(counts)):
        submit(root, counts)

live(not active_runs().empty)
