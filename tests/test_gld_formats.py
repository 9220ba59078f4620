"""Google Landmarks as published (issue 20): integer landmark ids, percent-encoded Wikimedia
category names (CSV-quoted where they hold a comma), the 2019-2021 Kaggle train.csv without a url
column, and a train.csv listing more images than are on disk. Every input is written here in the
published formats, with tiny generated images."""
import csv
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.cli import main
from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

# GLDv2's train_label_to_category.csv rows (landmark_id,category), as published
MARBACK = "http://commons.wikimedia.org/wiki/Category:Marb%C3%A4cks_kyrka,_Sm%C3%A5land"
CATEGORIES = {20409: MARBACK, 138982: "http://commons.wikimedia.org/wiki/Category:Haleakal%C4%81_National_Park",
              83: "http://commons.wikimedia.org/wiki/Category:Eiffel_Tower"}
DECODED = {"20409": "Marbäcks kyrka, Småland", "138982": "Haleakalā National Park", "83": "Eiffel Tower"}
COUNTS = {138982: 5, 20409: 4, 83: 2}       # images per landmark: the order is not the ids' order


def image_id(k: int) -> str:
    return f"{k * 2654435761 % 16 ** 16:016x}"    # 16 hex digits, as GLDv2's ids


def jpeg(k: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (40 * k % 256, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


def write_gld(root: Path, url: bool = True, names: dict | None = CATEGORIES, missing: int = 0) -> list[tuple[str, int]]:
    """A train.csv in GLDv2's (id,url,landmark_id) or the 2019-2021 Kaggle format (id,landmark_id),
    images at train/a/b/c/<id>.jpg except the first `missing`, and `names` (landmark_id -> category)
    as train_label_to_category.csv; returns the (id, landmark_id) rows."""
    labels = [lab for lab, n in COUNTS.items() for _ in range(n)]
    rows = [(image_id(k + 1), lab) for k, lab in enumerate(labels)]
    root.mkdir(parents=True)
    with open(root / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "url", "landmark_id"] if url else ["id", "landmark_id"])
        for i, lab in rows:
            w.writerow([i, f"https://upload.wikimedia.org/{i}.jpg", lab] if url else [i, lab])
    if names:
        with open(root / "train_label_to_category.csv", "w", newline="") as f:
            w = csv.writer(f)                        # quotes the category with a comma, as Google's file does
            w.writerow(["landmark_id", "category"])
            w.writerows(names.items())
    for k, (i, _) in enumerate(rows[missing:], start=missing):
        p = root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(jpeg(k))
    return rows


def plotly_values(v) -> list:
    """A figure spec's numbers: plotly >= 6 sends arrays as {"dtype", "bdata": base64}."""
    if isinstance(v, dict):
        import base64

        import numpy as np
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def test_the_published_category_file_reads_as_decoded_names(tmp_path):
    from core.data.readers import decode_name, load_index
    root = tmp_path / "gld"
    write_gld(root)
    assert f'20409,"{MARBACK}"' in (root / "train_label_to_category.csv").read_text()   # the real quoting
    index = load_index(root)
    assert {label: index.name(label) for label in DECODED} == DECODED
    assert decode_name(DECODED["20409"]) == DECODED["20409"]          # decoding twice changes nothing
    assert decode_name("100% Sm%E5land") == "100% Sm%E5land"          # not UTF-8: kept as written


def test_an_old_runs_encoded_class_names_read_decoded(tmp_path):
    """classes.json of a run made before names were decoded: predict, pages and ONNX export read
    names through Run.class_names."""
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    run = store.run("old")
    run.dir.mkdir(parents=True)
    run.classes_file.write_text(json.dumps({"label": {"0": "20409", "1": "83"},
                                            "name": {"0": "Marb%C3%A4cks kyrka, Sm%C3%A5land", "1": "Eiffel Tower"}}))
    assert run.class_names() == {"20409": "Marbäcks kyrka, Småland", "83": "Eiffel Tower"}


def test_the_kaggle_2020_layout_is_read_counted_and_extracted_from_tars(tmp_path, capsys):
    from core.data import download as dl
    from core.data.readers import load_index
    root = tmp_path / "kaggle"
    rows = write_gld(root, url=False, names=None)
    index = load_index(root)
    assert len(index.samples) == len(rows) and index.layout == "gldv2"
    assert index.samples["label"].value_counts().to_dict() == {str(k): v for k, v in COUNTS.items()}
    assert main(["stats", str(root), "--json"]) == 0                  # counts and the automatic scan
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["top"][0] == {"label": "138982", "count": 5} and out["scan"]["checked"] == len(rows)

    tars = tmp_path / "images_000.tar"
    with tarfile.open(tars, "w") as t:
        for k, (i, _) in enumerate(rows):
            body = jpeg(k)
            info = tarfile.TarInfo(f"{i[0]}/{i[1]}/{i[2]}/{i}.jpg")
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    r = dl.download(root / "train.csv", tmp_path / "out", 1, tars=[tars])
    assert (r["classes"], r["listed"], r["fetched"], r["on_disk"]) == (1, 5, 5, 5)
    assert len(load_index(tmp_path / "out").samples) == 5             # the download reads back as a data set

    # without tars there is nothing to fetch: one sentence, before any folder is made
    assert main(["download", "--csv", str(root / "train.csv"), "--top", "1", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "train.csv has no url column (the 2019-2021 Kaggle train.csv lists id,landmark_id only)" in err
    assert "--tars" in err and not (tmp_path / "o2").exists()
    with pytest.raises(UserError, match="has no url column"):
        dl.pick_top(root / "train.csv", 1)


def test_stats_warns_how_many_listed_images_are_missing_and_goes_on(tmp_path, capsys):
    root = tmp_path / "gld"
    rows = write_gld(root, missing=7)                                 # 7 of 11 not on disk, the first ones
    assert main(["stats", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "scan: 4 files checked, 0 unreadable, 7 listed but not on disk" in out
    first = rows[0][0]
    assert (f"warning: 7 of the 11 images train.csv lists in these classes are not on disk "
            f"(e.g. {root.resolve()}/train/{first[0]}/{first[1]}/{first[2]}/{first}.jpg); "
            f"the scan checked the 4 that are.") in err


def test_dataset_page_integer_ids_are_categories_in_frequency_order_with_decoded_names(home, tmp_path):
    """Fig. 1 of an integer-id GLDv2 CSV: categories (never bars at x = 20409, 138982 …), most
    frequent first, named by the decoded categories; thumbnails of a CSV listing more than is on
    disk say how many are missing and show the rest."""
    write_gld(home / "datasets" / "gld", missing=7)
    at = AppTest.from_file(str(ROOT / "pages" / "dataset.py"), default_timeout=60).run()
    assert not at.exception
    bars = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Class distribution"))
    order = [DECODED[str(k)] for k in COUNTS]                          # 138982 (5), 20409 (4), 83 (2)
    assert bars["data"][0]["y"] == order and plotly_values(bars["data"][0]["x"]) == list(COUNTS.values())
    axis = bars["layout"]["yaxis"]
    assert axis["type"] == "category" and axis["categoryarray"] == order
    assert any("7 of the 11 images train.csv lists in these classes are not on disk" in w.value
               and "the samples come from the 4 that are" in w.value for w in at.warning)
    assert len(at.get("image")) == 4


def test_an_old_runs_encoded_names_in_its_evaluation_read_decoded(tmp_path):
    """evals of a run evaluated before names were decoded: Evaluate and Compare read them decoded."""
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    store.upsert_eval("old", "holdout", {"n": 2, "acc": 0.5, "labels": ["20409", "83"],
                                        "names": ["Marb%C3%A4cks kyrka, Sm%C3%A5land", "Eiffel Tower"]})
    assert store.evals("old")["holdout"]["names"] == ["Marbäcks kyrka, Småland", "Eiffel Tower"]
