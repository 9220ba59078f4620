"""core.data.demo: the synthetic landmark generator (layout, determinism, long tail, not-too-easy)."""
import csv
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import demo  # noqa: E402

ARGS = dict(classes=6, images=120, size=48, seed=3)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def image_path(root, iid):
    return Path(root) / "train" / iid[0] / iid[1] / iid[2] / f"{iid}.jpg"


def all_bytes(root):
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load_pixels(root, px):
    rows = read_csv(Path(root) / "train.csv")[1:]
    xs = [np.asarray(Image.open(image_path(root, i)).convert("RGB").resize((px, px), Image.BILINEAR))
          for i, _, _ in rows]
    return np.stack(xs).astype(np.float64), np.array([int(r[2]) for r in rows])


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """The same small data set twice (for determinism) and once with another seed."""
    calls = []
    a = tmp_path_factory.mktemp("demo_a")
    info = demo.generate(a, progress=lambda d, t: calls.append((d, t)), **ARGS)
    b = tmp_path_factory.mktemp("demo_b")
    demo.generate(str(b), **ARGS)
    c = tmp_path_factory.mktemp("demo_c")
    demo.generate(c, **{**ARGS, "seed": 4})
    return info, a, b, c, calls


def test_layout_and_csv_columns(gen):
    info, root, *_ = gen
    rows = read_csv(root / "train.csv")
    assert rows[0] == ["id", "url", "landmark_id"]
    assert len(rows) == 1 + ARGS["images"]
    ids = [r[0] for r in rows[1:]]
    assert len(set(ids)) == len(ids)
    for iid, url, label in rows[1:]:
        assert re.fullmatch(r"[0-9a-f]{16}", iid)
        assert url.startswith("synthetic://") and url.endswith(iid)
        assert 0 <= int(label) < ARGS["classes"]
        assert image_path(root, iid).is_file()
    cats = read_csv(root / "train_label_to_category.csv")
    assert cats[0] == ["landmark_id", "category"]
    assert [int(r[0]) for r in cats[1:]] == list(range(ARGS["classes"]))
    names = [r[1] for r in cats[1:]]
    assert len(set(names)) == len(names) and all("ynthetic" in n for n in names)
    assert "synthetic" in (root / "SYNTHETIC.txt").read_text().lower()


def test_images_are_rgb_jpegs_of_the_right_size(gen):
    _, root, *_ = gen
    files = sorted((root / "train").rglob("*.jpg"))
    assert len(files) == ARGS["images"]
    for p in files[:40]:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (ARGS["size"], ARGS["size"])


def test_summary_and_progress(gen):
    info, root, _, _, calls = gen
    assert info["root"] == str(root)
    for k in ("classes", "images", "size", "seed"):
        assert info[k] == ARGS[k]
    assert sum(info["counts"].values()) == ARGS["images"]
    assert sorted(info["counts"]) == list(range(ARGS["classes"]))
    assert info["seconds"] > 0
    assert calls and calls[-1] == (ARGS["images"], ARGS["images"])
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_same_seed_is_byte_identical_other_seed_differs(gen):
    _, a, b, c, _ = gen
    fa, fb, fc = all_bytes(a), all_bytes(b), all_bytes(c)
    assert fa == fb
    assert fa["train.csv"] != fc["train.csv"]
    ia = [v for k, v in fa.items() if k.endswith(".jpg")]
    ic = set(v for k, v in fc.items() if k.endswith(".jpg"))
    assert not any(v in ic for v in ia)


def test_long_tail_counts(gen):
    _, root, *_ = gen
    labels = [int(r[2]) for r in read_csv(root / "train.csv")[1:]]
    counts = np.bincount(labels, minlength=ARGS["classes"])
    assert counts.sum() == ARGS["images"]
    assert counts[0] > counts[-1] and counts.min() >= 3
    big = demo.planned_counts(12, 3000)
    assert sum(big) == 3000 and big == sorted(big, reverse=True)
    assert big[0] > 4 * big[-1]  # clearly long-tailed, not uniform
    assert demo.planned_counts(5, 15) == [3] * 5  # the minimum is exactly the floor


@pytest.mark.parametrize("kw, message", [
    (dict(classes=1), "classes must be between 2 and"),
    (dict(classes=len(demo.KINDS) + 1), f"classes must be between 2 and {len(demo.KINDS)}"),
    (dict(classes=10, images=29), "images must be at least 30 (3 per class for 10 classes), got 29."),
    (dict(size=31), "size must be at least 32 pixels, got 31."),
    (dict(images=2.5), "images must be a whole number"),
])
def test_bad_arguments_say_what_is_wrong(tmp_path, kw, message):
    with pytest.raises(ValueError) as e:
        demo.generate(tmp_path / "x", **{**dict(classes=4, images=40, size=32), **kw})
    assert message in str(e.value)
    assert not (tmp_path / "x").exists()  # nothing written for bad arguments


def test_registry_has_many_distinct_kinds():
    assert len(demo.KINDS) >= 10
    assert set(demo.KINDS) == set(demo.ASPECT) == set(demo.TITLES)
    assert len(set(demo.TITLES.values())) == len(demo.TITLES)
    for i, name in enumerate(demo.KINDS):
        im = demo.draw_landmark(name, 0, i, 32)
        assert im.size == (32, 32) and im.mode == "RGB"


def test_images_of_a_class_are_not_near_identical(gen):
    _, root, *_ = gen
    x, y = load_pixels(root, 32)
    for c in range(ARGS["classes"]):
        xc = x[y == c]
        assert xc.std(axis=0).mean() > 25, c  # per-pixel spread across the class's images
        d = np.abs(xc[:, None] - xc[None]).mean(axis=(2, 3, 4))
        assert d[~np.eye(len(xc), dtype=bool)].min() > 8, c  # no two look alike


def test_linear_probe_on_tiny_pixels_stays_weak(tmp_path):
    """Ridge regression on raw 16x16 RGB must not find the class: shape, not colour, decides."""
    demo.generate(tmp_path, classes=12, images=600, size=32, seed=1)
    x, y = load_pixels(tmp_path, 16)
    x = x.reshape(len(x), -1) / 255
    rng = np.random.default_rng(0)
    va = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: max(1, (y == c).sum() // 5)]
                         for c in range(12)])
    tr = np.setdiff1d(np.arange(len(y)), va)
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-3
    X = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    Y = np.eye(12)[y]
    best = 0.0
    for lam in (1.0, 10.0, 100.0, 1000.0):
        W = np.linalg.solve(X[tr].T @ X[tr] + lam * np.eye(X.shape[1]), X[tr].T @ Y[tr])
        best = max(best, float(((X[va] @ W).argmax(1) == y[va]).mean()))
    assert best < 0.5, best
