"""core.serve.features: the one place images become embedding vectors (issues 22, 23)."""
import numpy as np
import pytest
import torch
from PIL import Image

from core.serve.features import embed, embed_images, head_input
from core.train.models import build_model


def test_embed_is_the_heads_input_at_unit_length_and_leaves_no_hook(tmp_path):
    model = build_model("small_cnn", 5, weights="none").eval()
    x = torch.rand(4, 3, 32, 32)
    with head_input(model) as grab:
        logits = model(x)
    head = model.submodule(model.head)
    assert torch.allclose(head(grab["x"]), logits, atol=1e-5)          # the vector the head consumes
    e = embed(model, x)
    assert e.shape == (4, grab["x"].shape[1]) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    with pytest.raises(RuntimeError), head_input(model):
        raise RuntimeError("boom")
    assert not head._forward_hooks                                        # removed after an error too
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_text("not a photo")
    feats, ok = embed_images(model, [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "gone.jpg"], 32)
    assert ok.tolist() == [True, False, False] and feats.shape == (1, e.shape[1])


def test_run_images_are_the_stores_pixels_that_evaluation_fed_the_model(use_trained_home, monkeypatch):
    """A prepared run's photos come from its store without one decode, and the network's answer on
    them is the run's own holdout evaluation (pred, conf); a vanished photo is decoded (tried) into
    the store as training would, and left out."""
    from core.data.prepared import pool
    from core.runs.store import RunStore
    from core.serve.features import run_images
    from core.serve.predictor import load_predictor
    run = RunStore().require(use_trained_home[1][0])
    pred, theirs = load_predictor(run), run.predictions("holdout")
    assert not pred.cfg.tta and len(theirs) == 12
    gone = run.checkpoint.parent / "gone.jpg"
    real = pool._decode
    monkeypatch.setattr(pool, "_decode", lambda args: pytest.fail(f"decoded {args[0]}: the store has it"))
    source, seen, logits = {}, [], []
    for idx, x in run_images(pred.cfg, theirs["path"], batch=5, source=source):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
        seen += idx.tolist()
        logits.append(pred.model(x))
    assert source["pixels"] == "store" and seen == list(range(12))
    conf, answer = torch.softmax(torch.cat(logits), 1).max(1)
    assert answer.tolist() == theirs["pred"].tolist()
    assert np.allclose(conf.detach().numpy(), theirs["conf"], atol=1e-5)
    monkeypatch.setattr(pool, "_decode", real)
    prepared, done = [], []
    batches = list(run_images(pred.cfg, [theirs["path"][0], str(gone), theirs["path"][1]], progress=lambda *a: done.append(a),
                              preparing=lambda *a: prepared.append(a)))
    assert [b[0].tolist() for b in batches] == [[0, 2]] and prepared == [(1, 1)] and done == [(3, 3)]


def test_run_images_falls_back_to_each_photo_only_where_no_store_serves(tmp_path):
    """The store's rows (decoded into it on first use, as training does) for a prepared-pipeline run;
    each photo decoded with PIL for a plain-pipeline run, and for a data set that cannot be indexed."""
    import shutil
    from core.data.prepared import store_dir
    from core.serve.features import image_tensor, run_images
    from core.train.config import TrainConfig
    root = tmp_path / "data"
    for c, colour in enumerate([(200, 10, 10), (10, 200, 10)]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40 + 8 * i, 30), colour).save(root / f"c{c}" / f"{i}.png")
    paths = sorted(str(p) for p in root.rglob("*.png"))

    def read(cfg):
        source = {}
        got = [(idx.tolist(), x) for idx, x in run_images(cfg, paths + [str(root / "gone.png")], source=source)]
        return source, [i for idx, _ in got for i in idx], torch.cat([x for _, x in got] or [torch.zeros(0)])
    source, idx, x = read(TrainConfig(data=str(root), classes=2, image_size=16, store="raw"))
    assert source == {"pixels": "store", "why": source["why"]} and "raw store" in source["why"]
    assert idx == [0, 1, 2, 3] and (store_dir(str(root.resolve()), 16) / "images.u8").stat().st_size == 5 * 16 * 16 * 3
    assert torch.allclose(x[1], image_tensor(paths[1], 16)[0], atol=1 / 255)     # the same photo, within rounding
    source, idx, x = read(TrainConfig(data=str(root), classes=2, image_size=16, pipeline="plain"))
    assert source["pixels"] == "photos" and "plain pipeline" in source["why"] and idx == [0, 1, 2, 3]
    assert torch.equal(x[1], image_tensor(paths[1], 16)[0])
    shutil.rmtree(root)
    source, idx, x = read(TrainConfig(data=str(root), classes=2, image_size=16))
    assert source["pixels"] == "photos" and "cannot be indexed" in source["why"] and idx == [] and len(x) == 0
