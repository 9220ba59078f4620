"""Dataset readers (a registry keyed by layout), safe image opening and class statistics.

Layouts:
  gldv2    train.csv (id,url,landmark_id) + train|images/<a>/<b>/<c>/<id>.jpg; also the 2019-2021
           Kaggle train.csv (id,landmark_id, no url): the same images, and nothing here reads a URL
  gldv1    train.csv (id,url,landmark_id) + <dir>/<id>.jpg  (Kaggle 2018)
  folders  <class>/<image> with jpg/jpeg/png/webp
  version  version.json + changes.csv: another data set with images excluded or relabelled (core.data.versions)
The embedded demo data set (core.data.demo) is written in the gldv2 layout.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from core.data import changes
from core.errors import UserError
from core.files import atomic_output
from core.paths import cache_dir

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}
NO_DUPLICATES = {"rows": 0, "ids": []}
DUPLICATE_EXAMPLES = 5  # ids a report names
CSV_COLUMNS = ("id", "landmark_id")  # what a train.csv must have: GLDv2's url is optional (Kaggle 2019-2021 has none)
MAX_PIXELS = 50_000_000  # decompression-bomb guard for dataset images and uploads
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass
class DatasetIndex:
    root: Path
    layout: str
    samples: pd.DataFrame            # columns: path (absolute str), label (str)
    names: dict = field(default_factory=dict)   # label -> readable name
    synthetic: bool = False
    duplicates: dict = field(default_factory=lambda: dict(NO_DUPLICATES))  # rows listed twice (see duplicate_report)
    base: "DatasetIndex | None" = None   # a data set version's (core.data.versions): the base's own index

    def counts(self) -> pd.Series:
        return self.samples["label"].value_counts(sort=True)

    def name(self, label: str) -> str:
        return self.names.get(str(label), str(label))


# ---------------------------------------------------------------- images

def open_image(path_or_file, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Open an image safely: bomb guard on, EXIF orientation applied, alpha/CMYK/grey -> RGB.

    `draft` asks libjpeg to decode at a reduced scale (DCT-domain downscaling) when the image
    is a JPEG much larger than `draft` pixels, which is several times faster than a full decode.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path_or_file)
            if im.width * im.height > max_pixels:
                raise UserError(f"Image is {im.width}x{im.height} pixels; the limit is {max_pixels:,} pixels.")
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UserError(f"Image is too large to open safely ({e}).") from None
    im = ImageOps.exif_transpose(im)
    return to_rgb(im)


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/float greyscale: scale to 8 bits by the image's own range (convert("RGB") clips to white)
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        im = Image.fromarray(a.astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))  # white, not black, behind alpha
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def resize_square(im: Image.Image, size: int) -> Image.Image:
    """Centre square of the shorter side, resized to size x size (= torchvision Resize+CenterCrop).

    Resampling only the crop box (`box=`) touches fewer pixels than resizing the whole image
    and cropping afterwards; `reducing_gap` lets Pillow box-reduce first on large downscales.
    """
    w, h = im.size
    s0 = min(w, h)
    box = ((w - s0) / 2, (h - s0) / 2, (w + s0) / 2, (h + s0) / 2)
    return im.resize((size, size), Image.BILINEAR, box=box, reducing_gap=2.0 if s0 >= 2 * size else None)


# ---------------------------------------------------------------- readers

_SAFE_ID = re.compile(r"[/\\]|\.\.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a NUL cannot be in a path; the others are never meant


def parse_csv(path: Path, read):
    """read() (a pandas or pyarrow CSV read of `path`), with any parse failure as one sentence
    naming the file: pyarrow fails on a field or line longer than its 1 MB block, on bad UTF-8…"""
    import pyarrow as pa  # here, not at the top: the decode workers import this module
    try:
        return read()
    except (ValueError, OSError, pa.ArrowException) as e:  # ParserError and ArrowInvalid are ValueErrors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "straddl" in msg:
            msg = "a field or line is longer than the 1 MB the parser reads at a time"
        raise UserError(f"{path} could not be read as CSV ({msg[:200].rstrip('.')}); fix or replace the file.") from None


def _read_csv(path: Path, required=CSV_COLUMNS) -> tuple[pd.DataFrame, dict]:
    """(id, landmark_id) rows of a train.csv, each image once, and the report of the rows that
    repeated one (duplicate_report): what training indexes and what `stats` counts."""
    head = parse_csv(path, lambda: pd.read_csv(path, nrows=0))
    missing = [c for c in required if c not in head.columns]
    if missing:
        raise UserError(f"{path} is missing column(s) {', '.join(missing)}; expected columns id,landmark_id "
                        f"(and url, as in GLDv2's id,url,landmark_id).")
    df = parse_csv(path, lambda: pd.read_csv(path, usecols=["id", "landmark_id"], dtype={"id": str, "landmark_id": str},
                                             engine="pyarrow", keep_default_na=False))
    _check_ids(path, df["id"])
    df = df[df["landmark_id"] != ""]
    if not df["id"].duplicated().any():   # the common case, and the cheap test (~1 s for GLDv2)
        return df, dict(NO_DUPLICATES)
    return _drop_duplicates(path, df), duplicate_report(df)


def duplicate_report(df: pd.DataFrame) -> dict:
    """{"rows": rows that repeat an earlier (id, landmark_id) row, "ids": a few of their ids}."""
    again = df.duplicated(["id", "landmark_id"])
    return {"rows": int(again.sum()), "ids": df["id"][again].drop_duplicates().head(DUPLICATE_EXAMPLES).tolist()}


def _check_ids(path: Path, ids: pd.Series) -> None:
    bad = ids.str.contains(_SAFE_ID, regex=True)
    if bad.any():
        raise UserError(f"{path} has an unsafe image id {ids[bad].iloc[0]!r} (ids may not contain '/', '\\' or '..').")
    ctl = ids.str.contains(_CONTROL, regex=True)
    if ctl.any():
        n = int(np.flatnonzero(ctl.to_numpy())[0])
        raise UserError(f"{path} has an image id with a control character, {ids.iloc[n]!r} on data row {n + 1}; "
                        f"fix or remove that row.")


def _drop_duplicates(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """A row listed twice is one image; an id under two landmarks has no right answer."""
    if not df["id"].duplicated().any():   # the common case, and the cheap test (~1 s for GLDv2)
        return df
    df = df.drop_duplicates(["id", "landmark_id"])
    twice = df["id"].duplicated(keep=False)
    if twice.any():
        i = df["id"][twice].iloc[0]
        labels = " and ".join(df.loc[df["id"] == i, "landmark_id"].head(2))
        raise UserError(f"{path} lists the image id {i!r} under two landmark ids ({labels}); "
                        f"keep one row per image.")
    return df


IMAGE_DIRS = ("train", "images", ".")   # where a train.csv's images may live, in this order


def _csv_image_dir(root: Path, ids: pd.Series, least: float = 0.5) -> tuple[Path, bool] | None:
    """Find where a train.csv's images live: (folder, nested), the first candidate holding at
    least `least` of up to 20 probed ids (and one at least), or None."""
    probe = [i for i in ids.head(50) if i][:20]
    for folder in IMAGE_DIRS:
        d = (root / folder).resolve()
        for nested in (True, False):
            hits = sum(_on_disk(d / _rel(i, nested), d) for i in probe)
            if probe and hits >= max(1, math.ceil(len(probe) * least)):
                return d, nested
    return None


def _rel(i: str, nested: bool) -> str:
    return f"{i[0]}/{i[1]}/{i[2]}/{i}.jpg" if nested else f"{i}.jpg"


def _on_disk(path: Path, top: Path) -> bool:
    """Whether `path` exists; a folder between `top` and it that may not be read is a sentence
    naming that folder (Path.exists raises PermissionError there on Python 3.11)."""
    try:
        os.stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError:
        raise _unreadable_folder(_blocked_folder(path, top)) from None


def _blocked_folder(path: Path, top: Path) -> Path:
    """The outermost folder from `top` down to `path`'s own that cannot be listed."""
    d = top
    for part in ("", *path.parent.relative_to(top).parts):
        d = d / part if part else d
        try:
            with os.scandir(d):
                pass
        except PermissionError:
            return d
        except OSError:
            break
    return path.parent


