"""Class model: the image a trained network scores highest for a class (Simonyan, Vedaldi &
Zisserman 2014, §2), drawn by a background job and cached per run, class, steps and size."""
import io
import re
import zipfile

import pandas as pd
import streamlit as st

from core.errors import UserError
from core.explain.class_model import batches
from core.explain.files import class_model_path, class_model_png
from core.runs import jobs
from core.runs.tasks import SIZE_RANGE, STEPS_RANGE, class_models_line
from dashboard.common import MANY_CLASS_MODELS, run_and_predictor, store, user_error

st.session_state.setdefault("cm_steps", 150)
GRID_LIMIT = 100   # images drawn in the grid at most; the ZIP download holds every one

st.title("🎨 Class model")
st.caption("What does the model look for in a class? Starting from a grey image, the app changes the pixels "
           "step by step to raise the model's score for that class, while keeping the picture smooth, so the "
           "result shows the patterns the model has learnt for it (Simonyan et al. 2014 §2; Yosinski et al. 2015).")

run_id, pred = run_and_predictor("cm_run")
run = store().run(run_id)

classes = list(range(len(pred.names)))
for k in ("cm_classes", "cm_size", "cm_all", "cm_all_ok"):  # drop values that belong to another run
    if k in st.session_state and st.session_state.get("cm_for") != run_id:
        del st.session_state[k]
st.session_state["cm_for"] = run_id
st.session_state.setdefault("cm_classes", classes[:4])
lo, hi = SIZE_RANGE
st.session_state.setdefault("cm_size", min(max(int(pred.cfg.image_size), lo), hi))

every = st.toggle(f"All {len(classes)} classes of this run", key="cm_all",
                  help="Generate (and show) the class model of every class the run was trained on.")
if every:
    chosen = classes
else:
    chosen = st.multiselect("Classes", classes, key="cm_classes", format_func=lambda i: pred.names[i])
c1, c2 = st.columns(2)
steps = int(c1.number_input("Steps", *STEPS_RANGE, step=10, key="cm_steps",
                            help="Gradient-ascent steps per class; more steps sharpen the pattern."))
size = int(c2.number_input("Size (px)", *SIZE_RANGE, step=16, key="cm_size",
                           help=f"Side of the square image; the run trained at {pred.cfg.image_size} px."))


def file_name(target: int) -> str:
    """class_model_<readable name>_<steps>steps_<size>px.png, safe on every file system."""
    name = re.sub(r"[^\w.-]+", "_", str(pred.names[target])).strip("_") or f"class_{target}"
    return f"class_model_{name}_{steps}steps_{size}px.png"


