"""The CLI contract other issues rely on: --json puts one JSON object on the last stdout line;
bad input prints one sentence and exits 2. Checked in-process through core.cli.main; one test
runs the real entry point (`python -m core`) in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *args) -> tuple[int, str, str]:
    """core.cli.main in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:                       # argparse's own refusals
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def ok(capsys, *args) -> tuple[dict, str]:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err[-2000:]
    return last_json(out), err


def test_demo_stats_train_eval_predict(tmp_path, capsys, monkeypatch):
    data = tmp_path / "demo"                 # TqdmSink writes to sys.stderr as it is when made: capsys's here
    info, _ = ok(capsys, "demo-data", data, "--classes", "3", "--images", "120", "--size", "40")
    assert info["images"] == 120 and (data / "train.csv").exists()
    st, _ = ok(capsys, "stats", data, "--top", "2", "--scan")
    assert st["classes"] == 3 and len(st["top"]) == 2 and st["scan"]["unreadable"] == 0
    tr, err = ok(capsys, "train", "--data", data, "--model", "small_cnn", "--weights", "none", "--classes", "3",
                 "--epochs", "2", "--image-size", "32", "--batch-size", "16", "--holdout", "0.05")
    assert set(tr) == {"run_id", "status", "epochs_completed", "train_acc", "val_acc", "holdout_acc",
                       "holdout_top5", "holdout_gap", "images_per_s", "seconds"}
    assert tr["status"] == "done" and tr["epochs_completed"] == 2 and tr["holdout_top5"] == 1.0
    assert "epoch 2" in err                                   # progress on stderr, stdout stays JSON
    ev, _ = ok(capsys, "eval", tr["run_id"])
    assert [h["epoch"] for h in ev["history"]] == [1, 2]
    assert ev["acc"] == tr["holdout_acc"] and len(ev["per_class"]) == 3
    img = next((data / "train").rglob("*.jpg"))
    pr, _ = ok(capsys, "predict", "--run", tr["run_id"], img)
    top = pr["results"][0]["top"]
    assert len(top) == 3 and abs(sum(t["prob"] for t in top) - 1) < 1e-4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The folders the bad-input cases point at (made once)."""
    from core.data.demo import generate
    t = tmp_path_factory.mktemp("cli_inputs")
    generate(t / "d", classes=3, images=30, size=32)
    (t / "bad").mkdir()
    (t / "bad" / "train.csv").write_text("id,url\n1,x\n")
    (t / "empty").mkdir()
    (t / "empty" / "train.csv").write_text("id,url,landmark_id\n")
    (t / "afile").write_text("not a folder")
    return dict(nowhere=t / "nowhere", data=t / "d", bad_csv=t / "bad", empty=t / "empty", afile=t / "afile")


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "{nowhere}", "--model", "resnet18"], "does not exist"),
    (["train", "--data", "{data}", "--model", "resnet18", "--weights", "none", "--classes", "50"], "only 3"),
    (["train", "--data", "{data}", "--model", "alexnet9"], "Unknown model 'alexnet9'"),
    (["train", "--data", "{data}", "--model", "resnet18", "--augment", "zoom"], "Unknown augmentation 'zoom'"),
    (["eval", "no-such-run"], "There is no run 'no-such-run'"),
    (["stats", "{bad_csv}"], "missing column(s) landmark_id"),
    (["train", "--data", "{empty}", "--model", "resnet18"], "lists no images: the data set is empty"),
    (["train", "--data", "{data}", "--model", "small_cnn", "--runs", "{afile}/runs"], "Cannot write the runs folder"),
])
def test_bad_input_is_one_sentence_and_exit_2(home, inputs, capsys, args, message):
    code, out, err = run(capsys, *[a.format(**inputs) for a in args])
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    if args[0] == "train":  # a refused launch leaves no half-made run behind
        runs = home / "runs"
        assert not [d for d in runs.glob("*") if d.is_dir()] if runs.exists() else True


def test_the_entry_point_prints_reports_and_refuses_in_one_sentence(tmp_path, home):
    """`python -m core` itself: the scan report on stdout and exit 0; bad input one line, exit 2."""
    from PIL import Image
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 50, 0, 0)).save(tmp_path / cls / f"{i}.jpg")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"")
    env = dict(os.environ, LANDMARKS_HOME=str(home))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=120)
    p = cli("stats", tmp_path, "--top", "2")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "7 files checked, 1 unreadable" in p.stdout
    assert "broken.jpg: empty file (0 bytes)" in p.stdout
    p = cli("eval", "no-such-run")
    assert p.returncode == 2 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: There is no run 'no-such-run'") and "Traceback" not in p.stderr
