"""Models out (issue 13): `python -m core export` writes ONNX / TorchScript files that carry their
class names and preprocessing, checked against PyTorch; the exported model's top-1 agrees with
the app's predictor, also through the stand-alone example (onnxruntime + Pillow + numpy alone).
Issue 19 #4: a file whose content changed since it was checked is neither reused nor offered.
Issue 18: the dashboard exports through the `export` job kind."""
import ast
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tokenize
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import UserError
from core.serve.export import TOLERANCE, cached_export, export_run, export_state, read_metadata, verified_bytes
from core.runs.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "classify_onnx.py"


@pytest.fixture(scope="session")
def exported(trained_home, tmp_path_factory):
    """A copy of trained_home with run 0 exported as ONNX and TorchScript, made once for every
    xdist worker (read-only for tests: copy a file before changing it)."""
    from tests.conftest import shared
    run_id = trained_home[1][0]

    def make(h):
        shutil.copytree(trained_home[0], h, dirs_exist_ok=True)
        return {fmt: export_run(RunStore(h / "runs").require(run_id), fmt) for fmt in ("onnx", "torchscript")}
    out = shared(tmp_path_factory, "exported", make)
    home = Path(out["onnx"]["path"]).parents[3]              # <home>/runs/<run>/exports/<file>
    assert (home / "runs" / run_id).is_dir(), out["onnx"]["path"]
    return RunStore(home / "runs"), run_id, out


@pytest.fixture(scope="module")
def photos(exported, tmp_path_factory):
    """Test images: the run's holdout images and, made from them, a large landscape photo (the
    reduce-then-resize path), a small portrait one (upscaled) and a PNG with transparency."""
    from core.data.splits import load_manifest
    store, run_id, _ = exported
    m = load_manifest(store.require(run_id).split_file)
    holdout = m.loc[m["split"] == "holdout", "path"].tolist()
    d = tmp_path_factory.mktemp("photos")
    made = []
    for i, p in enumerate(holdout[:3]):
        im = Image.open(p).convert("RGB")
        big = Image.new("RGB", (330, 200), (90, 120, 160))
        big.paste(im.resize((200, 200)), (65, 0))
        big.save(d / f"landscape{i}.jpg", quality=92)
        im.resize((30, 52)).save(d / f"portrait{i}.jpg")
        made += [str(d / f"landscape{i}.jpg"), str(d / f"portrait{i}.jpg")]
    return holdout + made


def predictor(store, run_id):
    """The run's network as exported: its own probabilities (the run's temperature is not in the file)."""
    from core.serve.predictor import load_predictor
    return load_predictor(store.require(run_id)).with_calibration(None)


