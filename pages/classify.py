"""Classify: upload photos (or take a holdout sample), see the top-5 classes of a finished run,
and explain the decision with every registered attribution method (core.explain.METHODS: its label,
legend, colour bar and cost come from its class), each scored for faithfulness."""
from dashboard.common import run_and_predictor, store, user_error

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.data.readers import open_image
from core.errors import UserError
from core.serve import embeddings
from core.serve.predictor import current_calibration
from core.explain import METHODS, SCALE_NOTE, colorbar, explain_one, legend, render, to_png_bytes
from core.data.uploads import (MAX_FILES_PER_UPLOAD, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, UPLOAD_TYPES,
                               check_file_count, limits_text, load_upload)

FAITH_COLUMNS = {  # Petsiuk et al. 2018 (RISE) §4, with a blurred copy of the image as baseline
    "deletion AUC": st.column_config.NumberColumn(format="%.3f", help=(
        "Class probability while the most salient pixels are replaced by a blurred copy first; lower is better.")),
    "insertion AUC": st.column_config.NumberColumn(format="%.3f", help=(
        "Class probability while the most salient pixels are put back into a blurred copy first; "
        "higher is better.")),
    "score": st.column_config.NumberColumn(format="%.3f", help=(
        "insertion AUC − deletion AUC, from −1 to 1. About 0: no better than a random order of pixels; "
        "below 0: worse than random.")),
    "ms": st.column_config.NumberColumn("map ms", format="%.0f", help="Server-side time to compute the map."),
}
TOP_CLASS = -1  # sentinel in the class select box: explain whatever the model predicts
DISPLAY_PX = 448  # side of the explained photo as shown: the map is resized smoothly to it
FAITH_LINE = ("**Faithfulness on this image**: do the pixels a map marks matter to the model? Blurring them "
              "first should make the class probability fall fast, and restoring them first should make it rise "
              "fast. Score = insertion AUC − deletion AUC, from −1 to 1, higher is more faithful; about 0 is no "
              "better than a random order of pixels, and below 0 is worse than random (the model relies on "
              "pixels the map ranks low).")

st.session_state.setdefault("clf_methods", ["saliency", "gradcam"])
st.session_state.setdefault("clf_alpha", 0.5)
st.session_state.setdefault("clf_target", TOP_CLASS)
st.session_state.setdefault("clf_samples", {})  # run_id -> (holdout image path, true class)
st.session_state.setdefault("clf_classifier", "softmax")  # or "knn", offered once the run has embeddings

st.title("🔍 Classify")
st.caption("Upload landmark photos and see what a trained model thinks they are, and which pixels "
           "it looked at (Simonyan, Vedaldi & Zisserman 2014, and later attribution methods).")

run_id, pred = run_and_predictor("clf_run")
pred = pred.with_calibration(current_calibration(store().run(run_id)))   # read each rerun: calibrated since loading


# ------------------------------------------------------------------ inputs

@st.cache_data(show_spinner=False, max_entries=16)
def holdout(run_id: str, mtime: float) -> list[tuple[str, int]]:
    """(path, true class index) of the run's holdout images: never seen in training."""
    f = store().run(run_id).predictions_file("holdout")
    if not f.exists():
        return []
    df = pd.read_parquet(f, columns=["path", "target"])
    return list(zip(df["path"].astype(str).tolist(), df["target"].astype(int).tolist()))


def sample_buttons() -> None:
    f = store().run(run_id).predictions_file("holdout")
    rows = holdout(run_id, f.stat().st_mtime if f.exists() else 0.0)
    samples = st.session_state["clf_samples"]
    if not rows:
        return
    c1, c2 = st.columns([3, 1])
    if c1.button("🎲 Try a sample image from the holdout set", key="clf_sample_btn",
                 help="A random image the model never saw in training, for when no photo is at hand."):
        samples[run_id] = rows[int(np.random.default_rng().integers(len(rows)))]
    if c2.button("Remove the sample", key="clf_sample_clear", disabled=run_id not in samples):
        samples.pop(run_id, None)


