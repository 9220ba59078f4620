"""Models out: a finished run's model as one ONNX or TorchScript file that carries its class
names and preprocessing, checked against PyTorch before it is handed over.

`export_run(run, "onnx" | "torchscript", out=None, progress=None, should_stop=None)` writes FILE
and FILE.json (run: a core.runs.store.Run; the job kind "export" in core.runs.tasks calls it):

* FILE: the model. It takes RGB images in [0, 1], N x 3 x S x S (float32, any batch size) and
  returns N class logits; the normalisation is inside it. Its metadata (`METADATA_KEY` in the
  ONNX model's `metadata_props`, `landmarks.json` among a TorchScript file's extra files) is
  the JSON of `metadata()`: labels, names, image size and preprocessing.
* FILE.json (the sidecar): the same metadata plus the check: the largest absolute difference
  between the exported model's logits and PyTorch's on a batch (real images of the run's
  holdout/val split, preprocessed as the app does, plus random inputs), and top-1 agreement.
  A difference above `TOLERANCE` or a top-1 disagreement refuses the export (one sentence).
  (Logits beyond +-100 get RELATIVE_TOLERANCE of their size instead: 1e-4 is then within a few
  float32 roundings of the value, and a sum merely reordered by the exporter may differ by that.)

ONNX uses the dynamo exporter (`torch.onnx.export(..., dynamo=True)`): it is the exporter torch
maintains, and the legacy TorchScript-based one cannot export VGG-16 at sizes whose feature map
is not a multiple of its 7 x 7 pooling output (e.g. 64 px). TorchScript is `torch.jit.trace`
(deprecated upstream but still what a C++/LibTorch user loads); it is checked at another batch
size than the one traced.

The sidecar records the sha256 of exactly the bytes that were checked. An earlier file is reused
only when that hash still matches its content (and it was made from the run's current
checkpoint); a file changed since, even with the same size and mtime, is exported again, and
`verified_bytes` hands out a file's bytes only when they hash to what was checked.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch

from core.errors import Cancelled, UserError
from core.files import atomic_output, atomic_write, sha256_of

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ALIASES = {"ts": "torchscript", "jit": "torchscript", "pt": "torchscript"}
METADATA_KEY = "landmarks"          # ONNX metadata_props key
EXTRA_FILE = "landmarks.json"       # TorchScript _extra_files name
TOLERANCE = 1e-4                    # fp32: largest allowed |logit difference|
RELATIVE_TOLERANCE = 1e-6           # ... of the largest |logit| when that is beyond 100 (~8 float32 ulps)
CHECK_IMAGES = 8                    # real images in the check batch (at most)
CHECK_RANDOM = 2                    # random inputs added to them
TRACE_BATCH = 2                     # batch size of the traced example (checked at others)
RESIZE = "centre square crop, bilinear"
SIDECAR_VERSION = 2                 # 2: the sidecar records the sha256 of the checked file
STAGES = ("loading the model", "preparing the check images", "writing the file",
          "checking it against PyTorch", "saving it")


def normalise_format(fmt: str) -> str:
    f = (fmt or "").strip().lower()
    f = ALIASES.get(f, f)
    if f not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; choose onnx or torchscript.")
    return f


def default_path(run, fmt: str) -> Path:
    return run.exports_dir / f"{run.id}{FORMATS[fmt]}"


def sidecar_path(path: Path) -> Path:
    return Path(str(path) + ".json")


def metadata(pred, fmt: str) -> dict:
    """What the exported file carries: enough to preprocess a photo and name the answer."""
    size = int(pred.cfg.image_size)
    return {
        "format_version": SIDECAR_VERSION,
        "producer": "landmark recognition workbench",
        "run_id": pred.run_id,
        "model": pred.cfg.model,
        "format": fmt,
        "classes": len(pred.labels),
        "labels": [str(l) for l in pred.labels],
        "names": [str(n) for n in pred.names],
        "image_size": size,
        "input": {"name": "image", "size": size, "range": [0, 1], "layout": "NCHW RGB", "dtype": "float32",
                  "resize": RESIZE, "normalisation": "inside the model",
                  "about": f"centre square of the shorter side, resized bilinear to {size}x{size}, "
                           "RGB values / 255, shape (N, 3, size, size)"},
        "output": {"name": "logits", "shape": ["N", len(pred.labels)], "softmax": False},
        "classifier_figures": "softmax",     # the run's reported figures are the network's (kNN: eval --classifier knn)
    }


# ---------------------------------------------------------------- cache

def _read_sidecar(path: Path) -> dict | None:
    try:
        return json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return None


def _checkpoint_mtime(run) -> float | None:
    try:
        return run.checkpoint.stat().st_mtime
    except OSError:
        return None


def export_state(run, fmt: str, out=None) -> tuple[dict | None, str | None]:
    """(result, None) when an earlier export at the path is still good: made from the run's
    current checkpoint, and its content hashes to what was checked. Else (None, why not): None
    when there is simply nothing to reuse, a sentence when a file is there that must not be
    served. Reads no model (it hashes the file)."""
    fmt = normalise_format(fmt)
    path = _out_path(run, fmt, out)
    mtime, side = _checkpoint_mtime(run), _read_sidecar(path)
    if mtime is None or not side or not path.exists():
        return None, None
    if (side.get("format_version") != SIDECAR_VERSION or side.get("format") != fmt or side.get("run_id") != run.id
            or side.get("checkpoint_mtime") != mtime):
        return None, None                     # an older export, or one of another checkpoint: redo it
    if sha256_of(path) != side.get("sha256"):
        return None, (f"The {fmt} file {path.name} changed since it was checked against PyTorch (its content "
                      "no longer matches the recorded sha256), so it is not offered; prepare the export again.")
    return _result(side, path, cached=True), None


def cached_export(run, fmt: str, out=None) -> dict | None:
    """The result of an earlier export that may be served as it is (see export_state), else None."""
    return export_state(run, fmt, out)[0]


def verified_bytes(result: dict) -> bytes:
    """The exported file's bytes, only when they hash to what was checked (read once, then
    hashed: what is returned is what was compared)."""
    path = Path(result["path"])
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"Cannot read the export {path} ({e.strerror or e}); prepare it again.") from None
    if hashlib.sha256(data).hexdigest() != result["sha256"]:
        raise UserError(f"The file {path.name} changed since it was checked against PyTorch; "
                        "it is not served. Prepare the export again.")
    return data


def _result(side: dict, path: Path, cached: bool) -> dict:
    check = side["check"]
    return {"run_id": side["run_id"], "model": side["model"], "path": str(path), "sidecar": str(sidecar_path(path)),
            "format": side["format"], "bytes": side["bytes"], "sha256": side["sha256"],
            "max_abs_diff": check["max_abs_diff"], "top1_agree": check["top1_agree"], "checked": check["checked"],
            "checked_on": check["checked_on"], "tolerance": check["tolerance"], "classes": side["classes"],
            "labels": side["labels"], "names": side["names"], "input": side["input"], "exporter": side["exporter"],
            "seconds": side["seconds"], "cached": cached}


# ---------------------------------------------------------------- export

def _out_path(run, fmt: str, out) -> Path:
    if out is None or str(out).strip() == "":
        return default_path(run, fmt)
    p = Path(out).expanduser()
    if p.is_dir():
        return p / f"{run.id}{FORMATS[fmt]}"
    if p.suffix.lower() in FORMATS.values() and p.suffix.lower() != FORMATS[fmt]:
        raise UserError(f"The file name {p.name} is for another format than {fmt}; "
                        f"name it {p.stem}{FORMATS[fmt]}.")
    return p.resolve()


def export_run(run, fmt: str = "onnx", out=None, progress=None, should_stop=None) -> dict:
    """Write the run's model as `fmt` to `out` (default: the run's exports folder), check it
    against PyTorch, and return path, format, bytes, sha256, max_abs_diff, top1_agree, classes,
    labels, names, input, seconds (and cached: True when a good earlier export was reused).
    `progress(done=, total=, stage=)` hears of each stage; `should_stop()` True between stages
    raises Cancelled (nothing is kept)."""
    from core.serve.predictor import load_predictor
    fmt = normalise_format(fmt)
    if _checkpoint_mtime(run) is None:
        raise UserError(f"Run {run.id} has no checkpoint yet, so there is no model to export; "
                        "wait for its first epoch to finish.")
    path = _out_path(run, fmt, out)
    hit = cached_export(run, fmt, out)
    if hit is not None:
        _card(run, hit, only_missing=True)
        return hit

    def stage(i: int) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled()
        if progress is not None:
            progress(done=i, total=len(STAGES), stage=STAGES[i])
    t0 = time.time()
    stage(0)
    pred = load_predictor(run)
    stage(1)
    batch, checked_on = _check_batch(pred, run)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create the folder {path.parent} for the export ({e.strerror or e}).") from None
    # a temporary name of its own per call: two exports of one run in one process (the app's threads)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp")
    try:
        with atomic_output(path, tmp=tmp):
            side = _write_and_check(pred, fmt, tmp, batch, checked_on, stage)
        side["seconds"] = round(time.time() - t0, 2)
        atomic_write(sidecar_path(path), json.dumps(side, indent=1), tmp=sidecar_path(tmp))
    except OSError as e:
        raise UserError(f"Cannot write the export {path} ({e.strerror or e}).") from None
    result = _result(side, path, cached=False)
    _card(run, result)
    if progress is not None:
        progress(done=len(STAGES), total=len(STAGES), stage="done")
    return result


def _card(run, result: dict, only_missing: bool = False) -> None:
    """The model card RUN.md beside the export (core.serve.card); `result["card"]` names it."""
    from core.serve.card import card_path, write_card
    path = card_path(result["path"], run.id)
    try:
        if not (only_missing and path.exists()):
            write_card(run, result)
    except OSError as e:
        raise UserError(f"Cannot write the model card {path} ({e.strerror or e}).") from None
    result["card"] = str(path)


def _write_and_check(pred, fmt: str, tmp: Path, batch: torch.Tensor, checked_on: str, stage) -> dict:
    """Write the model to `tmp`, read its bytes once, check exactly those bytes against PyTorch
    and return the sidecar (with their sha256); a failed check raises one sentence."""
    run_id, meta, model = pred.run_id, metadata(pred, fmt), pred.model.eval()
    stage(2)
    write, load = (_write_onnx, _run_onnx) if fmt == "onnx" else (_write_torchscript, _run_torchscript)
    exporter = write(model, meta, tmp, pred.cfg.image_size, run_id)
    stage(3)
    data = tmp.read_bytes()
    try:
        got, got1, back = load(data, batch)
    except (OSError, UserError):
        raise
    except Exception as e:  # noqa: BLE001 - onnxruntime / torch.jit refusing the file they were given
        raise _fail(fmt, run_id, e) from None
    with torch.no_grad():
        ref, ref1 = model(batch).numpy(), model(batch[:1]).numpy()
    diff = float(max(np.abs(got - ref).max(), np.abs(got1 - ref1).max()))
    if not np.all(np.isfinite(got)):
        diff = float("inf")
    limit = max(TOLERANCE, RELATIVE_TOLERANCE * float(np.abs(ref).max()))
    agree = _top1_agreement(ref, got, limit)
    if back != meta:
        raise UserError(f"The exported {fmt} file of run {run_id} does not carry its metadata back; "
                        "the export was not kept.")
    if not diff <= limit:
        raise UserError(f"The exported {fmt} model of run {run_id} differs from PyTorch by up to {diff:.2e} "
                        f"(more than {limit:.0e}) on {checked_on}; the export was not kept.")
    if agree["decided_disagree"]:
        raise UserError(f"The exported {fmt} model of run {run_id} picks another top-1 class than PyTorch on "
                        f"{agree['decided_disagree']} of {len(ref)} check images; the export was not kept.")
    stage(4)
    return dict(meta, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), checkpoint_mtime=pred.weights_mtime,
                exporter=exporter, torch=torch.__version__, created=time.time(),
                check={"max_abs_diff": diff, "top1_agree": agree["fraction"], "checked": len(ref),
                       "checked_on": checked_on, "tolerance": limit, "batch_sizes": [len(ref), 1]})


def _top1_agreement(ref: np.ndarray, got: np.ndarray, limit: float) -> dict:
    """Fraction of rows whose top-1 class agrees; a disagreement counts as real only where
    PyTorch's top two logits are further apart than twice the limit (not a tie)."""
    a, b = ref.argmax(1), got.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    decided = (top2[:, 1] - top2[:, 0]) > 2 * limit
    return {"fraction": float((a == b).mean()) if len(a) else 1.0,
            "decided_disagree": int(((a != b) & decided).sum())}


