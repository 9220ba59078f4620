"""Data set versions (issue 22): exclude / relabel into a version; the photos stay as they are."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data import registry
from core.data.readers import detect_layout, load_index
from core.data.versions import make_version, read_version, versions_of
from core.errors import UserError

CLASSES = {"arch": 10, "bridge": 10, "tower": 10}


@pytest.fixture
def base(tmp_path) -> Path:
    """A class-per-folder set of tiny generated PNGs (each image a different colour)."""
    root = tmp_path / "set"
    for c, (label, n) in enumerate(CLASSES.items()):
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), (40 * c, 20 * i, 7), np.uint8)).save(root / label / f"{i}.png")
    return root


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_version_excludes_and_relabels_without_touching_the_photos(base, home):
    before = _hashes(base)
    out = make_version(base, "clean-1", exclude=["arch/0.png", str(base / "arch/1.png")],
                       relabel={"bridge/0.png": "tower"}, reason="wrong landmark")
    assert out == home / "versions" / "clean-1" and detect_layout(out) == "version"
    assert _hashes(base) == before                             # not one byte of the base changed
    meta = json.loads((out / "version.json").read_text())
    assert meta["base"] == str(base.resolve()) and meta["name"] == "clean-1" and meta["parent_version"] is None
    assert (out / "changes.csv").read_text().splitlines() == [
        "path,action,new_label,reason", "arch/0.png,exclude,,wrong landmark", "arch/1.png,exclude,,wrong landmark",
        "bridge/0.png,relabel,tower,wrong landmark"]
    index = load_index(out)
    s = index.samples.assign(rel=index.samples["path"].str.slice(len(str(base.resolve())) + 1))
    assert not s["rel"].isin(["arch/0.png", "arch/1.png"]).any()
    assert s.set_index("rel").loc["bridge/0.png", "label"] == "tower"
    assert index.counts().to_dict() == {"tower": 11, "bridge": 9, "arch": 8}
    assert len(index.base.samples) == 30
    entry = registry.by_name("clean-1")                        # listed (and picked) like any data set
    assert entry["source"] == "version" and registry.describe(entry) == \
        "clean-1 — version of set: 2 excluded, 1 relabelled"
    # a version of the version keeps the original base and both lists of changes
    v2 = read_version(make_version(out, "clean-2", exclude=["tower/3.png"]))
    assert v2.base == base.resolve() and v2.parent_version == str(out) and v2.counts() == (3, 1)
    assert [v.name for v in versions_of(base)] == ["clean-1", "clean-2"] == [v.name for v in versions_of(out)]


BAD = [
    (dict(exclude=[f"arch/{i}.png" for i in range(10)]),
     "These changes would leave class 'arch' with no images (it has 10); keep at least one of its images."),
    (dict(relabel={"arch/2.png": "castle"}),
     "Cannot relabel arch/2.png to 'castle': the data set has no such class (its 3 classes include arch, bridge, tower)."),
    (dict(exclude=["arch/99.png", "nope.png"]),
     "'arch/99.png' (and 1 more) is not an image of the data set {base}; give paths relative to {base} "
     "(as `inspect` lists them) or absolute ones inside it."),
    (dict(exclude=[], relabel={}), "Nothing to change: give at least one image to exclude or relabel."),
    (dict(exclude=["arch/2.png"], relabel={"arch/2.png": "tower"}),
     "arch/2.png is listed both to exclude and to relabel; keep it in one list."),
    (dict(name="taken", exclude=["arch/2.png"]), "A data set named 'taken' already exists; choose another name."),
]


def test_bad_input_is_one_sentence_and_writes_nothing(base, home):
    registry.remember(base, "taken")
    for kw, message in BAD:
        with pytest.raises(UserError) as e:
            make_version(base, **{"name": "v", **kw})
        assert str(e.value) == message.format(base=base.resolve())
        assert not list((home / "versions").glob("*"))          # not even a half-made folder
        assert [d["name"] for d in registry.listed()] == ["taken"]


def test_a_run_on_a_version_keeps_the_base_holdout(base, tmp_path):
    from core.runs.store import RunFolder
    from core.train.engine import load_data
    from tests.conftest import tiny_config

    def holdout(data, name, **kw):
        (tmp_path / name).mkdir()
        m = load_data(tiny_config(data, classes=3, holdout=0.3, val=0.2, **kw), RunFolder(tmp_path / name)).manifest
        return m[m["split"] == "holdout"].set_index("path")["label"]

    base_h = holdout(base, "base")
    root = str(base.resolve())
    gone, moved = base_h.index[0], base_h.index[1]            # a holdout image excluded, another relabelled
    target = next(c for c in CLASSES if c != base_h[moved])
    version = make_version(base, "v", exclude=[gone], relabel={moved[len(root) + 1:]: target})
    kept = holdout(version, "version")
    assert sorted(kept.index) == sorted(base_h.index.drop(gone))     # the same photos, less the excluded one
    assert kept[moved] == target and (kept.drop(moved) == base_h.drop([gone, moved])).all()
    fresh = holdout(version, "fresh", new_holdout=True)               # asked otherwise: drawn afresh
    assert sorted(fresh.index) != sorted(kept.index)


def test_cli_makes_and_lists_versions(base, tmp_path, capsys):
    from core.cli import main
    (tmp_path / "ex.txt").write_text("path\narch/3.png\n" + str(base / "arch/4.png") + "\n")
    (tmp_path / "rl.csv").write_text("path,new_label\nbridge/5.png,arch\n")
    args = ["dataset", "version", str(base), "--exclude", str(tmp_path / "ex.txt"), "--relabel",
            str(tmp_path / "rl.csv"), "--name", "cli-1", "--reason", "dup"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: out[k] for k in ("name", "base", "excluded", "relabelled", "parent_version")} == {
        "name": "cli-1", "base": str(base.resolve()), "excluded": 2, "relabelled": 1, "parent_version": None}
    assert main(args) == 2                                             # the name is taken now
    assert capsys.readouterr().err.strip() == "error: A data set named 'cli-1' already exists; choose another name."
    assert main(["dataset", "versions", str(base), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(v["name"], v["excluded"], v["relabelled"]) for v in listed["versions"]] == [("cli-1", 2, 1)]


def test_version_form_creates_a_version_and_offers_it_everywhere(base, home):
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st
        from dashboard.common import dataset_path_in_use
        from dashboard.versions import version_form, version_summary
        version_form(st.session_state["root"], ["arch/0.png", "arch/1.png"], key="vf")
        version_summary(dataset_path_in_use())      # as the Dataset page shows the data set in use

    at = AppTest.from_function(script, default_timeout=30)
    at.session_state["root"] = str(base)
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key="vf_name").value == "set-v1"
    at.text_input(key="vf_reason").set_value("blurred")
    at.button[0].click().run()          # the form's submit button
    assert not at.exception, at.exception
    v = read_version(home / "versions" / "set-v1")
    assert v.counts() == (2, 0) and v.changes["reason"].tolist() == ["blurred", "blurred"]
    assert "set-v1" in at.success[0].value and "2 excluded, 0 relabelled" in at.success[0].value
    at.button(key="vf_use").click().run()
    assert at.session_state["data_in_use"] == "set-v1" and at.query_params["data"] == "set-v1"
    assert at.info[0].value.startswith(f"Version **set-v1** of **set** (`{base.resolve()}`): 2 excluded, 0 relabelled.")
    assert at.text_input(key="vf_name").value == "set-v2"               # the next version's name


def test_compare_says_a_run_trained_on_a_version_of_the_other_runs_data(base):
    from core.data.splits import save_manifest
    from core.runs.store import RunStore
    from dashboard.versions import relation_line
    from tests.conftest import tiny_config
    root = base.resolve()
    version = make_version(base, "clean-1", exclude=["arch/0.png", "arch/1.png"])
    store = RunStore()
    ids = [store.create(tiny_config(d, classes=3)) for d in (base, version, version)]
    holdouts = [["arch/0.png", "tower/0.png"], ["tower/0.png"], ["tower/1.png"]]
    for run_id, hold in zip(ids, holdouts):
        m = pd.DataFrame({"path": [str(root / p) for p in hold], "label": "x", "target": 0, "split": "holdout"})
        save_manifest(m, store.run(run_id).split_file)
    runs = [store.get(i) for i in ids]
    names = dict(zip(ids, "ABC"))
    assert relation_line(runs[0], runs[1], names) == \
        "B trained on version 'clean-1' of A's data set: 2 excluded, 0 relabelled; same holdout: yes, less 1 excluded image(s)."
    assert relation_line(runs[2], runs[0], names) == \
        "C trained on version 'clean-1' of A's data set: 2 excluded, 0 relabelled; same holdout: no."
    assert relation_line(runs[1], runs[2], names) is None      # one version, not a version and its base