uploads = st.file_uploader("Photos", type=list(UPLOAD_TYPES), accept_multiple_files=True, key="clf_upload")
st.caption(limits_text(MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS) + f" At most {MAX_FILES_PER_UPLOAD} photos at a time.")
sample_buttons()

images: list[tuple[str, object]] = []  # (name, RGB PIL image)
try:  # too many files: classify none of them (the sentence says how many are allowed)
    check_file_count(len(uploads or []))
except UserError as e:
    user_error(e)
    uploads = []
for uf in uploads or []:
    try:
        images.append((uf.name, load_upload(uf.getvalue(), uf.name)))
    except UserError as e:
        user_error(e)
sample = st.session_state["clf_samples"].get(run_id)
if sample:
    path, true = sample
    truth = pred.names[true] if 0 <= true < len(pred.names) else "?"
    try:
        images.append((f"holdout sample {Path(path).name} (true class: {truth})", open_image(path)))
    except (UserError, OSError) as e:
        user_error(UserError(f"The holdout image {path} cannot be read ({e}); try another sample."))
if not images:
    st.info("Upload a photo above, or try a sample image from the run's holdout set.", icon="📷")
    st.stop()


# ------------------------------------------------------------------ top-5

tta = st.toggle("Average with the mirror image", value=bool(pred.cfg.tta), key=f"clf_tta_{run_id}",
                help="Test-time flip averaging: the mean of the photo's and its mirror image's probabilities "
                     "(on by default where the run evaluated that way). Two forward passes instead of one.")


@st.cache_resource(show_spinner=False, max_entries=4)
def knn_store(run_id: str, rows_mtime: float):
    """The run's embeddings with their faiss index, once per embed (the rows file is written last)."""
    return embeddings.load(store().run(run_id))


def classifier_choice():
    """The run's embeddings when the user picks the nearest-neighbour classifier, else None (softmax).
    The choice is offered only once the run has embeddings (python -m core embed RUN)."""
    rows_file = store().run(run_id).embedding_rows_file
    if not rows_file.exists():
        return None
    emb = knn_store(run_id, rows_file.stat().st_mtime)
    if emb is None:
        return None
    choice = st.radio("Classifier", ["softmax", "knn"], key="clf_classifier", horizontal=True,
                      format_func={"softmax": "softmax", "knn": "nearest neighbours"}.get,
                      help="softmax: the network's own answer. Nearest neighbours: the "
                           f"{embeddings.K_CLASSIFY} most similar training photos vote for their class, weighted "
                           "by similarity; the confidence is the similarity of the winning class's closest photo.")
    if choice != "knn":
        return None
    if embeddings.stale(store().run(run_id)):
        st.caption("These embeddings were computed on an older checkpoint: python -m core embed "
                   f"{run_id} brings them up to date.")
    return emb


emb = classifier_choice()


def model_key() -> str:
    c = pred.calibration or {}
    return f"{run_id}:{store().run(run_id).checkpoint_mtime()}:{c.get('temperature')}:{c.get('threshold')}"