def _check_batch(pred, run) -> tuple[torch.Tensor, str]:
    """Up to CHECK_IMAGES real images of the run's holdout (then val) split, preprocessed as
    the app does, plus CHECK_RANDOM random inputs (enough of them when no image can be read)."""
    xs = []
    if run.split_file.exists():
        from core.data.splits import load_manifest
        try:
            m = load_manifest(run.split_file)
            paths = [p for s in ("holdout", "val", "train") for p in m.loc[m["split"] == s, "path"].tolist()]
        except (OSError, ValueError, KeyError):
            paths = []
        for p in paths:
            if len(xs) >= CHECK_IMAGES:
                break
            try:
                xs.append(pred.tensor(p))
            except (UserError, OSError, ValueError):
                continue
    n_real = len(xs)
    g = torch.Generator().manual_seed(0)
    s = int(pred.cfg.image_size)
    n_rand = CHECK_RANDOM if n_real else CHECK_IMAGES
    xs.append(torch.rand(n_rand, 3, s, s, generator=g))
    batch = torch.cat(xs).contiguous()
    if len(batch) == TRACE_BATCH:                 # check another batch size than the traced one
        batch = torch.cat([batch, torch.rand(1, 3, s, s, generator=g)])
    what = f"{n_real} image(s) of the run's split and {len(batch) - n_real} random input(s)"
    return batch, what