def test_export_checks_and_reports(exported):
    store, run_id, out = exported
    pred = predictor(store, run_id)
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        r = out[fmt]
        path = Path(r["path"])
        assert path == store.require(run_id).exports_dir / f"{run_id}{suffix}" and path.is_file()
        assert r["format"] == fmt and r["bytes"] == path.stat().st_size and not r["cached"]
        assert r["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert 0 <= r["max_abs_diff"] <= TOLERANCE and r["top1_agree"] == 1.0
        assert r["checked"] >= 10 and r["checked_on"].startswith("8 image(s) of the run's split")
        assert r["classes"] == 4 and r["labels"] == pred.labels and r["names"] == pred.names
        assert r["input"]["size"] == 32 and r["input"]["range"] == [0, 1]
        assert r["input"]["layout"] == "NCHW RGB" and r["input"]["resize"] == "centre square crop, bilinear"
        assert r["seconds"] > 0
        side = json.loads(Path(r["sidecar"]).read_text())
        assert Path(r["sidecar"]) == Path(str(path) + ".json")
        assert side["labels"] == pred.labels and side["check"]["max_abs_diff"] == r["max_abs_diff"]
        assert side["sha256"] == r["sha256"] and side["bytes"] == r["bytes"]
        assert not [f for f in path.parent.iterdir() if f.name.endswith(".tmp")]   # no temporary files left


def test_metadata_round_trips(exported):
    import onnx
    store, run_id, out = exported
    pred = predictor(store, run_id)
    for fmt in ("onnx", "torchscript"):
        meta = read_metadata(out[fmt]["path"])
        assert meta["labels"] == pred.labels and meta["names"] == pred.names
        assert meta["image_size"] == meta["input"]["size"] == pred.cfg.image_size == 32
        assert meta["run_id"] == run_id and meta["model"] == "small_cnn" and meta["format"] == fmt
    props = {p.key: p.value for p in onnx.load(out["onnx"]["path"]).metadata_props}   # inside the file itself
    assert json.loads(props["landmarks"])["names"] == pred.names


def test_exported_top1_equals_the_apps(exported, photos):
    import onnxruntime as ort
    store, run_id, out = exported
    pred = predictor(store, run_id)
    x = torch.cat([pred.tensor(p) for p in photos])
    want = [pred.top(x[i:i + 1], 1)[0]["class"] for i in range(len(x))]
    with torch.no_grad():
        ref = pred.model(x).numpy()
    sess = ort.InferenceSession(out["onnx"]["path"], providers=["CPUExecutionProvider"])
    assert isinstance(sess.get_inputs()[0].shape[0], str)             # the batch dimension is dynamic
    got = sess.run(None, {"image": x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)                 # torch.jit is deprecated upstream
        ts = torch.jit.load(out["torchscript"]["path"])
    with torch.no_grad():
        got_ts = ts(x).numpy()
    for logits in (got, got_ts):
        assert logits.shape == ref.shape and np.abs(logits - ref).max() <= TOLERANCE
        assert logits.argmax(1).tolist() == want


def test_example_needs_only_onnxruntime(exported, photos, tmp_path):
    store, run_id, out = exported
    src = EXAMPLE.read_text()
    imports = {n.names[0].name.split(".")[0] if isinstance(n, ast.Import) else n.module.split(".")[0]
               for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert imports <= {"json", "sys", "numpy", "onnxruntime", "PIL"}
    code_lines = {t.start[0] for t in tokenize.generate_tokens(io.StringIO(src).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                    tokenize.DEDENT, tokenize.ENDMARKER)
                  and not (t.type == tokenize.STRING and t.start[1] == 0)}        # not the docstring
    assert len(code_lines) <= 15
    pred = predictor(store, run_id)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LANDMARKS_HOME")}
    for photo in photos[:1] + photos[-4:]:
        p = subprocess.run([sys.executable, "-I", str(EXAMPLE), out["onnx"]["path"], photo], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=60)
        assert p.returncode == 0, p.stderr[-2000:]
        lines = p.stdout.strip().splitlines()
        assert len(lines) == 4                                        # top 5 of 4 classes
        prob, label, name = lines[0].split("  ", 2)
        top = pred.top(pred.tensor(photo), 1)[0]
        assert (label, name) == (top["label"], top["name"]), photo
        assert abs(float(prob) - top["prob"]) < 2e-3


def test_cache_reuse_and_staleness(use_trained_home):
    run = RunStore().require(use_trained_home[1][1])
    assert cached_export(run, "torchscript") is None
    first = export_run(run, "torchscript")
    path = Path(first["path"])
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    again = export_run(run, "TorchScript")
    assert again["cached"] and again["max_abs_diff"] == first["max_abs_diff"] and again["path"] == first["path"]
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp            # not rewritten
    assert cached_export(run, "torchscript")["cached"]
    t = path.stat().st_mtime + 5
    os.utime(run.checkpoint, (t, t))                                        # a newer checkpoint
    assert cached_export(run, "torchscript") is None
    fresh = export_run(run, "torchscript")
    assert not fresh["cached"] and path.stat().st_ino != stamp[1]
    custom = export_run(run, "torchscript", out=use_trained_home[0] / "elsewhere" / "m.pt")
    assert Path(custom["path"]).is_file() and Path(custom["path"] + ".json").is_file() and not custom["cached"]


def test_cli_json(use_trained_home, capsys):
    from core.cli import main
    home, ids = use_trained_home
    out = home / "out" / "model.pt"
    assert main(["export", ids[1], "--format", "torchscript", "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    r = json.loads(printed.out.strip().splitlines()[-1])
    assert r["path"] == str(out) and out.is_file() and r["format"] == "torchscript" and r["classes"] == 3
    assert r["max_abs_diff"] <= TOLERANCE and r["top1_agree"] == 1.0 and r["bytes"] == out.stat().st_size
    assert "checking it against PyTorch" in printed.err


def test_cli_errors_are_one_sentence(use_trained_home, capsys):
    from core.cli import main
    home, ids = use_trained_home
    store = RunStore()
    store.require(ids[1]).checkpoint.unlink()
    cases = [(["export", "nope"], "There is no run 'nope'"),
             (["export", ids[0], "--format", "tflite"], "Unknown export format 'tflite'; choose onnx or torchscript."),
             (["export", ids[1]], f"Run {ids[1]} has no checkpoint yet"),
             (["export", ids[0], "--out", str(home / "m.pt")], "The file name m.pt is for another format than onnx")]
    for argv, says in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: ") and says in err and err.endswith(".") and err.count(". ") == 0, err
    with pytest.raises(UserError, match=f"Run {ids[1]} has no checkpoint yet"):
        export_run(store.require(ids[1]), "onnx")
    assert not store.require(ids[1]).exports_dir.exists()


def test_mismatch_refuses_the_export(use_trained_home, monkeypatch):
    import core.serve.export as ex
    run = RunStore().require(use_trained_home[1][1])
    real = ex._run_torchscript

    def off_by_1e3(data, batch):
        got, got1, meta = real(data, batch)
        return got + 1e-3, got1, meta
    monkeypatch.setattr(ex, "_run_torchscript", off_by_1e3)
    with pytest.raises(UserError, match=r"differs from PyTorch by up to 1\.0+e-03 \(more than 1e-04\)"):
        export_run(run, "torchscript")
    d = run.exports_dir
    assert not d.exists() or not list(d.iterdir())                          # nothing kept, no temporary files


def _tamper(path: Path, pred) -> None:
    """The attack of issue 19 #4: the export overwritten by a file of the same size and mtime
    whose classifier weights differ (the head's weight bytes negated in place)."""
    data, st_ = path.read_bytes(), path.stat()
    w = pred.model.submodule(pred.model.head).weight.detach().numpy().astype("<f4")
    old = next(b for b in (w.tobytes(), np.ascontiguousarray(w.T).tobytes()) if data.count(b) == 1)
    new = (-np.frombuffer(old, "<f4") + 0.5).astype("<f4").tobytes()
    path.write_bytes(data.replace(old, new))
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    assert path.stat().st_size == st_.st_size and path.stat().st_mtime_ns == st_.st_mtime_ns


def test_a_tampered_onnx_file_is_not_reused(exported, tmp_path):
    import onnxruntime as ort
    store, run_id, out = exported
    run, pred = store.require(run_id), predictor(store, run_id)
    copy = tmp_path / "model.onnx"                                         # a copy: the fixture stays intact
    shutil.copy2(out["onnx"]["path"], copy)
    shutil.copy2(out["onnx"]["sidecar"], tmp_path / "model.onnx.json")
    assert cached_export(run, "onnx", out=copy)["cached"]                  # untouched: reused
    _tamper(copy, pred)
    x = torch.rand(4, 3, 32, 32)
    got = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - pred.model(x).numpy()).max() > 0.1             # the attack changes the answers
    assert cached_export(run, "onnx", out=copy) is None                    # so export_run exports again
    assert export_state(run, "onnx", out=copy)[1] == (
        "The onnx file model.onnx changed since it was checked against PyTorch (its content no longer matches the "
        "recorded sha256), so it is not offered; prepare the export again.")
    with pytest.raises(UserError, match="The file model.onnx changed since it was checked against PyTorch; it is "
                                        "not served. Prepare the export again."):
        verified_bytes(dict(out["onnx"], path=str(copy)))


def test_export_panel_runs_the_job_and_never_offers_a_tampered_file(use_trained_home, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from core.runs import jobs
    store = RunStore()
    run = store.require(use_trained_home[1][1])
    monkeypatch.setattr(jobs, "schedule", lambda store, *a, **k: [])   # no worker process: run_job below runs it

    def script(run_id):
        from dashboard.export_panel import export_panel
        export_panel(run_id, key="exp")
    at = AppTest.from_function(script, args=(run.id,), default_timeout=60).run()
    assert not at.exception and [e.label for e in at.expander] == ["Download the model (ONNX or TorchScript)"]
    assert not at.radio and not at.button                                  # closed: nothing built, nothing hashed
    at.session_state["exp_open"] = True
    at.run()
    assert [b.key for b in at.button] == ["exp_prepare_onnx"] and not at.get("download_button")
    at.radio(key="exp_fmt").set_value("TorchScript").run()
    at.button(key="exp_prepare_torchscript").click().run()
    job = jobs.latest(store, "export", run_id=run.id)
    assert job["args"] == {"format": "torchscript"} and job["status"] == "queued"
    assert not at.exception and [b.key for b in at.button] == ["exp_cancel"]  # a progress line, no second Prepare
    assert "Exporting to TorchScript" in at.get("progress")[0].proto.text
    with pytest.raises(UserError, match=f"Run {run.id} is already being exported as torchscript"):
        jobs.submit(store, "export", {"format": "torchscript"}, run_id=run.id)
    done = jobs.run_job(store, job["job_id"])
    assert done["status"] == "done" and not done["cached"] and done["max_abs_diff"] <= TOLERANCE
    at.run()
    assert at.session_state["exp_open"] and not at.button                 # still open; only the download now
    assert [d.proto.label for d in at.get("download_button")][0].startswith("Download TorchScript model")
    assert f"sha256 {done['sha256'][:12]}" in " ".join(c.value for c in at.caption)

    path, pred = Path(done["path"]), predictor(store, run.id)
    _tamper(path, pred)
    x = torch.rand(4, 3, 32, 32)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        assert (torch.jit.load(str(path))(x) - pred.model(x)).abs().max() > 0.1   # the attack changes the answers
    at.run()
    assert not at.exception and not at.get("download_button")             # not offered ...
    assert "changed since it was checked against PyTorch" in at.warning[0].value
    assert [b.key for b in at.button] == ["exp_prepare_torchscript"]
    with pytest.raises(UserError, match="changed since it was checked against PyTorch; it is not served"):
        verified_bytes(done)                                               # ... nor served by a page open before
    again = export_run(run, "torchscript")                                 # ... nor reused: exported again
    assert not again["cached"] and again["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert verified_bytes(again) == path.read_bytes()


def test_export_job_refuses_bad_input_and_stops_between_stages(use_trained_home):
    from core.errors import Cancelled
    from core.runs import jobs
    store, ids = RunStore(), use_trained_home[1]
    cases = [({"format": "tflite"}, ids[1], "Unknown export format 'tflite'; choose onnx or torchscript."),
             ({"fmt": "onnx"}, ids[1], "Unknown export argument(s): fmt."),
             ({"format": "onnx"}, "nope", "There is no run 'nope'")]
    for args, run_id, says in cases:
        with pytest.raises(UserError) as e:
            jobs.submit(store, "export", args, run_id=run_id, start=False)
        assert says in str(e.value)
    assert store.jobs(kind="export") == []                                 # bad input queues nothing
    run, seen = store.require(ids[1]), []
    calls = iter([False, False, False, True])                             # stop once the file is written
    with pytest.raises(Cancelled):
        export_run(run, "torchscript", progress=lambda **f: seen.append(f), should_stop=lambda: next(calls))
    assert [f["stage"] for f in seen] == ["loading the model", "preparing the check images", "writing the file"]
    assert seen[-1]["done"] == 2 and seen[-1]["total"] == 5
    assert not run.exports_dir.exists() or not list(run.exports_dir.iterdir())   # nothing kept