def _unreadable_folder(d: Path) -> UserError:
    return UserError(f"Cannot read the image folder {d} (permission denied); fix its permissions "
                     f"(for example chmod -R u+rX {d}) or move it out of the data set.")


def _check_image_folders(folder: Path, ids: pd.Series, nested: bool) -> None:
    """Every first-level image folder the ids use (train/0 … train/f) can be listed: one that
    cannot is a sentence, not images silently skipped one by one. Folders that do not exist
    are left to the scan (their images are missing)."""
    for d in sorted(ids.str[0].unique()) if nested else ["."]:
        try:
            with os.scandir(folder / d):
                pass
        except PermissionError:
            raise _unreadable_folder((folder / d).resolve() if d == "." else folder / d) from None
        except OSError:
            continue


def _category_names(root: Path) -> dict:
    f = root / "train_label_to_category.csv"
    if not f.exists():
        return {}
    df = parse_csv(f, lambda: pd.read_csv(f, dtype=str, keep_default_na=False))
    if not {"landmark_id", "category"} <= set(df.columns):
        raise UserError(f"{f} is missing column(s); expected columns landmark_id,category.")
    return readable_names(df)


def readable_names(df: pd.DataFrame) -> dict:
    """landmark_id -> name from a (landmark_id, category) frame. GLDv2 categories are Wikimedia
    URLs, percent-encoded: keep the readable tail, decoded (".../Category:Marb%C3%A4cks_kyrka,_Sm%C3%A5land"
    -> "Marbäcks kyrka, Småland")."""
    tail = df["category"].str.replace(r"^.*Category:", "", regex=True)
    return dict(zip(df["landmark_id"], [decode_name(t.replace("_", " ")) for t in tail]))