def _fail(fmt: str, run_id: str, e: Exception) -> UserError:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    other = "torchscript" if fmt == "onnx" else "onnx"
    return UserError(f"Exporting run {run_id} to {fmt} failed ({type(e).__name__}: {first}); "
                     f"try --format {other}.")


def _write_onnx(model, meta: dict, path: Path, size: int, run_id: str) -> str:
    import onnx
    x = torch.rand(TRACE_BATCH, 3, size, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(model, (x,), None, dynamo=True, verbose=False, external_data=False,
                                     input_names=["image"], output_names=["logits"],
                                     dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        proto = prog.model_proto
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; the user gets one sentence
        raise _fail("onnx", run_id, e) from None
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.doc_string = (f"Landmark classifier (run {run_id}, {meta['model']}): input 'image' float32 N x 3 x "
                        f"{size} x {size} RGB in [0, 1] ({RESIZE}); output 'logits' N x {meta['classes']}; "
                        f"class labels and names in metadata '{METADATA_KEY}'.")
    proto.producer_name = "landmark recognition workbench"
    onnx.save_model(proto, str(path))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return f"torch.onnx dynamo (opset {opset})"


def _run_onnx(data: bytes, batch: torch.Tensor):
    import onnxruntime as ort
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = batch.numpy()
    got = sess.run(None, {name: x})[0]
    got1 = sess.run(None, {name: x[:1]})[0]
    back = json.loads(sess.get_modelmeta().custom_metadata_map[METADATA_KEY])
    return got, got1, back


def _write_torchscript(model, meta: dict, path: Path, size: int, run_id: str) -> str:
    x = torch.rand(TRACE_BATCH, 3, size, size)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, x, check_trace=False)
            traced = torch.jit.freeze(traced.eval())
    except Exception as e:  # noqa: BLE001
        raise _fail("torchscript", run_id, e) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # torch.jit's deprecation notice
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(meta)})
    return "torch.jit.trace (frozen)"


def _run_torchscript(data: bytes, batch: torch.Tensor):
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra).eval()
    with torch.no_grad():
        got = m(batch).numpy()
        got1 = m(batch[:1]).numpy()
    return got, got1, json.loads(extra[EXTRA_FILE])


def read_metadata(path) -> dict:
    """The metadata an exported file carries (ONNX or TorchScript), read from the file itself."""
    p = Path(path)
    if p.suffix == ".onnx":
        import onnx
        m = onnx.load_model(str(p), load_external_data=False)
        props = {e.key: e.value for e in m.metadata_props}
        if METADATA_KEY not in props:
            raise UserError(f"{p} is not an ONNX file exported by this workbench (no '{METADATA_KEY}' metadata).")
        return json.loads(props[METADATA_KEY])
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{p} is not a TorchScript file ({type(e).__name__}).") from None
    if not extra[EXTRA_FILE]:
        raise UserError(f"{p} is not a TorchScript file exported by this workbench (no {EXTRA_FILE}).")
    return json.loads(extra[EXTRA_FILE])
