"""The "Get Google Landmarks" panel of the Dataset page: the top-N classes' images of a Google
Landmarks train.csv (or GLDv2's tar shards), downloaded by a background job (core.runs.tasks
`download`, the engine is core.data.download) with progress, ETA, counts and per-class shortfalls.

Paths typed here are confined to the folders the browser may open (core.access.confine); the job
goes on if the page is left or the browser closed, and a rerun of the same download resumes it.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core import access, paths
from core.errors import UserError
from dashboard.common import live_job, store, user_error

WHERE = ("GLDv2's `train.csv` (and `train_clean.csv`, `train_label_to_category.csv`) come from "
         "[github.com/cvdfoundation/google-landmark](https://github.com/cvdfoundation/google-landmark); "
         "the 2018 Kaggle `train.csv` works too. Put them in a folder the app may open and type its path.")


def _duration(s) -> str:
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _counts_line(c: dict) -> str:
    from core.data.download import describe
    return describe(c)


def _tiles(c: dict) -> None:
    cols = st.columns(5)
    cols[0].metric("Fetched", f"{int(c.get('fetched') or 0):,}")
    cols[1].metric("Already there", f"{int(c.get('already') or 0):,}")
    cols[2].metric("Dead links", f"{int(c.get('dead') or 0):,}")
    cols[3].metric("Not images", f"{int(c.get('not_image') or 0):,}")
    other = int(c.get("failed") or 0) + int(c.get("no_url") or 0) + int(c.get("missing") or 0)
    cols[4].metric("Other failures", f"{other:,}", help="timeouts and server errors after retries (worth another "
                   "run), rows without a URL, images not found in the tar files")


def _progress(job_id: str) -> None:
    from core.runs import jobs

    def render(job, p, done, total):
        if job["status"] in ("queued", "starting") or not total:
            st.progress(0.0, text="Starting the download: choosing the top classes from the CSV…")
        else:
            rate = p.get("rate")
            st.progress(min(done / max(total, 1), 1.0),
                        text=f"{done:,}/{total:,} images · {rate or 0:.1f} images/s · ETA {_duration(p.get('eta_s'))}")
        _tiles(p)
        if st.button("Stop the download", key="download_cancel", icon="⏹️",
                     help="Stops after the requests in flight; what is on disk stays, and starting the same "
                          "download again resumes it."):
            jobs.cancel(store(), job_id)
            st.toast("Stopping the download…")
    live_job(job_id, render)


def _summary(job: dict) -> None:
    from core.data.download import ALLOW_ENV, LABELS, REFUSED, SHORTFALL
    from core.data.registry import name_of
    args, r = job.get("args") or {}, job.get("result") or {}
    out = args.get("out", "")
    if job["status"] == "done":
        st.success(f"{r.get('on_disk', 0):,} of {r.get('listed', 0):,} images of the top {r.get('classes', 0)} "
                   f"classes are in {out} ({_counts_line(r)}, {_duration(r.get('seconds'))}). It is in the data set "
                   f"list as **{name_of(out)}**.", icon="✅")
        _tiles(r)
        if r.get("on_disk") and st.button(f"Use {name_of(out)} on every page", key="download_use", icon="👉"):
            from dashboard.common import use_dataset
            use_dataset(name_of(out))
            st.rerun()
        short = [c for c in r.get("per_class") or [] if c.get("short")]
        if short:
            df = pd.DataFrame(short)
            keep = ["landmark_id", "listed", "on_disk", "short"] + [k for k in (*SHORTFALL, "not_tried")
                                                                   if k in df and df[k].any()]
            st.caption(f"{len(short):,} of {r.get('classes', 0)} classes could not get all their images:")
            st.dataframe(df[keep].rename(columns={k: LABELS.get(k, k) for k in keep} | {
                "landmark_id": "landmark", "on_disk": "on disk", "not_tried": "not tried"}),
                hide_index=True, height=min(400, 38 + 35 * len(short)))
        if r.get("failed"):
            st.info(f"{r['failed']:,} images failed with timeouts or server errors; starting the same download "
                    f"again fetches only what is missing.", icon="🔁")
        dead = (r.get("examples") or {}).get("dead") or []
        refused = [e["why"] for e in dead if e.get("why", "").startswith(REFUSED)]
        if refused:
            st.info(f"Some URLs were refused because they point at this machine, its network or a cloud metadata "
                    f"service ({refused[0][len(REFUSED):].split(' (pass')[0]}); an operator who trusts a local mirror "
                    f"can allow private addresses by starting the app with {ALLOW_ENV}=1.", icon="🛡️")
    elif job["status"] == "cancelled":
        st.info(f"The download into {out} was stopped; what is on disk is kept, and starting it again resumes it.",
                icon="⏹️")
    elif job["status"] == "interrupted":
        st.warning(f"The download into {out} was interrupted ({job.get('error') or 'its worker is gone'}); "
                   f"start it again to resume.", icon="⚠️")
    else:
        st.error(f"The download failed: {job.get('error') or job['status']}", icon="🚫")


def _args() -> dict | None:
    """The form; the job's arguments when the button is pressed and the paths are allowed."""
    from core.data.download import DEFAULTS
    keep = dict(persist_state="session")    # the form stays filled while a job runs and after it ends
    csv = st.text_input("Google Landmarks train.csv", key="download_csv", **keep,
                        placeholder="/data/google-landmarks-v2/train.csv",
                        help="GLDv2 (id,url,landmark_id) or the 2018 Kaggle CSV. train_clean.csv and "
                             "train_label_to_category.csv are read from the same folder.")
    c = st.columns(4)
    top = int(c[0].number_input("Top N classes", min_value=1, max_value=20_000, value=100, step=10,
                                key="download_top", **keep, help="The N most frequent classes; only their images are fetched."))
    max_side = int(c[1].number_input("Longest side (px)", min_value=0, max_value=8192, value=DEFAULTS["max_side"], step=64,
                                     key="download_max_side", **keep, help="Images are shrunk on the fly; 0 keeps them as "
                                     "they are (uses far more disk)."))
    workers = int(c[2].number_input("Parallel requests", min_value=1, max_value=256, value=DEFAULTS["workers"], step=8,
                                    key="download_workers", **keep))
    clean = c[3].toggle("Cleaned subset only", key="download_clean", **keep,
                        help="GLDv2's train_clean.csv: fewer images, far fewer wrong labels.")
    default = paths.datasets_dir() / f"gldv2-{'clean-' if clean else ''}top{top}"
    out = st.text_input("Output folder", key="download_out", **keep, placeholder=str(default),
                        help=f"Empty: {default}. Downloading again into the same folder resumes.")
    tars = st.text_input("GLDv2 tar shards (optional)", key="download_tars", **keep, placeholder="/data/gldv2/tars",
                         help="A folder of images_000.tar …: the images are extracted from them instead of fetched.")
    if not st.button("Start the download", key="download_start", type="primary", icon="⬇️"):
        return None
    try:
        if not csv.strip():
            raise UserError("Type the path of the train.csv to download from.")
        args = {"csv": str(access.confine(csv, "train.csv")),
                "out": str(access.confine(out.strip() or str(default), "output folder")),
                "top": top, "clean": bool(clean), "max_side": max_side, "workers": workers}
        if tars.strip():
            args["tars"] = [str(access.confine(tars, "tar folder"))]
        return args
    except UserError as e:
        user_error(e)
        return None