def decode_name(name) -> str:
    """A class name percent-decoded (UTF-8; an invalid escape stays as it is). A name without '%'
    is returned unchanged, so names decoded before are safe to decode again."""
    s = str(name)
    if "%" not in s:
        return s
    try:
        return unquote(s, errors="strict")
    except UnicodeDecodeError:        # "%E9" alone is Latin-1, not UTF-8: leave it as written
        return s


def _listed(root: Path, clean: bool = False, required=CSV_COLUMNS) -> tuple[pd.DataFrame, dict]:
    """train.csv's (id, landmark_id) rows, each image once, narrowed to train_clean.csv's ids
    with `clean`; and the duplicate report. Training's index and `stats` both count these."""
    df, dups = _read_csv(root / "train.csv", required)
    if clean:
        df = df[df["id"].isin(set(clean_table(root)["id"]))]
    return df, dups


def _image_paths(folder: Path, ids: pd.Series, nested: bool) -> pd.Series:
    rel = (ids.str[0] + "/" + ids.str[1] + "/" + ids.str[2] + "/" + ids + ".jpg") if nested else ids + ".jpg"
    return str(folder) + os.sep + rel


def _not_on_disk(root: Path) -> UserError:
    return UserError(f"{root / 'train.csv'} lists images that are not on disk; expected them under "
                     f"train/<a>/<b>/<c>/<id>.jpg, images/…, or <dir>/<id>.jpg.")


def read_csv_layout(root: Path) -> DatasetIndex:
    df, dups = _listed(root)
    if df.empty:
        raise UserError(f"{root / 'train.csv'} lists no images: the data set is empty.")
    found = _csv_image_dir(root, df["id"])
    if found is None:
        raise _not_on_disk(root)
    folder, nested = found
    _check_image_folders(folder, df["id"], nested)
    samples = pd.DataFrame({"path": _image_paths(folder, df["id"], nested), "label": df["landmark_id"].astype(str)})
    return DatasetIndex(root, "gldv2" if nested else "gldv1", samples, _category_names(root),
                        synthetic=(root / "SYNTHETIC.txt").exists(), duplicates=dups)


def _entries(d: Path, what: str = "class folder", fix: str = "make it readable or move it out of the data set") -> list:
    """os.scandir(d), sorted by name; a folder that cannot be listed is a sentence naming it."""
    try:
        with os.scandir(d) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        reason = (e.strerror or type(e).__name__).lower()
        raise UserError(f"Cannot read the {what} {d} ({reason}); {fix}.") from None


def _subfolders(root: Path) -> list[Path]:
    entries = _entries(root, "data set folder", "make it readable")
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]


def read_folders(root: Path) -> DatasetIndex:
    rows = []
    for d in _subfolders(root):
        for f in _entries(d):
            if f.is_file() and Path(f.name).suffix.lower() in IMAGE_EXTS:
                rows.append((f.path, d.name))
    samples = pd.DataFrame(rows, columns=["path", "label"])
    return DatasetIndex(root, "folders", samples, {}, synthetic=(root / "SYNTHETIC.txt").exists())


def read_version(root: Path) -> DatasetIndex:
    """A data set version (core.data.changes): its base's index with the version's changes applied.
    The index is rooted at the base's folder (paths, the prepared cache and relative paths are the
    base's) and keeps the base's index (`base`) for the holdout (core.data.splits.base_places)."""
    v = changes.read_version(root)
    if changes.is_version(v.base):
        raise UserError(f"The base of the version {v.root} is itself a version ({v.base}); make it again.")
    return changes.apply(load_index(v.base), v.changes)


