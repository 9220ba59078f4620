"""The data layer under broken input and broken disks: every failure is a sentence (UserError),
and the prepared store never serves a wrong row."""
import builtins
import errno
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import core.data.prepared as prep_mod
from core.data import readers as data
from core.data.prepared import prepare, store_dir
from core.cli import main
from core.errors import UserError

SIZE = 8
ROW = SIZE * SIZE * 3


def _jpegs(folder: Path, n: int, start: int = 0) -> list[str]:
    """n small JPEGs, each a different colour, so a row served under the wrong path shows."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        p = folder / f"{i:03d}.jpg"
        Image.new("RGB", (40, 30), ((i * 37) % 256, (i * 91) % 256, (i * 13 + 60) % 256)).save(p, "JPEG")
        out.append(str(p))
    return out


def _fresh(path: str) -> np.ndarray:
    buf, reason = prep_mod._decode((path, SIZE))
    assert buf is not None, reason
    return np.frombuffer(buf, np.uint8).reshape(SIZE, SIZE, 3)


def _assert_right(prep, paths):
    assert prep.ok.all() and len(prep.rows) == len(paths)
    for img, p in zip(prep.images(), paths):
        assert np.array_equal(img, _fresh(p)), p


def _data_file(key: str) -> Path:
    return store_dir(key, SIZE) / "images.u8"


# ------------------------------------------------------------------ 1. the store serves only right rows

@pytest.mark.parametrize("tail", [ROW // 2, ROW + 50, 3 * ROW])   # a partial row; whole rows never committed
def test_a_torn_append_does_not_shift_later_rows(tmp_path, tail):
    paths = _jpegs(tmp_path, 10)
    _assert_right(prepare(paths[:5], SIZE, key="torn"), paths[:5])
    with open(_data_file("torn"), "ab") as f:            # a crash or a full disk mid-append
        f.write(os.urandom(tail))
    prep = prepare(paths, SIZE, key="torn")
    assert prep.decoded == 5
    _assert_right(prep, paths)
    assert os.path.getsize(_data_file("torn")) == 10 * ROW        # the tail was cut, not kept
    _assert_right(prepare(paths, SIZE, key="torn"), paths)


def test_a_corrupt_committed_row_is_decoded_again(tmp_path):
    paths = _jpegs(tmp_path, 6)
    first = prepare(paths, SIZE, key="rot")
    row = int(first.rows[2])
    with open(_data_file("rot"), "r+b") as f:              # bytes the disk lost or flipped
        f.seek(row * ROW + 7)
        f.write(b"\xff\x00" * 20)
    prep = prepare(paths, SIZE, key="rot")
    assert prep.decoded == 1                                # only the bad row, not the store
    _assert_right(prep, paths)
    assert prepare(paths, SIZE, key="rot").decoded == 0    # healed for good


def test_a_truncated_store_is_decoded_again(tmp_path):
    paths = _jpegs(tmp_path, 6)
    prepare(paths, SIZE, key="short")
    os.truncate(_data_file("short"), int(2.5 * ROW))       # shorter than the index says
    prep = prepare(paths, SIZE, key="short")
    assert prep.decoded == 4
    _assert_right(prep, paths)


def test_an_index_without_checksums_still_loads(tmp_path):
    """A store from before checksums: its rows cannot be vouched for, so they are decoded again."""
    paths = _jpegs(tmp_path, 4)
    prepare(paths, SIZE, key="old")
    index_file = store_dir("old", SIZE) / "index.parquet"
    pd.read_parquet(index_file).drop(columns="crc").to_parquet(index_file)
    with open(_data_file("old"), "r+b") as f:             # the old torn-append bug shifted rows
        f.write(os.urandom(ROW))
    prep = prepare(paths, SIZE, key="old")
    assert prep.decoded == 4
    _assert_right(prep, paths)
    assert prepare(paths, SIZE, key="old").decoded == 0


# ------------------------------------------------------------------ 2. a full disk

@pytest.mark.parametrize("where", ["row", "index"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_a_sentence_and_corrupts_nothing(tmp_path, monkeypatch, where, code):
    monkeypatch.setattr(prep_mod, "CHUNK", 2)
    paths = _jpegs(tmp_path, 9)
    prepare(paths[:3], SIZE, key="full")
    real_row, real_index = prep_mod._write_row, prep_mod._save_index
    calls = []

    def full_row(f, row):
        calls.append(1)
        if len(calls) == 4:                                 # half a row gets out, then the disk is full
            f.write(row[: len(row) // 2])
            raise OSError(code, os.strerror(code))
        real_row(f, row)

    def full_index(d, index):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code))
        real_index(d, index)

    if where == "row":
        monkeypatch.setattr(prep_mod, "_write_row", full_row)
    else:
        monkeypatch.setattr(prep_mod, "_save_index", full_index)
    with pytest.raises(UserError, match=r"^The disk holding .+ is full \(.+\); free space and run again\.$"):
        prepare(paths, SIZE, key="full")
    monkeypatch.setattr(prep_mod, "_write_row", real_row)
    monkeypatch.setattr(prep_mod, "_save_index", real_index)
    _assert_right(prepare(paths, SIZE, key="full"), paths)
    assert not (store_dir("full", SIZE) / "index.parquet.tmp").exists()


# ------------------------------------------------------------------ 3. a cache folder that cannot be written

def test_a_cache_folder_that_cannot_be_written_is_a_sentence(tmp_path, monkeypatch):
    """Works as root too: os.access is what ensure_dir asks."""
    paths = _jpegs(tmp_path, 2)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: "prepared" not in str(p) and real(p, mode, *a, **k))
    with pytest.raises(UserError, match=r"^Cannot write the prepared-image cache folder .+ \(permission denied\); "
                                        r"make it writable or set LANDMARKS_HOME to a writable folder\.$"):
        prepare(paths, SIZE, key="ro")


def test_a_lock_file_that_cannot_be_opened_is_a_sentence(tmp_path, monkeypatch):
    paths = _jpegs(tmp_path, 2)
    real = builtins.open

    def no_lock(file, *a, **k):
        if str(file).endswith("lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real(file, *a, **k)

    import core.files
    monkeypatch.setattr(core.files, "open", no_lock, raising=False)       # the lock helper's own open()
    with pytest.raises(UserError, match=r"^Cannot write the prepared-image cache folder .+ \(permission denied\)"):
        prepare(paths, SIZE, key="lock")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the two tests above cover it")
def test_a_read_only_cache_folder_is_a_sentence(tmp_path, home):
    paths = _jpegs(tmp_path, 2)
    prepared = home / "cache" / "prepared"
    prepared.mkdir(parents=True)
    prepared.chmod(0o500)
    try:
        with pytest.raises(UserError, match="Cannot write the prepared-image cache folder"):
            prepare(paths, SIZE, key="chmod")
    finally:
        prepared.chmod(0o700)


# ------------------------------------------------------------------ 4. duplicates

def _csv_set(root: Path, rows, n_images: int = 4) -> Path:
    _jpegs(root, n_images)
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(root / "train.csv", index=False)
    return root


def test_a_row_listed_twice_is_one_image(tmp_path):
    root = _csv_set(tmp_path, [("000", "u", 1), ("001", "u", 1), ("000", "u", 1), ("002", "u", 2), ("003", "u", 2)])
    idx = data.load_index(root)
    assert len(idx.samples) == 4 and idx.samples["path"].is_unique
    prep = prepare(idx.samples["path"].tolist(), SIZE, key=str(root))
    assert prep.ok.all()


def test_an_id_under_two_landmarks_is_a_sentence(tmp_path):
    root = _csv_set(tmp_path, [("000", "u", 1), ("001", "u", 1), ("001", "u", 2), ("002", "u", 2)])
    with pytest.raises(UserError, match=r"lists the image id '001' under two landmark ids \(1 and 2\); keep one row"):
        data.load_index(root)


def test_prepare_with_a_path_asked_for_twice(tmp_path):
    paths = _jpegs(tmp_path, 3)
    asked = [paths[0], paths[1], paths[0], paths[2], paths[1]]
    prep = prepare(asked, SIZE, key="dup")
    assert prep.decoded == 3
    _assert_right(prep, asked)
    assert prep.rows[0] == prep.rows[2]
    _assert_right(prepare(asked, SIZE, key="dup"), asked)   # and from the cache


# ------------------------------------------------------------------ 5. control characters in ids

@pytest.mark.parametrize("bad", ["00\x001", "00\x011", "00\t1", "00\n1", "00\x7f1"])
def test_an_id_with_a_control_character_is_a_sentence(tmp_path, bad):
    root = _csv_set(tmp_path, [("000", "u", 1), ("001", "u", 1), (bad, "u", 2), ("002", "u", 2)])
    msg = f"has an image id with a control character, {bad!r} on data row 3; fix or remove that row."
    with pytest.raises(UserError, match=re.escape(msg) + "$"):
        data.load_index(root)


# ------------------------------------------------------------------ 6. an unreadable class folder

def test_an_unreadable_class_folder_is_a_sentence(tmp_path, monkeypatch):
    for cls in ("a", "b"):
        _jpegs(tmp_path / cls, 2)
    real = os.scandir

    def scandir(p="."):
        if Path(p).name == "b":
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(UserError, match="^" + re.escape(f"Cannot read the class folder {tmp_path / 'b'} (permission denied); ")):
        data.load_index(tmp_path)
    with pytest.raises(UserError, match="Cannot read the class folder"):
        data.read_folders(tmp_path)        # on its own too, past layout detection


# ------------------------------------------------------------------ 7. fields too large for the parser

BIG = "x" * (3 * 2**20)   # one field longer than pyarrow's 1 MB block, with no newline in it


def test_an_oversized_field_in_train_csv_is_a_sentence(tmp_path):
    root = _csv_set(tmp_path, [("000", BIG, 1), ("001", "u", 1), ("002", "u", 2), ("003", "u", 2)])
    f = root / "train.csv"
    msg = rf"^{re.escape(str(f))} could not be read as CSV \(a field or line is longer than .+\); fix or replace the file\.$"
    with pytest.raises(UserError, match=msg):
        data.load_index(root)
    with pytest.raises(UserError, match=msg):
        data.class_counts(root)                      # counted with pyarrow.csv directly


def test_an_oversized_field_in_train_clean_csv_is_a_sentence(tmp_path):
    root = _csv_set(tmp_path, [("000", "u", 1), ("001", "u", 1), ("002", "u", 2), ("003", "u", 2)])
    (root / "train_clean.csv").write_text(f"landmark_id,images\n1,000 {BIG}\n2,002\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(root / 'train_clean.csv'))} could not be read as CSV"):
        data.load_index(root, clean=True)


def test_a_broken_category_csv_is_a_sentence(tmp_path):
    root = _csv_set(tmp_path, [("000", "u", 1), ("001", "u", 1), ("002", "u", 2), ("003", "u", 2)])
    (root / "train_label_to_category.csv").write_text("landmark_id,category\n1,a\n2,b,c,d\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(root / 'train_label_to_category.csv'))} could not be read as CSV"):
        data.load_index(root)


# ------------------------------------------------------------------ 8. GLDv2 layout: rows listed twice, unreadable folders, missing images

def _hex_id(i: int) -> str:
    return hashlib.sha1(str(i).encode()).hexdigest()[:16]


def _gldv2(root: Path, rows) -> Path:
    """GLDv2's layout: train.csv (integer landmark ids) and images at train/<a>/<b>/<c>/<id>.jpg."""
    for image_id, _, label in dict.fromkeys(rows):
        p = root / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 20), (int(label) % 256, 80, 160)).save(p, "JPEG")
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(root / "train.csv", index=False)
    return root