def image_key(image) -> str:
    """sha1 of the photo's pixels, size and mode: the same photo on every rerun, whatever else changed."""
    h = hashlib.sha1(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


@st.cache_data(show_spinner=False, max_entries=64)
def prediction(model_key: str, image_key: str, tta: bool, _image) -> tuple[object, dict, float]:
    """Input tensor, answer (top-5, calibrated, rejected) and its time, once per run, checkpoint,
    calibration, photo and TTA: changing the explanation methods, the class or the opacity reruns the
    page without another forward pass."""
    t0 = time.perf_counter()
    x = pred.tensor(_image)
    answer = pred.answer(x, 5, tta=tta)
    return x, answer, (time.perf_counter() - t0) * 1000


@st.cache_data(show_spinner=False, max_entries=64)
def knn_prediction(model_key: str, image_key: str, rows_mtime: float, _image) -> tuple[object, dict, float]:
    """Input tensor and the kNN answer (core.serve.embeddings.answer: top classes, the photos that voted)."""
    t0 = time.perf_counter()
    x = pred.tensor(_image)
    answer = embeddings.answer(emb, pred, x)
    return x, answer, (time.perf_counter() - t0) * 1000


def top5(image) -> tuple[object, dict, float]:
    if emb is not None:
        mtime = store().run(run_id).embedding_rows_file.stat().st_mtime
        return knn_prediction(model_key(), image_key(image), mtime, image)
    return prediction(model_key(), image_key(image), bool(tta), image)


def show_knn(name: str, image, answer: dict, ms: float) -> None:
    """The kNN answer: its classes by similarity, and the training photos that voted (the quickest
    way to see why: the label's fault or the model's)."""
    left, right = st.columns([1, 2])
    left.image(image, caption=name, width="stretch")
    df = pd.DataFrame([{"class": r["name"], "label": r["label"], "similarity": r["similarity"]}
                       for r in answer["top"]])
    right.dataframe(df, hide_index=True, width="stretch", column_config={
        "similarity": st.column_config.ProgressColumn("similarity", format="%.3f", min_value=0.0, max_value=1.0)})
    right.caption(f"Nearest neighbours in {ms:.0f} ms: the {answer['k']} most similar training photos vote for "
                  "their class, weighted by similarity (cosine of the features the model's head reads).")
    near = answer["neighbours"]
    cols = st.columns(5)
    for i, n in enumerate(near):
        caption = f"{n['name']} · {n['similarity']:.3f}"
        try:
            cols[i % 5].image(open_image(n["path"]), caption=caption, width="stretch")
        except (UserError, OSError):
            cols[i % 5].caption(f"{caption} (photo no longer on disk)")


def show_top5(name: str, image, answer: dict, ms: float) -> None:
    left, right = st.columns([1, 2])
    left.image(image, caption=name, width="stretch")
    rows = answer["top"]
    if answer["rejected"]:
        right.warning(f"**{pred.rejection_text()}.** Its best guess, {rows[0]['prob']:.0%}, is below the run's "
                      f"rejection threshold of {answer['threshold']:.0%}; the best guesses are listed anyway.",
                      icon="🤷")
    df = pd.DataFrame([{"class": r["name"], "label": r["label"], "probability": r["prob"]} for r in rows])
    right.dataframe(df, hide_index=True, width="stretch", column_config={
        "probability": st.column_config.ProgressColumn("probability", format="percent", min_value=0.0,
                                                       max_value=1.0)})
    calibrated = ("Calibrated probabilities (temperature scaling fitted on the run's validation images)."
                  if answer["calibrated"] else "Uncalibrated probabilities: calibrate the run on the Evaluate page "
                  "to get a rejection threshold.")
    right.caption(f"Top-5 in {ms:.0f} ms on the server (preprocessing + forward pass, {pred.cfg.model}). {calibrated}")


st.subheader("Top-5 classes" if emb is None else "Nearest training photos")
inputs = []  # (name, tensor, top class)
for name, image in images:
    x, answer, ms = top5(image)
    (show_top5 if emb is None else show_knn)(name, image, answer, ms)
    inputs.append((name, x, answer["top"][0]["class"]))


# ------------------------------------------------------------------ explanations

@st.cache_data(show_spinner=False, max_entries=64)
def attribution(model_key: str, image_key: str, method: str, target: int, _x) -> dict:
    """explain_one once per model, image, method and class; the overlay is redrawn per alpha."""
    r = explain_one(pred, _x, method, target)
    return {k: r[k] for k in ("attr", "map", "ms", "name", "faithfulness", "deletion_auc", "insertion_auc")}


def explain_controls() -> tuple[int, list[str], float, int]:
    c1, c2 = st.columns(2)
    if st.session_state.get("clf_image", 0) >= len(inputs):  # fewer images than last time
        st.session_state["clf_image"] = 0
    chosen = c1.selectbox("Image to explain", range(len(inputs)), key="clf_image",
                          format_func=lambda i: inputs[i][0], disabled=len(inputs) < 2)
    opts = [TOP_CLASS] + list(range(len(pred.names)))
    if st.session_state["clf_target"] not in opts:
        st.session_state["clf_target"] = TOP_CLASS
    target = c2.selectbox("Explain class", opts, key="clf_target",
                          format_func=lambda i: "Top class (the prediction)" if i == TOP_CLASS else pred.names[i])
    methods = st.multiselect("Methods (shown side by side)", list(METHODS), key="clf_methods", persist_state="session",
                             format_func=lambda m: METHODS[m].label, help=cost_help())
    alpha = st.slider("Heat-map opacity", 0.0, 1.0, step=0.05, key="clf_alpha", persist_state="session",
                      help="How strongly the map covers the photo (0: the photo only). Red and blue maps "
                           "cover it in proportion to their strength, so where they are 0 the photo shows.")
    return target, methods, alpha, chosen


def passes(m: str) -> str:
    n = METHODS[m].cost
    return f"{n} forward and backward pass{'' if n == 1 else 'es'}"


def cost_help() -> str:
    """Which methods cost more than one pass per image, from the registry, slowest first."""
    slow = sorted((c for c in METHODS.values() if c.cost > 1), key=lambda c: -c.cost)
    return "Most maps take one forward and backward pass through the model" + (
        "; " + ", ".join(f"{c.label} takes {c.cost}" for c in slow) if slow else "") + "."


def display_photo(image) -> np.ndarray:
    """The part of the photo the model sees (its centre square) at the size it is shown."""
    from PIL import Image
    w, h = image.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    return np.asarray(image.convert("RGB").resize((DISPLAY_PX, DISPLAY_PX), Image.LANCZOS, box=box))


def show_legend(col, method: str) -> None:
    col.image(colorbar(method), width="stretch")
    col.caption(legend(method)[1])


def show_explanations(name: str, x, top: int, target: int, methods: list[str], alpha: float, photo) -> None:
    key_img = hashlib.sha1(x.numpy().tobytes()).hexdigest()
    base = display_photo(photo)
    if target == TOP_CLASS:
        target = top  # the top-5's first row: no second forward pass
    results, cols = [], st.columns(min(3, len(methods)))
    for i, m in enumerate(methods):
        with st.spinner(f"{METHODS[m].label} ({passes(m)})…"):
            r = attribution(model_key(), key_img, m, target, x)
        img = render(m, base, r["attr"][0], alpha=alpha)
        col = cols[i % len(cols)]
        note = f" · {METHODS[m].note}" if METHODS[m].note else ""  # e.g. SmoothGrad's sample count
        col.image(img, caption=f"{METHODS[m].label}{note} · class “{r['name']}” · {r['ms']:.0f} ms",
                  width="stretch")
        stem = name.rsplit(".", 1)[0].replace(" ", "_").replace(":", "")
        col.download_button("Download PNG", to_png_bytes(img), file_name=f"{stem}_{m}.png", mime="image/png",
                            key=f"clf_dl_{m}", on_click="ignore")
        show_legend(col, m)
        results.append({"method": METHODS[m].label, "deletion AUC": r["deletion_auc"],
                        "insertion AUC": r["insertion_auc"], "score": r["faithfulness"], "ms": r["ms"]})
    st.caption(SCALE_NOTE)
    st.markdown(FAITH_LINE)
    for m in methods:
        twin = METHODS[m].same_ranking_as
        if twin in methods:
            st.caption(f"{METHODS[twin].label} and {METHODS[m].label} rank the pixels by the same size of "
                       "attribution (the sign is ignored for the ranking), so their scores are equal.")
    st.dataframe(pd.DataFrame(results).sort_values("score", ascending=False), hide_index=True,
                 width="stretch", column_config=FAITH_COLUMNS)

st.subheader("Why? Explanations")
target, methods, alpha, chosen = explain_controls()
name, x, top = inputs[chosen]
coarse = [METHODS[m].label for m in methods if not METHODS[m].pixel]
if coarse and min(pred.cam_grid()) <= 4:
    h, w = pred.cam_grid()
    st.caption(f"{' and '.join(coarse)} read{'s' if len(coarse) == 1 else ''} {pred.model.cam_layer}, a {h}×{w} "
               f"feature map at {pred.cfg.image_size} px: it can only say which part of the image mattered, not "
               "which details. The other methods work at pixel resolution.")
if not methods:
    st.info("Choose at least one explanation method.")
else:
    try:
        show_explanations(name, x, top, target, methods, alpha, images[chosen][1])
    except UserError as e:
        user_error(e)