READERS = {"csv": read_csv_layout, "folders": read_folders, "version": read_version}


def detect_layout(root: Path) -> str:
    root = Path(root)
    try:
        if not root.is_dir():
            raise UserError(f"Data set folder {root} does not exist.")
        if (root / changes.VERSION_FILE).exists():
            return "version"
        if (root / "train.csv").exists():
            return "csv"
    except PermissionError:
        raise UserError(f"Cannot read the data set folder {root} (permission denied); fix its permissions.") from None
    for e in _entries(root, "data set folder", "make it readable"):   # up to the first class folder with an image
        if e.is_dir() and not e.name.startswith(".") and any(
                Path(f.name).suffix.lower() in IMAGE_EXTS for f in _entries(Path(e.path))):
            return "folders"
    raise UserError(f"{root} is not a data set: expected train.csv (Google Landmarks layout) "
                    f"or one folder of images per class.")


CLEAN_CSV = "train_clean.csv"


def has_clean(root) -> bool:
    """Does the data set (a version's base) ship GLDv2's cleaned subset (train_clean.csv)?"""
    root = Path(root).expanduser()
    return ((changes.read_version(root).base if changes.is_version(root) else root) / CLEAN_CSV).is_file()


def clean_table(root: Path) -> pd.DataFrame:
    """train_clean.csv (`landmark_id,images`, ids separated by spaces) -> one row per image id."""
    f = root / CLEAN_CSV
    if not f.is_file():
        raise UserError(f"{root} has no {CLEAN_CSV}; only GLDv2 ships the cleaned subset.")
    df = parse_csv(f, lambda: pd.read_csv(f, dtype=str, keep_default_na=False, engine="pyarrow"))
    if not {"landmark_id", "images"} <= set(df.columns):
        raise UserError(f"{f} is missing column(s); expected columns landmark_id,images.")
    ids = df.assign(id=df["images"].str.split()).explode("id")
    return ids.loc[ids["id"].notna() & (ids["id"] != ""), ["id", "landmark_id"]]


def load_index(root, clean: bool = False) -> DatasetIndex:
    root = Path(root).expanduser().resolve()
    index = READERS[detect_layout(root)](root)
    if clean:     # index.root: a version's index is rooted at its base's folder
        keep = set(clean_table(index.root)["id"])
        for i in (index, index.base) if index.base is not None else (index,):
            stem = i.samples["path"].str.rsplit("/", n=1).str[-1].str.removesuffix(".jpg")
            i.samples = i.samples[stem.isin(keep)].reset_index(drop=True)
    if index.samples.empty:
        raise UserError(f"{root} contains no images{' listed in ' + CLEAN_CSV if clean else ''}.")
    return index


def scan_index(root, labels, clean: bool = False) -> tuple[DatasetIndex, dict]:
    """The index of `labels`' images that are on disk, and {"images": n, "paths": [a few]} of
    those a train.csv lists that are not: a scan checks what is there and says what is not
    (issue 20), where training's layout probe would refuse a set that is mostly missing."""
    root = Path(root).expanduser().resolve()
    labels = set(map(str, labels))
    if detect_layout(root) != "csv":
        index = load_index(root, clean)
        index.samples = index.samples[index.samples["label"].isin(labels)].reset_index(drop=True)
        return index, {"images": 0, "paths": []}
    df, dups = _listed(root, clean)
    df = df[df["landmark_id"].isin(labels)]
    folder, nested = (_csv_image_dir(root, df["id"]) or _csv_image_dir(root, df["id"], least=0)
                      or ((root / IMAGE_DIRS[0]).resolve(), True))
    _check_image_folders(folder, df["id"], nested)
    paths = _image_paths(folder, df["id"], nested)
    here = np.fromiter((_on_disk(Path(p), folder) for p in paths), bool, len(paths))
    samples = pd.DataFrame({"path": paths[here], "label": df["landmark_id"][here].astype(str)}).reset_index(drop=True)
    index = DatasetIndex(root, "gldv2" if nested else "gldv1", samples, _category_names(root),
                         synthetic=(root / "SYNTHETIC.txt").exists(), duplicates=dups)
    return index, {"images": int((~here).sum()), "paths": paths[~here].head(DUPLICATE_EXAMPLES).tolist()}


def missing_note(missing: int, present: int, examples=(), then: str = "the scan checked the {present:,} that are") -> str | None:
    """One sentence on the images of the classes looked at that a train.csv lists but the disk
    lacks, ending with what was done with the `present` ones; None when none is missing."""
    if not missing:
        return None
    eg = f" (e.g. {examples[0]})" if len(examples) else ""
    return (f"{missing:,} of the {missing + present:,} images train.csv lists in these classes are not on disk{eg}; "
            f"{then.format(present=present)}.")


