"""Training's data path at GLDv2-clean's 81,313 classes (issue 20): the split, the class-balanced
sampler and the loss weights are exact at that shape; the Dataset page reaches any class. The
timings behind the fixes (a split looped over the classes took 48 s there) are in bench/scale.py
and docs/BENCHMARKS.md."""
import numpy as np
import pandas as pd

from core.data.splits import class_sizes, make_manifest, split
from core.train.pipeline import balanced_order, class_weights

GLDV2_CLEAN = 81_313


def _samples(sizes) -> pd.DataFrame:
    """Class i (labelled 'c{i:05d}') has sizes[i] images, /d/c{i:05d}/{k}.jpg, in a shuffled order."""
    sizes = np.asarray(sizes)
    label = pd.Series(np.repeat(np.array([f"c{c:05d}" for c in range(len(sizes))], dtype=object), sizes), dtype=str)
    k = pd.Series(np.arange(len(label)) - np.repeat(np.cumsum(sizes) - sizes, sizes)).astype(str)
    df = pd.DataFrame({"path": "/d/" + label + "/" + k + ".jpg", "label": label})
    return df.iloc[np.random.default_rng(1).permutation(len(df))].reset_index(drop=True)


def test_split_at_81313_classes_gives_every_class_its_share():
    sizes = 1 + np.arange(GLDV2_CLEAN) % 4                   # 1 to 4 images a class
    m, labels = make_manifest(_samples(sizes), 0, 0.01, 0.2, seed=3)
    assert len(labels) == GLDV2_CLEAN and len(m) == sizes.sum()
    # most frequent first, ties by label
    assert labels[:2] == ["c00003", "c00007"] and labels[-2:] == ["c81308", "c81312"]
    assert (m["label"].to_numpy() == np.asarray(labels, dtype=object)[m["target"].to_numpy()]).all()
    code = m["split"].map({"holdout": 0, "val": 1, "train": 2}).to_numpy()
    per = np.bincount(m["target"].to_numpy() * 3 + code, minlength=3 * GLDV2_CLEAN).reshape(-1, 3)
    np.testing.assert_array_equal(per, np.stack(class_sizes(per.sum(axis=1), 0.01, 0.2), axis=1))
    # 4 images -> (1, 1, 2), 3 -> (1, 1, 1), 2 -> (0, 1, 1), 1 -> (0, 0, 1)
    assert [per[i * GLDV2_CLEAN // 4 + 1].tolist() for i in range(4)] == [[1, 1, 2], [1, 1, 1], [0, 1, 1], [0, 0, 1]]
    # the holdout image is a random one of its class, not the first listed or the first by path
    share = (m["path"].str.endswith("/0.jpg") & (m["split"] == "holdout")).sum() / (per[:, 0] == 1).sum()
    assert 0.24 < share < 0.34                                # (1/4 + 1/3) / 2 by chance; 1.0 or 0.0 if biased


def test_split_is_seeded_and_follows_class_sizes_for_any_size():
    sizes = np.array([1, 2, 3, 5, 10, 101, 400, 7])
    s = _samples(sizes)
    a, b, c = split(s, 0.05, 0.25, 9), split(s, 0.05, 0.25, 9), split(s, 0.05, 0.25, 10)
    assert a["split"].equals(b["split"]) and not a["split"].equals(c["split"])
    assert a.drop(columns="split").equals(s)                 # rows and columns kept, in their order
    per = pd.crosstab(a["label"], a["split"]).reindex(columns=["holdout", "val", "train"], fill_value=0)
    for name, w in zip(per.columns, class_sizes(sizes, 0.05, 0.25)):
        np.testing.assert_array_equal(per[name].to_numpy(), w)
    assert split(s.head(0), 0.05, 0.25, 9).empty


def test_balanced_sampler_at_81313_classes_draws_every_class_alike():
    sizes = np.where(np.arange(GLDV2_CLEAN) % 10 == 0, 40, 2)   # a tenth of the classes 20x larger
    targets = np.repeat(np.arange(GLDV2_CLEAN), sizes)
    order = balanced_order(targets, seed=0, epoch=1)
    assert len(order) == len(targets) and order.min() >= 0 and order.max() < len(targets)
    draws = np.bincount(targets[order], minlength=GLDV2_CLEAN)
    big, small = draws[sizes == 40].mean(), draws[sizes == 2].mean()
    assert abs(big / small - 1) < 0.05                        # unbalanced: 20x
    np.testing.assert_array_equal(order, balanced_order(targets, seed=0, epoch=1))
    w = class_weights(targets, GLDV2_CLEAN)
    assert np.isclose(w[targets].mean(), 1.0) and np.isclose(w[0] * 40, w[1] * 2)


def test_dataset_page_search_reaches_a_class_beyond_the_ones_drawn(home):
    """The sample-image picker lists the classes drawn (the 50 most frequent to start, 1,000 at most);
    a search finds any class, and a class found and picked stays when the search is cleared."""
    from PIL import Image
    from streamlit.testing.v1 import AppTest
    for i in range(52):                                    # c00 .. c51, one image each: c50 and c51 not drawn
        (home / "datasets" / "many" / f"c{i:02d}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (4 * i, 9, 99)).save(home / "datasets" / "many" / f"c{i:02d}" / "0.png")
    at = AppTest.from_file("../pages/dataset.py", default_timeout=60).run()
    picker = next(m for m in at.multiselect if m.label == "Classes to show")
    assert len(picker.options) == 50 and "c49 (1)" in picker.options
    at.text_input(key="dataset_thumb_query").input("C5").run()       # c50, c51 (c05 does not hold "c5")
    assert "2 classes found: pick them below." in [c.value for c in at.caption]
    picker = next(m for m in at.multiselect if m.label == "Classes to show")
    assert picker.options[-3:] == ["c49 (1)", "c50 (1)", "c51 (1)"]
    picker.select("c51").run()
    at.text_input(key="dataset_thumb_query").input("").run()
    assert not at.exception
    assert "**c51** · 1 images" in [m.value for m in at.markdown]
