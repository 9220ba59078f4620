"""The CLI contract other issues rely on: --json puts one JSON object on the last stdout line;
bad input prints one sentence and exits non-zero."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, env_home, check=True):
    import os
    env = dict(os.environ, LANDMARKS_HOME=str(env_home), OMP_NUM_THREADS="2")
    p = subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(p.stderr[-2000:])
    return p


def last_json(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_demo_stats_train_eval_predict(tmp_path, home):
    data = tmp_path / "demo"
    info = last_json(cli("demo-data", data, "--classes", "3", "--images", "120", "--size", "40", "--json", env_home=home))
    assert info["images"] == 120 and (data / "train.csv").exists()
    st = last_json(cli("stats", data, "--top", "2", "--json", "--scan", env_home=home))
    assert st["classes"] == 3 and len(st["top"]) == 2 and st["scan"]["unreadable"] == 0
    p = cli("train", "--data", data, "--model", "resnet18", "--weights", "none", "--classes", "3", "--epochs", "2",
            "--image-size", "32", "--batch-size", "16", "--holdout", "0.05", "--json", env_home=home)
    tr = last_json(p)
    assert set(tr) == {"run_id", "status", "epochs_completed", "train_acc", "val_acc", "holdout_acc",
                       "holdout_top5", "holdout_gap", "images_per_s", "seconds"}
    assert tr["status"] == "done" and tr["epochs_completed"] == 2 and tr["holdout_top5"] == 1.0
    assert "epoch 2" in p.stderr  # progress on stderr
    ev = last_json(cli("eval", tr["run_id"], "--json", env_home=home))
    assert [h["epoch"] for h in ev["history"]] == [1, 2]
    assert ev["acc"] == tr["holdout_acc"] and len(ev["per_class"]) == 3
    img = next((data / "train").rglob("*.jpg"))
    pr = last_json(cli("predict", "--run", tr["run_id"], img, "--json", env_home=home))
    top = pr["results"][0]["top"]
    assert len(top) == 3 and abs(sum(t["prob"] for t in top) - 1) < 1e-4


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
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, home, args, message):
    from core.data.demo import generate
    data = tmp_path / "d"
    generate(data, classes=3, images=30, size=32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.csv").write_text("id,url\n1,x\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.csv").write_text("id,url,landmark_id\n")
    (tmp_path / "afile").write_text("not a folder")
    args = [a.format(nowhere=tmp_path / "nowhere", data=data, bad_csv=bad, empty=empty, afile=tmp_path / "afile")
            for a in args]
    p = cli(*args, env_home=home, check=False)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 2
    if args[0] == "train":  # a refused launch leaves no half-made run behind
        runs = home / "runs"
        assert not [d for d in runs.glob("*") if d.is_dir()] if runs.exists() else True


def test_stats_prints_the_scan_report(tmp_path, home):
    from PIL import Image
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 50, 0, 0)).save(tmp_path / cls / f"{i}.jpg")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"")
    p = cli("stats", tmp_path, "--top", "2", env_home=home)
    assert "7 files checked, 1 unreadable" in p.stdout
    assert "broken.jpg: empty file (0 bytes)" in p.stdout
