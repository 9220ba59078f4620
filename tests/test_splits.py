import pandas as pd
import pytest

from core.errors import UserError
from core.data.splits import make_manifest, top_classes


def _samples(counts):
    rows = [(f"/d/{lab}/{i}.jpg", lab) for lab, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "label"])


def test_top_classes_orders_by_count_and_refuses_too_many():
    counts = pd.Series({"a": 5, "b": 50, "c": 20})
    assert top_classes(counts, 2) == ["b", "c"]
    assert top_classes(counts, 0) == ["b", "c", "a"]
    with pytest.raises(UserError, match="only 3"):
        top_classes(counts, 5)


def test_split_is_stratified_disjoint_deterministic():
    s = _samples({"a": 400, "b": 100, "c": 3, "d": 2})
    m1, labels = make_manifest(s, 0, 0.01, 0.2, seed=7)
    m2, _ = make_manifest(s, 0, 0.01, 0.2, seed=7)
    m3, _ = make_manifest(s, 0, 0.01, 0.2, seed=8)
    assert m1.equals(m2) and not m1["split"].equals(m3["split"])
    assert m1["path"].is_unique
    per = m1.groupby(["label", "split"]).size().unstack(fill_value=0)
    assert per.loc["a", "holdout"] == 4                          # 1% of 400
    assert per.loc["a", "val"] == round(396 * 0.2)               # 20% of the rest
    assert per.loc["c", "holdout"] == 1                          # >= 3 images keeps one holdout
    assert per.loc["d", "holdout"] == 0
    assert labels[:2] == ["a", "b"]
    assert set(m1["target"]) == {0, 1, 2, 3}


def test_top_n_subset_only_keeps_those_classes():
    s = _samples({"a": 30, "b": 20, "c": 10})
    m, labels = make_manifest(s, 2, 0.1, 0.2, seed=0)
    assert labels == ["a", "b"] and set(m["label"]) == {"a", "b"}