def zip_of(pngs: dict[int, object]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:   # PNGs are compressed already
        for t, png in pngs.items():
            z.write(png, file_name(t))
    return buf.getvalue()


def fresh_png(target: int):
    """The cached image if it was drawn from the run's current checkpoint (not an older one)."""
    png = class_model_path(run.class_models_dir, target, steps, size)
    try:
        return png if png.stat().st_mtime >= run.checkpoint_mtime() else None
    except FileNotFoundError:
        return None


@st.cache_data(show_spinner=False, max_entries=256)
def cached_result(run_id: str, target: int, steps: int, size: int, mtime: float) -> dict:
    """Class probability of a finished PNG (class_model_png only reads it: the file exists)."""
    return class_model_png(pred, pred.labels[target], run.class_models_dir, steps=steps, size=size)


def grid(targets: list[int], job: dict | None) -> None:
    done = {t: png for t in targets if (png := fresh_png(t)) is not None}
    if len(done) > 1 and not (job and job["active"]):   # not zipped anew every second while drawing
        st.download_button(f"⬇️ Download all {len(done)} images (ZIP)", zip_of(done), key="cm_zip",
                           file_name=f"class_models_{run_id}_{steps}steps_{size}px.zip", mime="application/zip",
                           on_click="ignore")
    if len(targets) > GRID_LIMIT:
        st.caption(f"Showing the first {GRID_LIMIT} of {len(targets)} classes; the ZIP holds every generated image.")
    cols = st.columns(4)
    for i, t in enumerate(targets[:GRID_LIMIT]):
        png = done.get(t)
        col = cols[i % 4]
        if png is not None:
            r = cached_result(run_id, t, steps, size, png.stat().st_mtime)
            col.image(str(png), caption=f"{r['name']} · p = {r['prob']:.3f}", width="stretch")
            col.download_button("Download PNG", png.read_bytes(), file_name=file_name(t), mime="image/png",
                                key=f"cm_dl_{t}", on_click="ignore")
        else:
            waiting = job and job["active"] and pred.labels[t] in job["args"]["classes"]
            col.info(f"{pred.names[t]}: {'queued…' if waiting else 'not generated yet'}")


def progress(job: dict) -> None:
    p, args = job.get("progress") or {}, job["args"]
    k = len(args["classes"])
    first = batches(list(range(k)), int(args.get("size") or pred.cfg.image_size))[0]
    queued = {"step": 0, "steps": int(args["steps"]), "first": 1, "last": len(first), "classes": k}
    frac = p.get("done", 0) / max(1, p.get("total") or 1)
    st.progress(min(1.0, frac), text=class_models_line({**queued, **p}))      # step n/N · class k/K · ETA mm:ss
    if st.button("Stop", key="cm_stop"):
        jobs.cancel(store(), job["job_id"])


def live() -> None:
    job = jobs.latest(store(), "class_models", run_id=run_id)
    if job and job["active"]:
        progress(job)
    elif job and job["status"] == "cancelled":
        st.info("Generation stopped; the images finished before the stop are kept.", icon="⏹️")
    elif job and job["status"] in ("failed", "interrupted"):
        st.warning(f"The last generation ended early: {job.get('error') or job['status']}", icon="⚠️")
    grid(chosen, job)
    if job and not job["active"] and st.session_state.get("cm_polling"):
        st.session_state["cm_polling"] = False
        st.rerun()  # the whole page again, so polling stops and the button comes back


def start(missing: list[int]) -> None:
    jobs.submit(store(), "class_models", {"classes": [pred.labels[t] for t in missing], "steps": steps,
                                          "size": size}, run_id=run_id)


job = jobs.latest(store(), "class_models", run_id=run_id)
active = bool(job and job["active"])
missing = [t for t in chosen if fresh_png(t) is None]
label = f"Generate {len(missing)} class model{'s' if len(missing) != 1 else ''}" if missing else "All generated"
confirmed = True
if len(missing) > MANY_CLASS_MODELS and not active:
    st.warning(f"{len(missing)} class models of {steps} steps each are drawn one after another in batches of "
               f"{len(batches(missing, size)[0])}, which can take a long time (fewer steps or a smaller size are "
               "faster). It runs in the background, and **Stop** keeps the batches finished so far.", icon="⏱️")
    confirmed = st.checkbox(f"Yes, generate all {len(missing)}", key="cm_all_ok")
if st.button(label, type="primary", disabled=active or not missing or not confirmed, key="cm_generate"):
    try:
        start(missing)
        st.rerun()
    except UserError as e:
        user_error(e)
st.caption("Runs in its own process: you can leave this page and come back. Images are cached in the run "
           f"folder ({run.class_models_dir}); the probability under each is the model's softmax "
           "for that class on the generated image.")

st.session_state["cm_polling"] = active
st.fragment(run_every=1.0 if active else None)(live)()

with st.expander("All cached class models of this run"):
    files = sorted(run.class_models_dir.glob("class_*_*_*.png"))
    if not files:
        st.write("None yet.")
    else:
        rows = [dict(zip(("class", "steps", "size"), map(int, f.stem.split("_")[1:4])), file=f.name)
                for f in files]
        df = pd.DataFrame(rows)
        df.insert(1, "name", [pred.names[c] if c < len(pred.names) else "?" for c in df["class"]])
        st.dataframe(df, hide_index=True)
