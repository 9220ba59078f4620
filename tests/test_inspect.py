"""`python -m core inspect RUN` (issue 22): label issues, near-duplicates and leaks on generated
photos with planted label flips, an exact copy under another label and a near-copy across the
train/holdout border.

The photos: 4 classes told apart by colour, each photo its own random high-contrast pattern. The
probe's features are the photos' 8 x 8 pixels (a LandmarkNet whose head input is the pooled image,
put in place of the ImageNet backbone, which takes seconds to load here): a linear probe tells the
colours apart, as pretrained features do on real photos (bench/label_noise.py measures that on
monuments44). Duplicates are found on inspect's own tiny-image descriptor, as in the product."""
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from torch import nn

from core.runs.store import RunStore
from core.serve import inspect as insp
from core.train.config import TrainConfig
from core.train.models import LandmarkNet
from tests.test_cli import last_json, run as cli

COLOURS = {"red": (230, 30, 30), "green": (30, 210, 30), "blue": (30, 30, 230), "yellow": (230, 230, 30)}
PER_CLASS = 12


def pixels_model(name, n, weights="imagenet"):
    net = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(8), flatten=nn.Flatten(), fc=nn.Linear(192, n)))
    return LandmarkNet(net, (0.5,) * 3, (0.25,) * 3, "fc", "pool"), "8 x 8 pixels (test)"