OPEN = "download_open"   # the panel's expander state: opened by a download, closed only by the user


def download_panel(expanded: bool = False) -> None:
    """Render the "Get Google Landmarks" panel. It opens while a download runs and stays open on
    its result when the job ends (the user closes it), with the form still filled in, so starting
    the same download again (to resume it) is one click."""
    from core.runs import jobs
    job = jobs.latest(store(), "download")
    active = bool(job and job["active"])
    if active or (expanded and OPEN not in st.session_state):
        st.session_state[OPEN] = True
    # stateful (a key and on_change): its identity does not change with the job, so a job's end
    # does not collapse it
    with st.expander("⬇️ Get Google Landmarks", key=OPEN, on_change="rerun"):
        st.caption(WHERE)
        if active:
            a = job.get("args") or {}
            st.markdown(f"Downloading the top **{a.get('top')}** classes of `{a.get('csv')}` into `{a.get('out')}`"
                        + (" (cleaned subset)" if a.get("clean") else "") + ".")
            _progress(job["job_id"])
            return
        if job is not None:
            _summary(job)         # the last download's result above the form that can start it again
        args = _args()
        if args is not None:
            try:
                jobs.submit(store(), "download", args)
            except UserError as e:
                user_error(e)
            else:
                st.rerun()


__all__ = ["download_panel"]
