"""The model download of the Runs and Evaluate pages: a run's model as ONNX or TorchScript,
exported and checked against PyTorch by core.serve.export (the same as `python -m core export`)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import streamlit as st

from core.errors import UserError
from dashboard.common import store, user_error

FORMATS = {"ONNX": "onnx", "TorchScript": "torchscript"}
ABOUT = {"onnx": "for onnxruntime in Python, C++, C#, Java or JavaScript (see examples/classify_onnx.py)",
         "torchscript": "for PyTorch / LibTorch without this project (torch.jit.load)"}


def export_buttons(run_id: str, key: str) -> None:
    """Format choice, a 'Prepare export' button (export + check, with a spinner), then the
    download and what the check found. A fresh earlier export is offered at once."""
    from core.serve.export import cached_export, export_run
    try:
        run = store().require(run_id)
    except UserError as e:
        user_error(e)
        return
    if not run.has_checkpoint():
        st.caption("No model to download yet: the run has no checkpoint (it is written after the first epoch).")
        return
    choice = st.radio("Model file format", list(FORMATS), horizontal=True, key=f"{key}_fmt",
                      help="ONNX runs anywhere onnxruntime does; TorchScript loads in PyTorch or LibTorch. "
                           "Both carry the class names and the preprocessing inside.")
    fmt = FORMATS[choice]
    try:
        result = cached_export(run, fmt)
    except UserError as e:
        user_error(e)
        return
    if result is None:
        if not st.button(f"Prepare {choice} export", key=f"{key}_prepare_{fmt}",
                         help=f"Writes the model as {choice} {ABOUT[fmt]}, then checks it against PyTorch."):
            return
        with st.spinner(f"Exporting to {choice} and checking it against PyTorch…"):
            try:
                result = export_run(run, fmt)
            except UserError as e:
                user_error(e)
                return
    _download(result, choice, key)


def _download(result: dict, choice: str, key: str) -> None:
    path = Path(result["path"])
    fmt = result["format"]
    st.download_button(f"Download {choice} model ({result['bytes'] / 1e6:.1f} MB)", data=partial(_read, path),
                       file_name=path.name, mime="application/octet-stream", key=f"{key}_download_{fmt}",
                       on_click="ignore", icon=":material/download:", type="primary")
    side = Path(result["sidecar"])
    if side.exists():
        st.download_button("Metadata (JSON)", data=partial(_read, side), file_name=side.name,
                           mime="application/json", key=f"{key}_download_{fmt}_json", on_click="ignore",
                           type="tertiary")
    inp = result["input"]
    st.caption(f"Checked against PyTorch on {result['checked_on']}: largest logit difference "
               f"{result['max_abs_diff']:.1e} (limit {result['tolerance']:.0e}), top-1 agrees on "
               f"{result['top1_agree']:.0%}. Input: RGB in [0, 1], {inp['size']}×{inp['size']} "
               f"({inp['resize']}), N×3×H×W; {result['classes']} class labels and names inside the file, "
               f"{ABOUT[fmt]}.")


def _read(path: Path) -> bytes:
    return path.read_bytes()
