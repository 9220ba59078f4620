"""The compressed (JPEG) prepared store of issue 20: written, read back as the raw store's
pixels within JPEG's error, resumed after an interruption, chosen by size, and trained on."""
import numpy as np
import pytest
import torch
import torchvision.io  # noqa: F401  (the suite imports it anyway; the durations below are this file's work)
from PIL import Image, ImageDraw

import core.data.prepared as P
from core.data.prepared.jpeg import DATA, JpegStore
from core.errors import UserError
from core.runs.jobs import run_job
from core.runs.store import RunStore
from core.train.engine import _LazyRows  # the engine's view of one split's rows
from core.train.pipeline import PreparedBatches, decode_on_device, to_float
from tests.conftest import tiny_config

SIZE = 32


def _photo(i: int, w=48, h=40) -> Image.Image:
    """A smooth picture whose colour says its class (i % 3), with a mark that moves with i."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.zeros((h, w, 3))
    base[..., i % 3] = 200
    a = base + np.stack([x * 40 / w, y * 40 / h, (x + y) * 20 / (w + h)], -1)
    im = Image.fromarray(a.astype(np.uint8))
    ImageDraw.Draw(im).rectangle([2 + i % 9, 4, 14 + i % 9, 12], fill=(30, 30, 30))
    return im


def _files(tmp_path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        p = tmp_path / f"{i:03d}.jpg"
        _photo(i).save(p, quality=95)
        paths.append(str(p))
    return paths


def test_jpeg_store_holds_the_raw_stores_pixels_and_feeds_batches(tmp_path):
    paths = _files(tmp_path, 12)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    paths.append(str(bad))
    raw = P.prepare(paths, SIZE, key="k", workers=1)
    jpg = P.prepare(paths, SIZE, key="k", workers=1, store="jpeg")
    assert isinstance(jpg.store, JpegStore) and jpg.decoded == 13
    assert np.array_equal(jpg.ok, raw.ok) and jpg.ok.sum() == 12
    assert jpg.reasons == raw.reasons and "cannot identify image file" in jpg.reasons[0][1]
    a, b = raw.images().astype(int), jpg.images().astype(int)
    assert b.shape == (13, SIZE, SIZE, 3) and not b[-1].any()          # the unreadable file: a black row
    assert np.abs(a - b).mean() < 2.5 and np.abs(a - b).max() < 60     # JPEG q90 error, not another picture
    d = P.store_dir("k", SIZE, "jpeg")
    assert (d / DATA).stat().st_size * 4 < (P.store_dir("k", SIZE) / "images.u8").stat().st_size
    assert P.prepare(paths, SIZE, key="k", workers=1, store="jpeg").decoded == 0

    # batches: each target is the class its picture's colour says, on the CPU path and on the
    # batched decode path (nvJPEG's on CUDA; torchvision's CPU decoder here)
    ok = np.flatnonzero(jpg.ok)
    targets = ok % 3
    for device_decode in (False, True):
        batches = PreparedBatches(jpg.store, targets, batch_size=5, shuffle=True, seed=1, device_decode=device_decode)
        split = PreparedBatches(_LazyRows(jpg.store, jpg.rows[ok]), targets, 5, shuffle=True, seed=1,
                                    device_decode=device_decode)
        seen = 0
        for x, y in split.epoch(0):
            assert isinstance(x, list) == device_decode
            img = to_float(x, "cpu", channels_last=False)
            assert img.shape[1:] == (3, SIZE, SIZE)
            assert torch.equal(img.mean((2, 3)).argmax(1), y)
            seen += len(y)
        assert seen == 12 and len(batches) == 3


def test_an_interrupted_jpeg_store_resumes_and_repairs_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "CHUNK", 4)
    paths = _files(tmp_path, 20)
    whole = P.prepare(paths, SIZE, key="whole", workers=1, store="jpeg").images()

    def stop(done, total):
        if done == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        P.prepare(paths, SIZE, key="cut", workers=1, store="jpeg", progress=stop)
    d = P.store_dir("cut", SIZE, "jpeg")
    with open(d / DATA, "ab") as f:
        f.write(b"\xff\xd8 torn record a crash left")              # uncommitted bytes past the index
    prep = P.prepare(paths, SIZE, key="cut", workers=1, store="jpeg")
    assert prep.decoded == 12                                     # 8 committed in two chunks were kept
    assert np.array_equal(prep.images(), whole) and prep.ok.all()

    # a record the disk changed fails its checksum and is encoded again; a changed file too
    index = __import__("pandas").read_parquet(d / "index.parquet").set_index("path")
    off = int(index.loc[paths[3], "offset"]) + 40
    with open(d / DATA, "r+b") as f:
        f.seek(off)
        byte = f.read(1)
        f.seek(off)
        f.write(bytes([byte[0] ^ 0xFF]))
    _photo(7).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(paths[5], quality=95)
    again = P.prepare(paths, SIZE, key="cut", workers=1, store="jpeg")
    assert again.decoded == 2
    imgs = again.images()
    assert np.array_equal(imgs[3], whole[3]) and not np.array_equal(imgs[5], whole[5])


def test_auto_chooses_raw_below_the_threshold_and_jpeg_above():
    assert P.choose_store("auto", 1000, 224)[0] == "raw"
    kind, why = P.choose_store("auto", 1_600_000, 224)
    assert kind == "jpeg" and "the raw store would take 241 GB" in why
    assert P.choose_store("raw", 1_600_000, 224)[0] == "raw"
    assert P.choose_store("jpeg", 10, 32) == ("jpeg", "jpeg store (as set; the raw store would take 3.07e-05 GB)")
    with pytest.raises(UserError, match="Unknown store 'webp'; choose from auto, raw, jpeg."):
        tiny_config(".", store="webp").validate()
    assert not decode_on_device(np.zeros((1, 2, 2, 3), np.uint8), torch.device("cpu"))
    assert not decode_on_device(JpegStore(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), 2),
                                torch.device("cpu"))                  # no CUDA: the CPU decodes


def test_a_run_trains_on_the_jpeg_store(demo_root):
    store = RunStore()
    run_id = store.create(tiny_config(demo_root, epochs=1, store="jpeg", max_images=60), status="running")
    out = run_job(store, run_id)
    assert out["status"] == "done" and out["val_acc"] is not None
    msgs = [e["message"] for e in store.events(run_id) if "preparing" in str(e.get("message"))]
    assert msgs and "jpeg store (as set" in msgs[0]
    assert list((P.store_dir(str(demo_root), 32, "jpeg")).glob(DATA))
