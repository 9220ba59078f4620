"""The embedding store, nearest neighbours and the kNN classifier (issues 22 and 23).

One module-wide copy of the shared trained run is embedded once, through the CLI (`embed --json`),
after two rows were added to its split.csv: a holdout copy of a training photo (an exact duplicate)
and a photo that has vanished since training.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.errors import Cancelled, UserError
from core.serve import embeddings


TRAIN_PER_CLASS = 15       # of the shared run's ~45 training photos per class: 60 embedded, plus its 12 holdout


@pytest.fixture(scope="module")
def embedded(trained_home, tmp_path_factory):
    """(runs root, run id, the embed command's last stdout line, the duplicate's and original's paths)."""
    from core.runs.store import RunStore
    home = tmp_path_factory.mktemp("embedded") / "home"
    shutil.copytree(trained_home[0], home)
    root, run_id = home / "runs", trained_home[1][0]
    split_file = RunStore(root).require(run_id).split_file
    manifest = pd.read_csv(split_file, dtype=str)
    train = manifest[manifest["split"] == "train"].groupby("label").head(TRAIN_PER_CLASS)
    manifest = pd.concat([manifest[manifest["split"] == "holdout"], train])    # fewer photos: a faster embed
    original = train.iloc[0]
    duplicate = home / "duplicate.jpg"
    shutil.copy(original["path"], duplicate)
    extra = pd.DataFrame([{**original, "path": str(duplicate), "split": "holdout"},
                          {**original, "path": str(home / "gone.jpg"), "split": "train"}])
    pd.concat([manifest, extra]).to_csv(split_file, index=False)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(embeddings, "TSNE_MAX", 0)        # PCA: t-SNE has its own test below
        assert main(["embed", run_id, "--runs", str(root), "--json"]) == 0
    return root, run_id, out.getvalue().strip().splitlines()[-1], str(duplicate), original["path"]


def _run(root, run_id):
    from core.runs.store import RunStore
    return RunStore(root).require(run_id)


def test_embed_cli_writes_rows_vectors_and_counts_vanished_photos(embedded):
    root, run_id, line, duplicate, _ = embedded
    out = json.loads(line)
    assert {k: out[k] for k in ("run_id", "n", "missing", "map", "index")} == {
        "run_id": run_id, "n": 73, "missing": 1, "map": "pca", "index": "exact"}    # 60 train vectors < IVF_MIN
    assert out["missing_examples"] == [str(root.parent / "gone.jpg")]
    e = embeddings.load(_run(root, run_id))
    assert list(e.frame.columns) == ["path", "split", "target", "label", "name", "pred", "conf", "correct", "x", "y"]
    assert e.vectors.shape == (73, out["dim"]) and np.allclose(np.linalg.norm(e.vectors, axis=1), 1, atol=1e-5)
    assert (e.frame["correct"] == (e.frame["pred"] == e.frame["target"])).all()
    assert e.frame["split"].value_counts().to_dict()["holdout"] == 13          # 12 + the duplicate
    assert not embeddings.stale(_run(root, run_id))


def test_pred_and_conf_are_the_network_s_answer(embedded):
    """The same as the run's own holdout evaluation wrote (no mirror averaging in the tiny config)."""
    root, run_id, *_ = embedded
    run = _run(root, run_id)
    mine = embeddings.load(run).frame.set_index("path")
    theirs = pd.read_parquet(run.predictions_file("holdout")).set_index("path")
    assert not run.config().tta and len(theirs) == 12
    assert mine.loc[theirs.index, "pred"].tolist() == theirs["pred"].tolist()
    assert np.allclose(mine.loc[theirs.index, "conf"], theirs["conf"], atol=1e-5)


def test_a_duplicate_finds_its_original_first_and_no_row_finds_itself(embedded):
    root, run_id, _, duplicate, original = embedded
    e = embeddings.load(_run(root, run_id))
    dup = int(np.flatnonzero(e.frame["path"] == duplicate)[0])
    first = e.neighbours([dup], k=3)[0]
    assert list(first.columns) == ["path", "split", "label", "name", "similarity", "row"]
    assert first["path"].iloc[0] == original and first["similarity"].iloc[0] == pytest.approx(1, abs=2e-3)
    assert (first["split"] == "train").all() and len(first) == 3
    orig = int(first["row"].iloc[0])
    own = e.neighbours([orig], k=4, splits=("train", "holdout"))[0]
    assert orig not in own["row"].tolist() and own["row"].iloc[0] == dup       # itself left out, its twin first
    as_vector = e.neighbours(e.vectors[[dup]], k=1)[0]                           # an uploaded photo's vector
    assert as_vector["row"].tolist() == [orig]


def test_knn_votes_by_hand():
    """Three training photos of class 0 at similarity .9/.8/.1 and one of class 1 at .95: with k=3,
    class 0 has 1.7 against 0.95, so it wins with confidence .9 (its nearest photo); class 1 second."""
    angles = np.arccos([1.0, 0.9, 0.8, 0.1, 0.95])
    vectors = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    frame = pd.DataFrame({"path": list("qabcd"), "split": ["holdout"] + ["train"] * 4,
                          "target": [0, 0, 0, 0, 1], "label": list("00001"), "name": list("AAAAB")})
    e = embeddings.Embeddings(frame, vectors)
    v = e.classify([0], k=3)
    assert v.pred.tolist() == [0] and v.conf[0] == pytest.approx(0.9, abs=1e-6)
    assert v.top[0, :2].tolist() == [0, 1] and v.top[0, 2:].tolist() == [-1, -1, -1]
    assert v.top_sim[0, 1] == pytest.approx(0.95, abs=1e-6)
    assert e.frame["path"][v.rows[0]].tolist() == ["d", "a", "b"]


def test_knn_eval_matches_a_brute_force_vote(embedded):
    root, run_id, *_ = embedded
    e = embeddings.load(_run(root, run_id))
    m, _ = embeddings.knn_evaluation(e, "holdout", 4)
    f = e.frame
    h, t = np.flatnonzero(f["split"] == "holdout"), np.flatnonzero(f["split"] == "train")
    sims = e.vectors[h] @ e.vectors[t].T
    near = np.argsort(-sims, 1)[:, :10]
    scores = np.zeros((len(h), 4))
    for i, row in enumerate(near):
        np.add.at(scores[i], f["target"].to_numpy()[t][row], sims[i, row])
    assert m["acc"] == pytest.approx((scores.argmax(1) == f["target"].to_numpy()[h]).mean())
    assert m["n"] == 13 and m["acc"] > 0.25                                     # chance: 1 in 4 classes


def test_eval_knn_json_and_the_missing_embeddings_sentence(embedded, capsys):
    root, run_id, *_ = embedded
    assert main(["eval", run_id, "--classifier", "knn", "--runs", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    m, _ = embeddings.knn_evaluation(embeddings.load(_run(root, run_id)), "holdout", 4)
    assert out["classifier"] == "knn" and out["acc"] == pytest.approx(m["acc"]) and out["n"] == 13
    assert out["top5"] >= out["acc"] and out["softmax_acc"] is not None
    other = [r for r in os.listdir(root) if (root / r).is_dir() and r != run_id][0]
    for argv in (["eval", other, "--classifier", "knn"], ["predict", "--run", other, "--classifier", "knn", "x.jpg"]):
        assert main([*argv, "--runs", str(root)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"error: Run {other} has no embeddings yet, which the kNN classifier needs; compute them with "
            f"python -m core embed {other}.")


def test_predict_knn_names_the_nearest_training_photo(embedded, capsys):
    root, run_id, _, duplicate, original = embedded
    assert main(["predict", "--run", run_id, "--classifier", "knn", duplicate, "--runs", str(root), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    label = pd.read_csv(_run(root, run_id).split_file, dtype=str).set_index("path").loc[original, "label"]
    near = pd.DataFrame(r["neighbours"])                  # the 10 training photos that voted, nearest first
    assert len(near) == 10 and (near["split"] == "train").all()
    assert near["path"][0] == original and near["label"][0] == label
    assert near["similarity"][0] == pytest.approx(1, abs=2e-3)
    votes = near.groupby("label")["similarity"].sum()
    assert r["classifier"] == "knn" and r["top"][0]["label"] == votes.idxmax()
    assert r["top"][0]["similarity"] == pytest.approx(near[near["label"] == votes.idxmax()]["similarity"].max())


def test_stale_after_the_checkpoint_changes_and_an_interrupted_embed_keeps_the_old_pair(embedded, tmp_path):
    root, run_id, *_ = embedded
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    run = _run(copy, run_id)
    before = run.embeddings_file.read_bytes(), run.embedding_rows_file.read_bytes()
    with pytest.raises(Cancelled):
        embeddings.compute(run, should_stop=lambda: True)
    assert (run.embeddings_file.read_bytes(), run.embedding_rows_file.read_bytes()) == before
    assert sorted(p.name for p in run.dir.glob("*embeddings*")) == ["embeddings.npy", "embeddings.parquet"]
    t = run.checkpoint.stat().st_mtime
    os.utime(run.checkpoint, (t + 10, t + 10))
    assert embeddings.stale(run)


def test_a_new_vectors_file_beside_old_rows_is_not_shown(embedded, tmp_path):
    """The vectors are written first, the rows last: in between, a reader must not pair them."""
    root, run_id, *_ = embedded
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    run = _run(copy, run_id)
    assert embeddings.load(run) is not None
    buf = io.BytesIO()
    np.save(buf, np.load(run.embeddings_file)[::-1])             # same shape, other vectors
    run.embeddings_file.write_bytes(buf.getvalue())
    assert embeddings.load(run) is None


def test_a_run_without_checkpoint_is_refused_in_one_sentence(use_trained_home):
    from core.runs.store import RunStore
    _, ids = use_trained_home
    run = RunStore().require(ids[1])
    run.checkpoint.unlink()
    assert main(["embed", ids[1]]) == 2
    with pytest.raises(UserError, match=f"^Run {ids[1]} has no checkpoint yet"):
        embeddings.compute(run)


def test_tsne_map_of_a_small_set():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, 16)) * 5
    v = np.concatenate([c + rng.standard_normal((12, 16)) for c in centres]).astype(np.float32)
    xy, how = embeddings.layout(v)
    assert how == "tsne" and xy.shape == (24, 2)
    a, b = xy[:12].mean(0), xy[12:].mean(0)            # the two planted clusters stay apart
    spread = max(np.linalg.norm(xy[:12] - a, axis=1).max(), np.linalg.norm(xy[12:] - b, axis=1).max())
    assert np.linalg.norm(a - b) > spread


# ------------------------------------------------------------------ the stored inverted file (issue 23)

def _planted(tmp_path, n=400, dim=16, seed=0):
    """A run-like object and n unit vectors in 8 clusters (train), plus a near-duplicate of each of the
    first 20 train vectors (holdout)."""
    from types import SimpleNamespace
    rng = np.random.default_rng(seed)
    target = rng.integers(8, size=n)
    v = rng.standard_normal((8, dim))[target] + 0.7 * rng.standard_normal((n, dim))
    v = np.concatenate([v, v[:20] + 0.01 * rng.standard_normal((20, dim))])
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    target = np.concatenate([target, target[:20]])
    rows = pd.DataFrame({"path": [f"{i}.jpg" for i in range(len(v))], "split": ["train"] * n + ["holdout"] * 20,
                         "target": target, "label": target.astype(str), "name": target.astype(str)})
    run = SimpleNamespace(id="r", embeddings_file=tmp_path / "embeddings.npy",
                          embedding_rows_file=tmp_path / "embeddings.parquet",
                          embedding_index_file=tmp_path / "embeddings.ivf")
    return run, v, rows


def test_a_large_train_split_gets_a_stored_inverted_file_that_answers_as_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "IVF_MIN", 200)
    run, v, rows = _planted(tmp_path)
    meta = embeddings.write(run, v, rows, {"n": len(rows)})
    nlist = round(4 * np.sqrt(400))
    assert run.embedding_index_file.exists() and meta["index"].startswith(f"ivf nlist={nlist} nprobe=")
    assert embeddings.metadata(run)["index"] == meta["index"]
    e = embeddings.load(run)
    assert e.served == meta["index"]
    exact = embeddings.Embeddings(e.frame, e.vectors)                       # no index file: exact
    assert exact.served == "exact"
    dups = np.arange(400, 420)
    sims, found = e.search(dups, 5)
    assert found[:, 0].tolist() == list(range(20))                           # each planted twin first
    assert np.array_equal(found[:, 0], exact.search(dups, 5)[1][:, 0])
    assert sims[:, 0] == pytest.approx(exact.search(dups, 5)[0][:, 0], abs=1e-6)
    nb = e.neighbours([3, 7], k=6)                                           # a row never returns itself
    assert [3 not in nb[0]["row"].tolist(), 7 not in nb[1]["row"].tolist()] == [True, True]
    assert [len(f) for f in nb] == [6, 6]


def test_a_stale_or_missing_inverted_file_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "IVF_MIN", 200)
    run, v, rows = _planted(tmp_path)
    embeddings.write(run, v, rows, {"n": len(rows)})
    old = run.embedding_index_file.read_bytes()
    monkeypatch.setattr(embeddings, "IVF_MIN", 1000)                    # a new compute, too small for an index:
    w = v[::-1].copy()                                                   # other vectors, and the old index removed
    assert embeddings.write(run, w, rows, {"n": len(rows)})["index"] == "exact"
    assert not run.embedding_index_file.exists() and embeddings.metadata(run)["index"] == "exact"
    run.embedding_index_file.write_bytes(old)                            # ... or left behind by a crash
    e = embeddings.load(run)
    assert e.served == "exact"
    assert e.search([400], 1)[1][0, 0] == int(np.argmax(e.vectors[:400] @ e.vectors[400]))
    monkeypatch.setattr(embeddings, "IVF_MIN", 200)                     # an index of other vectors than these
    embeddings.write(run, w, rows, {"n": len(rows)})
    run.embedding_index_file.write_bytes(old)
    assert embeddings.load(run).served == "exact"
    run.embedding_index_file.unlink()                                    # named but missing
    assert embeddings.load(run).served == "exact"