def _stats_json(capsys, *args) -> dict:
    assert main(["stats", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_stats_counts_an_image_listed_twice_once_as_training_does(tmp_path, capsys):
    ids = [_hex_id(i) for i in range(12)]
    rows = [(i, "u", 7 if k < 8 else 12345) for k, i in enumerate(ids)]
    rows += [rows[0], rows[3], rows[3], rows[9]]             # the same image again, under the same landmark
    root = _gldv2(tmp_path / "gld", rows)
    index = data.load_index(root)
    assert index.layout == "gldv2" and index.counts().to_dict() == {"7": 8, "12345": 4}
    assert data.class_counts(root).to_dict() == index.counts().to_dict()
    for _ in range(2):                                       # counted, then from the cache
        out = _stats_json(capsys, root)
        assert out["images"] == 12 and [(t["label"], t["count"]) for t in out["top"]] == [("7", 8), ("12345", 4)]
        assert out["duplicates"] == {"rows": 4, "ids": [ids[0], ids[3], ids[9]]}
        assert out["scan"]["checked"] == 12 and out["scan"]["missing"] == 0
    assert index.duplicates == out["duplicates"]
    assert main(["stats", str(root)]) == 0
    assert (f"duplicates: 4 row(s) list an image again under the same landmark, counted once "
            f"(e.g. {ids[0]}, {ids[3]}, {ids[9]})") in capsys.readouterr().out


def _deny(monkeypatch, folder: Path) -> None:
    """What `chmod 000 folder` does to a user who is not root (tests run as root, who passes):
    the folder cannot be listed and nothing below it can be reached."""
    real_stat, real_scandir = os.stat, os.scandir
    below = str(folder) + os.sep

    def stat(p, *a, **k):
        if os.fspath(p).startswith(below):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(p))
        return real_stat(p, *a, **k)

    def scandir(p="."):
        if os.fspath(p) == str(folder) or os.fspath(p).startswith(below):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(p))
        return real_scandir(p)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "scandir", scandir)


