import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data import readers as data
from core.errors import UserError
from core.data.prepared import prepare


def _jpeg(path, color=(200, 30, 30), size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")


def test_gldv2_layout_from_demo(demo_root):
    idx = data.load_index(demo_root)
    assert idx.layout == "gldv2" and idx.synthetic
    assert len(idx.samples) == 240
    p = idx.samples["path"].iloc[0]
    assert "/train/" in p and Image.open(p).size == (48, 48)
    assert all(idx.name(l) != l for l in idx.counts().index)  # readable names from the category CSV


def test_gldv1_flat_layout(tmp_path):
    rows = []
    for i in range(6):
        iid = f"abc{i:03d}"
        _jpeg(tmp_path / f"{iid}.jpg")
        rows.append((iid, "http://x", i % 2))
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(tmp_path / "train.csv", index=False)
    idx = data.load_index(tmp_path)
    assert idx.layout == "gldv1" and sorted(idx.counts().tolist()) == [3, 3]


def test_class_per_folder_layout(tmp_path):
    for cls, n in (("taj", 3), ("qutub", 2)):
        for i in range(n):
            _jpeg(tmp_path / cls / f"{i}.jpg")
    (tmp_path / "qutub" / "notes.txt").write_text("not an image")
    idx = data.load_index(tmp_path)
    assert idx.layout == "folders" and idx.counts().to_dict() == {"taj": 3, "qutub": 2}


def test_csv_missing_columns_names_file_and_columns(tmp_path):
    (tmp_path / "train.csv").write_text("id,url\nabc,http://x\n")
    with pytest.raises(UserError, match=r"train.csv is missing column\(s\) landmark_id"):
        data.load_index(tmp_path)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a\\b"])
def test_unsafe_ids_are_rejected(tmp_path, bad):
    (tmp_path / "train.csv").write_text(f"id,url,landmark_id\n{bad},http://x,1\n")
    with pytest.raises(UserError, match="unsafe image id"):
        data.load_index(tmp_path)


def test_not_a_dataset(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        data.load_index(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is not a data set"):
        data.load_index(tmp_path / "empty")


def test_corrupt_files_are_skipped_and_reported(tmp_path):
    for i in range(4):
        _jpeg(tmp_path / "a" / f"{i}.jpg", size=(80, 60))
    (tmp_path / "a" / "zero.jpg").write_bytes(b"")
    (tmp_path / "a" / "text.jpg").write_text("hello, not a jpeg")
    good = (tmp_path / "a" / "0.jpg").read_bytes()
    (tmp_path / "a" / "trunc.jpg").write_bytes(good[: len(good) // 2])
    paths = sorted(str(p) for p in (tmp_path / "a").iterdir())
    prep = prepare(paths, 16, key=str(tmp_path))
    reasons = dict(prep.reasons)
    assert prep.ok.sum() == 4 and len(reasons) == 3
    assert "0 bytes" in reasons[str(tmp_path / "a" / "zero.jpg")]
    assert prep.images(np.flatnonzero(prep.ok)).shape == (4, 16, 16, 3)


def test_prepare_is_incremental_and_invalidated_on_change(tmp_path):
    for i in range(3):
        _jpeg(tmp_path / f"{i}.jpg", color=(i * 80, 0, 0))
    paths = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    assert prepare(paths, 8, key="k").decoded == 3
    assert prepare(paths, 8, key="k").decoded == 0          # cached
    _jpeg(tmp_path / "3.jpg")
    assert prepare(paths + [str(tmp_path / "3.jpg")], 8, key="k").decoded == 1   # only the new one
    _jpeg(tmp_path / "0.jpg", color=(0, 0, 250), size=(41, 30))                  # source changed
    p = prepare(paths, 8, key="k")
    assert p.decoded == 1 and p.images()[0, 4, 4, 2] > 200


def test_open_image_conversions_and_guards(tmp_path):
    # EXIF orientation 6 (rotate 90° CW): a 40x20 stored image is shown 20x40
    im = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert data.open_image(tmp_path / "rot.jpg").size == (20, 40)
    # transparent pixels become white, not black
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "a.png")
    assert data.open_image(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)
    Image.new("CMYK", (4, 4)).save(tmp_path / "c.jpg")
    Image.new("L", (4, 4), 128).save(tmp_path / "g.png")
    assert data.open_image(tmp_path / "c.jpg").mode == "RGB"
    assert data.open_image(tmp_path / "g.png").getpixel((1, 1)) == (128, 128, 128)
    buf = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buf, "PNG")
    buf.seek(0)
    with pytest.raises(UserError, match="limit is 1,000,000 pixels"):
        data.open_image(buf, max_pixels=1_000_000)


def test_class_counts_cached_and_invalidated(demo_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(demo_root, root)
    c1 = data.class_counts(root)
    assert c1.sum() == 240 and c1.is_monotonic_decreasing
    assert list((data.cache_dir() / "stats").glob("*.parquet"))
    df = pd.read_csv(root / "train.csv")
    df.iloc[:10].to_csv(root / "train.csv", index=False)      # size and mtime change
    assert data.class_counts(root).sum() == 10
    stats = data.imbalance(c1, top=2)
    assert stats["largest"] == c1.iloc[0] and stats["top_n"] == 2 and 0 < stats["top_n_share"] < 1


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    a = np.zeros((4, 4), dtype=np.uint16)
    a[:, 2:] = 30000
    Image.fromarray(a).save(tmp_path / "g16.png")
    im = data.open_image(tmp_path / "g16.png")
    assert im.getpixel((0, 0)) == (0, 0, 0) and im.getpixel((3, 3)) == (255, 255, 255)


def test_gldv2_clean_subset(demo_root, tmp_path):
    """train_clean.csv (landmark_id, space-separated ids) narrows the index and the counts."""
    root = tmp_path / "gld"
    shutil.copytree(demo_root, root)
    df = pd.read_csv(root / "train.csv", dtype=str)
    labels = df["landmark_id"].value_counts().index[:2]
    keep = {l: df[df["landmark_id"] == l]["id"].head(7 + i).tolist() for i, l in enumerate(labels)}
    pd.DataFrame({"landmark_id": list(keep), "images": [" ".join(v) for v in keep.values()]}).to_csv(
        root / "train_clean.csv", index=False)
    assert data.has_clean(root) and not data.has_clean(demo_root)
    idx = data.load_index(root, clean=True)
    assert len(idx.samples) == 15 and set(idx.samples["label"]) == set(labels)
    assert sorted(idx.samples["path"].str.rsplit("/", n=1).str[-1]) == sorted(f"{i}.jpg" for v in keep.values() for i in v)
    counts = data.class_counts(root, clean=True)
    assert counts.to_dict() == {labels[1]: 8, labels[0]: 7}
    assert data.class_counts(root).sum() == len(df)                 # the full set is cached apart
    with pytest.raises(UserError, match="has no train_clean.csv"):
        data.load_index(demo_root, clean=True)
    (root / "train_clean.csv").write_text("landmark_id,ids\n1,a\n")
    with pytest.raises(UserError, match="expected columns landmark_id,images"):
        data.class_counts(root, clean=True)


def test_training_data_honours_the_clean_subset(demo_root, tmp_path):
    from core.runs.store import RunFolder
    from core.train.engine import load_data
    from tests.conftest import tiny_config
    root = tmp_path / "gld"
    shutil.copytree(demo_root, root)
    df = pd.read_csv(root / "train.csv", dtype=str)
    clean = df.groupby("landmark_id")["id"].apply(lambda s: " ".join(s.head(6))).reset_index(name="images")
    clean.to_csv(root / "train_clean.csv", index=False)
    (tmp_path / "run").mkdir()
    d = load_data(tiny_config(root, clean=True), RunFolder(tmp_path / "run"))
    assert len(d.manifest) == 6 * df["landmark_id"].nunique()
    assert set(d.manifest["path"].str.rsplit("/", n=1).str[-1].str[:-4]) <= set(" ".join(clean["images"]).split())


def test_prepared_store_drops_dead_rows_once_they_are_half(tmp_path, monkeypatch):
    import core.data.prepared as prep_mod
    monkeypatch.setattr(prep_mod, "COMPACT_MIN_ROWS", 0)
    paths = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    for i, p in enumerate(paths):
        _jpeg(Path(p), color=(i * 80, 0, 0))
    old = prepare(paths, 8, key="c")
    before = old.images()[[0, 1, 2], 4, 4, 0].copy()
    for i, p in enumerate(paths[:2]):                       # 2 of 3 change: 5 rows, 3 live, kept
        _jpeg(Path(p), color=(0, 0, 60 + i * 90), size=(41, 30))
    assert len(prepare(paths, 8, key="c").store) == 5
    _jpeg(Path(paths[2]), color=(0, 250, 0), size=(42, 30))  # 6 rows, 3 live: rewritten
    new = prepare(paths, 8, key="c")
    assert len(new.store) == 3 and sorted(new.rows) == [0, 1, 2]
    px = new.images()[:, 4, 4]
    assert px[0, 2] > 40 and px[1, 2] > 130 and px[2, 1] > 200      # each path still gets its own image
    assert (old.images()[[0, 1, 2], 4, 4, 0] == before).all()       # an open store keeps reading the old file
    assert prepare(paths, 8, key="c").decoded == 0                  # and the index is consistent
    (prep_mod.store_dir("c", 8) / "compacting").touch()             # a compaction cut off by a crash:
    assert prepare(paths, 8, key="c").decoded == 3                  # the store is rebuilt, not trusted