# ---------------------------------------------------------------- statistics (cached)

STATS_VERSION = 2  # in the cache's file names: v2 counts an image listed twice once, as training does (issue 19)


def signature(root: Path, clean: bool = False) -> str:
    """Changes when the data set does: train.csv's (and train_clean.csv's) size+mtime, or the
    class folders' mtimes."""
    if (root / changes.VERSION_FILE).exists():   # a version: its changes (never rewritten) and its base's signature
        st = (root / changes.CHANGES_FILE).stat()
        sig = f"{root}|{st.st_size}|{st.st_mtime_ns}|{signature(changes.read_version(root).base, clean)}"
        return hashlib.sha1(sig.encode()).hexdigest()[:16]
    files = [f for f in (root / "train.csv", root / CLEAN_CSV if clean else None) if f is not None and f.exists()]
    if files:
        sig = "|".join(f"{f}|{st.st_size}|{st.st_mtime_ns}" for f in files for st in [f.stat()])
    else:  # folders: the class folders' mtimes change when files are added or removed (scandir: one
        # stat per folder, no Path objects; 81,313 class folders took 2 stats and a Path each, seconds a page)
        with os.scandir(root) as it:
            sig = "|".join(f"{e.path}:{e.stat().st_mtime_ns}" for e in sorted(it, key=lambda e: e.name) if e.is_dir())
    return hashlib.sha1(sig.encode()).hexdigest()[:16]


def _sorted_counts(labels: pd.Series) -> pd.Series:
    """Images per label, most frequent first (ties in order of first appearance)."""
    s = labels.astype(str).value_counts(sort=False).rename("count")
    return s.sort_values(ascending=False, kind="stable")


def _count(root: Path, layout: str, clean: bool) -> tuple[pd.Series, dict]:
    if layout == "csv":   # from the CSV alone: images need not be on disk to be counted
        df, dups = _listed(root, clean, required=("id", "landmark_id"))
        return _sorted_counts(df["landmark_id"]), dups
    index = load_index(root, clean)
    return _sorted_counts(index.samples["label"]), index.duplicates


def label_counts(root, clean: bool = False) -> tuple[pd.Series, dict]:
    """(images per class, most frequent first; the duplicate report), cached on the CSVs' size and
    mtime. An image listed twice counts once, as in training's index. `clean`: the images of
    train_clean.csv (GLDv2's cleaned subset) only."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    root = Path(root).expanduser().resolve()
    layout = detect_layout(root)
    cache = cache_dir() / "stats" / f"{signature(root, clean)}{'-clean' if clean else ''}-v{STATS_VERSION}.parquet"
    if cache.exists():
        t = pq.read_table(cache)
        dups = json.loads((t.schema.metadata or {}).get(b"duplicates", json.dumps(NO_DUPLICATES).encode()))
        df = t.to_pandas()
        return pd.Series(df["count"].to_numpy(), index=df["label"].to_numpy(), name="count"), dups
    s, dups = _count(root, layout, clean)
    cache.parent.mkdir(parents=True, exist_ok=True)
    t = pa.table({"label": s.index.astype(str), "count": s.to_numpy()})
    with atomic_output(cache) as tmp:
        pq.write_table(t.replace_schema_metadata({"duplicates": json.dumps(dups)}), tmp)
    return s, dups


def class_counts(root, clean: bool = False) -> pd.Series:
    """Images per class, most frequent first (label_counts without the duplicate report)."""
    return label_counts(root, clean)[0]


def imbalance(counts: pd.Series, top: int, small: int = 10) -> dict:
    """Figures that describe how imbalanced the class distribution is."""
    total = int(counts.sum())
    top_n = counts.head(top) if top else counts
    return {
        "classes": int(len(counts)),
        "images": total,
        "largest": int(counts.iloc[0]),
        "smallest": int(counts.iloc[-1]),
        "ratio": float(counts.iloc[0] / max(1, counts.iloc[-1])),
        "top_n": int(len(top_n)),
        "top_n_images": int(top_n.sum()),
        "top_n_share": float(top_n.sum() / max(1, total)),
        "top_n_ratio": float(top_n.iloc[0] / max(1, top_n.iloc[-1])),
        f"classes_under_{small}": int((counts < small).sum()),
        "median": float(np.median(counts.to_numpy())),
    }