def photo(rng, colour) -> Image.Image:
    k = int(rng.integers(6, 9))
    mask = (rng.random((k, k, 1)) > 0.5) * 1.0
    a = mask * np.array(colour) + (1 - mask) * rng.integers(0, 256, 3) * 0.3
    return Image.fromarray(a.astype(np.uint8)).resize((32, 32), Image.NEAREST)


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A run (no training: its folder's files written here) over 4 x 12 photos plus the plants:
    red photos filed as green (flips), an exact copy of a blue photo filed as yellow, and a
    re-encoded, resized copy of a train photo in the holdout. Returns (run, plants)."""
    monkeypatch.setattr(insp, "feature_model", pixels_model)
    rng, root = np.random.default_rng(0), tmp_path / "data"
    rows = []
    for c, (label, colour) in enumerate(COLOURS.items()):
        (root / label).mkdir(parents=True)
        for i in range(PER_CLASS):
            p = root / label / f"{i:02d}.png"
            photo(rng, colour).save(p)
            rows.append((p, label, c, "holdout" if i == 0 else "val" if i < 3 else "train"))
    flips = [root / "green" / f"flip{i}.png" for i in range(2)]
    for p in flips:
        photo(rng, COLOURS["red"]).save(p)
        rows.append((p, "green", 1, "train"))
    Image.open(root / "blue" / "05.png").save(root / "yellow" / "copy.png")          # exact, two labels
    rows.append((root / "yellow" / "copy.png", "yellow", 3, "train"))
    Image.open(root / "red" / "07.png").convert("RGB").resize((34, 34)).save(root / "red" / "near.jpg", quality=80)
    rows.append((root / "red" / "near.jpg", "red", 0, "holdout"))                   # a leak: 07 is train
    store = RunStore()
    run = store.run(store.create(TrainConfig(data=str(root), model="small_cnn", weights="none", classes=4,
                                             image_size=32), status="done"))
    m = pd.DataFrame(rows, columns=["path", "label", "target", "split"]).astype({"path": str})
    m.to_csv(run.split_file, index=False)
    pd.DataFrame({"label": list(COLOURS), "name": [n.title() for n in COLOURS]}).to_json(run.classes_file)
    run.checkpoint.parent.mkdir()
    run.checkpoint.write_bytes(b"")                  # inspect never reads it (the run's own weights saw the labels)
    h = m[m["split"] == "holdout"].reset_index(drop=True)     # 4 class photos + near.jpg
    pred = h["target"].to_numpy().copy()
    pred[[1, 2]] = (pred[[1, 2]] + 1) % 4            # two wrong; near.jpg (last) right: 3/5 with, 2/4 without
    pd.DataFrame({"path": h["path"], "target": h["target"], "pred": pred, "conf": 0.9}).to_parquet(
        run.predictions_file("holdout"))
    return run, {"flips": {f"green/flip{i}.png" for i in range(2)}, "copy": ("blue/05.png", "yellow/copy.png"),
                 "near": ("red/07.png", "red/near.jpg")}


def test_flips_rank_first_duplicates_and_leak_found(planted, capsys):
    run, plant = planted
    code, out, err = cli(capsys, "inspect", run.id, "--folds", "3", "--top", "3", "--json")
    assert code == 0, err
    j = last_json(out)                               # the command line's JSON line, capped at --top
    assert list(j) == ["run_id", "label_issues", "duplicates", "leaks"] and j["run_id"] == run.id
    assert len(j["label_issues"]) == 3 and len(j["duplicates"]) == 2
    assert all(list(i) == ["image", "given", "given_name", "suggested", "suggested_name", "score"]
               for i in j["label_issues"])
    assert [list(d) for d in j["duplicates"]] == [["a", "b", "similarity", "splits"]] * 2
    assert j["leaks"] == {"pairs": 1, "holdout_acc": pytest.approx(3 / 5), "holdout_acc_without_leaks": 2 / 4}
    assert "fitting the probe out of fold" in err
    r = run.read_inspect()                           # everything, in the run folder
    issues = r["label_issues"]
    assert [i["image"] for i in issues[:3]] == [i["image"] for i in j["label_issues"]]
    assert r["images"] == 4 * PER_CLASS + 4 and len(issues) == r["images"] and r["missing"] == 0
    scores = [i["score"] for i in issues]
    assert scores == sorted(scores, reverse=True) and 0 <= min(scores) and max(scores) <= 1
    assert plant["flips"] <= {i["image"] for i in issues[:4]}     # both flips among the top 4 of 52
    flip = next(i for i in issues if i["image"] == "green/flip0.png")
    assert (flip["given"], flip["given_name"], flip["suggested"], flip["suggested_name"]) == \
        ("green", "Green", "red", "Red") and flip["flagged"]
    pairs = {(d["a"], d["b"]): d for d in r["duplicates"]}
    assert set(pairs) == {plant["copy"], plant["near"]}           # and no distinct pair
    assert pairs[plant["copy"]]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert pairs[plant["copy"]]["splits"] == ["train", "train"]
    assert pairs[plant["near"]]["splits"] == ["train", "holdout"] and pairs[plant["near"]]["similarity"] > 0.95
    assert j["duplicates"][0]["similarity"] >= j["duplicates"][1]["similarity"]
    by_image = {i["image"]: i for i in issues}
    assert by_image["yellow/copy.png"]["conflict"] == "blue/05.png"   # two labels: a label issue
    assert by_image["red/near.jpg"]["conflict"] is None
    assert r["leaks"] == {"pairs": 1, "holdout_images": 1, "holdout_acc": pytest.approx(3 / 5),
                          "holdout_acc_without_leaks": pytest.approx(2 / 4)}
    assert insp.leak_sentence(r["leaks"]) == ("1 holdout photo(s) have a near-copy in training or validation; "
                                              "holdout accuracy 50.0% without them (60.0% with).")


def test_vanished_photos_named_and_rest_inspected(planted, capsys):
    run, _ = planted
    root = run.config().data
    for p in ("blue/11.png", "red/05.png"):
        (Path(root) / p).unlink()
    code, out, err = cli(capsys, "inspect", run.id, "--folds", "2", "--top", "2")     # the readable output
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "features: 8 x 8 pixels (test)" and lines[1].startswith("label issues (score = how likely")
    assert lines[-1] == "1 holdout photo(s) have a near-copy in training or validation; holdout accuracy 50.0% " \
                        "without them (60.0% with)."
    assert "2 photo(s) of the run's split are missing or unreadable now and were left out (e.g. red/05.png, " \
           "blue/11.png); the other 50 were inspected." in err
    assert len(run.read_inspect()["label_issues"]) == 50


def test_refusals_are_one_sentence(planted, capsys):
    run, _ = planted
    code, _, err = cli(capsys, "inspect", run.id, "--folds", "1")
    assert code == 2 and err.strip() == "error: --folds must be at least 2 and --top at least 1; got 1 and 100."
    code, _, err = cli(capsys, "inspect", "nope")
    assert code == 2 and "There is no run 'nope'" in err
    m = pd.read_csv(run.split_file)
    m[m["label"] == "red"].to_csv(run.split_file, index=False)
    with pytest.raises(insp.UserError, match=f"^Run {run.id} has 1 class; label issues and duplicates need a run "
                                             "of at least 2 classes.$"):
        insp.inspect(run)
    run.checkpoint.unlink()
    code, _, err = cli(capsys, "inspect", run.id)
    assert code == 2 and err.strip() == (f"error: Run {run.id} has no checkpoint yet, so it has no finished split "
                                         "to inspect; wait for its first epoch to finish.")


def test_features_stand_in_when_imagenet_weights_are_missing(monkeypatch):
    import core.train.models as models
    built = []
    monkeypatch.setattr(models, "build_model", lambda name, n, weights: built.append((name, n, weights)))
    monkeypatch.setattr(models, "imagenet_available",
                        lambda name: (name == insp.STAND_IN, f"ImageNet weights for {name} are not cached here."))
    _, note = insp.feature_model("resnet18", 7)
    assert built == [(insp.STAND_IN, 7, "imagenet")]
    assert note == ("efficientnet_lite0 ImageNet features (stand-in: ImageNet weights for resnet18 are not cached "
                    "here)")
    _, note = insp.feature_model(insp.STAND_IN, 7)
    assert built[-1] == (insp.STAND_IN, 7, "imagenet") and note == "efficientnet_lite0 ImageNet features"


def panel_script(run_id: str, data_root: str):
    from dashboard.inspect_panel import inspect_panel
    inspect_panel(run_id, data_root)


def test_evaluate_panel_queues_the_job_then_shows_tables_and_leak_sentence(planted, started_jobs):
    from streamlit.testing.v1 import AppTest
    run, plant = planted
    at = AppTest.from_function(panel_script, args=(run.id, run.config().data), default_timeout=60)
    at.run()
    assert not at.exception and not at.dataframe                    # nothing inspected yet
    at.button(key="eval_inspect_start").click().run()
    assert "Inspecting the photos: waiting to start…" in at.get("progress")[0].proto.text
    assert started_jobs.run() == 1                                  # the queued job, run here
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.value == "1 holdout photo(s) have a near-copy in training or validation; holdout accuracy 50.0% "
                          "without them (60.0% with)." for m in at.markdown)
    issues, dups = (d.value for d in at.dataframe)
    assert len(issues) == 4 * PER_CLASS + 4 and set(issues["image"][:4]) >= plant["flips"]
    assert issues["photo"].str.startswith("data:image/png;base64,").all()
    assert "green → red" in set(issues["given → suggested"][:4].str.lower())
    assert set(zip(dups["A"], dups["B"])) == {plant["copy"], plant["near"]}
    assert set(dups["splits"]) == {"train / train", "train / holdout"}