def _first_level(root: Path, first: str) -> Path:
    return (root / "train" / first).resolve()


@pytest.mark.parametrize("first", ["probed", "not probed"])
def test_an_unreadable_image_folder_is_a_sentence_for_train_and_stats(tmp_path, monkeypatch, capsys, first):
    """Whether the layout probe meets the folder or not, every command says which folder to fix."""
    ids = [_hex_id(i) for i in range(30)]
    root = _gldv2(tmp_path / "gld", [(i, "u", 100 + k % 2) for k, i in enumerate(ids)])
    probed = {i[0] for i in ids[:20]}
    letter = sorted(probed)[0] if first == "probed" else sorted({i[0] for i in ids} - probed)[0]
    blocked = _first_level(root, letter)
    _deny(monkeypatch, blocked)
    msg = (f"error: Cannot read the image folder {blocked} (permission denied); fix its permissions "
           f"(for example chmod -R u+rX {blocked}) or move it out of the data set.\n")
    assert main(["stats", str(root)]) == 2
    assert capsys.readouterr().err == msg
    assert main(["train", "--data", str(root), "--model", "small_cnn", "--weights", "none", "--classes", "2",
                 "--epochs", "1", "--runs", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err == msg
    assert not list((tmp_path / "runs").glob("*/"))          # refused before a run folder exists


def test_a_deeper_unreadable_folder_met_by_the_probe_is_named(tmp_path, monkeypatch):
    ids = [_hex_id(i) for i in range(8)]
    root = _gldv2(tmp_path / "gld", [(i, "u", 1) for i in ids])
    blocked = _first_level(root, ids[0][0]) / ids[0][1]
    _deny(monkeypatch, blocked)
    with pytest.raises(UserError, match=f"^Cannot read the image folder {re.escape(str(blocked))} "):
        data.load_index(root)


def test_resume_with_an_unreadable_image_folder_is_a_sentence(tmp_path, monkeypatch, capsys):
    from core.runs.store import RunStore
    from tests.conftest import tiny_config
    ids = [_hex_id(i) for i in range(12)]
    root = _gldv2(tmp_path / "gld", [(i, "u", 100 + k % 2) for k, i in enumerate(ids)])
    store = RunStore(tmp_path / "runs")
    run_id = store.create(tiny_config(root, classes=2, epochs=1), status="interrupted")
    blocked = _first_level(root, ids[0][0])
    _deny(monkeypatch, blocked)
    assert main(["train", "--resume", run_id, "--runs", str(tmp_path / "runs")]) == 2
    assert f"error: Cannot read the image folder {blocked} (permission denied); fix its permissions" in capsys.readouterr().err
    assert store.get(run_id)["status"] == "failed"           # the run stays, to be resumed once the folder is fixed


def test_stats_scans_what_is_on_disk_and_counts_what_is_not(tmp_path, capsys):
    """Issue 20: a CSV listing more than was downloaded; the layout probe alone would refuse it."""
    ids = [_hex_id(i) for i in range(40)]
    rows = [(i, "u", 5 + k % 2) for k, i in enumerate(ids)]
    root = _gldv2(tmp_path / "gld", rows[30:])               # 10 of 40 on disk, none of the first 20
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(root / "train.csv", index=False)
    with pytest.raises(UserError, match="lists images that are not on disk"):
        data.load_index(root)                                # training still refuses it, with its sentence
    out = _stats_json(capsys, root)
    assert out["images"] == 40 and out["scan"]["checked"] == 10 and out["scan"]["unreadable"] == 0
    assert out["scan"]["missing"] == 30
    assert out["scan"]["missing_examples"][0].endswith(f"/train/{ids[0][0]}/{ids[0][1]}/{ids[0][2]}/{ids[0]}.jpg")
    assert main(["stats", str(root)]) == 0
    assert "scan: 10 files checked, 0 unreadable, 30 listed but not on disk (e.g. " in capsys.readouterr().out
