"""Choosing the images: the rows of the top-N most frequent classes of a Google Landmarks CSV.

Only the `landmark_id` column is read (pyarrow, multi-threaded) and counted; the N most frequent
classes are chosen (ties broken by landmark id, as `core.data.splits.top_classes` does); then the
CSV is streamed in blocks (`pyarrow.csv.open_csv`) keeping only the rows of those classes, so a
4.1 M-row GLDv2 train.csv never sits in memory as a table. With `clean`, the counts and the
images come from GLDv2's `train_clean.csv` (`landmark_id,images`) beside the CSV, the URLs from
the CSV."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.errors import UserError


def _header(path: Path) -> list[str]:
    from core.data.readers import parse_csv
    return list(parse_csv(path, lambda: pd.read_csv(path, nrows=0)).columns)


def _columns(path: Path) -> list[str]:
    """The CSV's header, with id and landmark_id (every Google Landmarks train.csv has them)."""
    cols = _header(path)
    missing = [c for c in ("id", "landmark_id") if c not in cols]
    if missing:
        raise UserError(f"{path} is missing column(s) {', '.join(missing)}; expected columns id,url,landmark_id "
                        f"(or id,landmark_id with --tars).")
    return cols


def needs_urls(path: Path, cols: list[str] | None = None) -> None:
    """A CSV to fetch URLs from must have a url column: the 2019-2021 Kaggle train.csv
    (id,landmark_id) has none, and its images come from the tars."""
    if "url" not in (cols if cols is not None else _columns(path)):
        raise UserError(f"{path} has no url column (the 2019-2021 Kaggle train.csv lists id,landmark_id only), "
                        f"so there is nothing to fetch; extract the images from GLDv2's tar files with --tars, "
                        f"or use GLDv2's train.csv (id,url,landmark_id).")


def _order(counts: pd.Series, top: int) -> pd.Series:
    """The `top` largest counts, ties broken by label (as splits.top_classes does)."""
    df = pd.DataFrame({"label": counts.index.astype(str), "count": counts.to_numpy()})
    df = df[df["label"] != ""].sort_values(["count", "label"], ascending=[False, True], kind="stable")
    df = df.head(top)
    return pd.Series(df["count"].to_numpy(), index=df["label"].to_numpy(), name="count")


def _clean_ids(path: Path, top: int) -> tuple[pd.Series, pd.DataFrame]:
    """train_clean.csv -> (counts of the chosen classes, one row per chosen image id)."""
    from core.data.readers import parse_csv
    f = path.parent / "train_clean.csv"
    if not f.is_file():
        raise UserError(f"--clean needs GLDv2's train_clean.csv beside {path.name} in {path.parent}.")
    df = parse_csv(f, lambda: pd.read_csv(f, dtype=str, keep_default_na=False, engine="pyarrow"))
    if not {"landmark_id", "images"} <= set(df.columns):
        raise UserError(f"{f} is missing column(s); expected columns landmark_id,images.")
    ids = df["images"].str.split()
    counts = pd.Series(ids.str.len().fillna(0).astype(int).to_numpy(), index=df["landmark_id"].to_numpy())
    counts = counts.groupby(level=0).sum()
    chosen = _order(counts, top)
    keep = df["landmark_id"].isin(set(chosen.index))
    rows = df.loc[keep, ["landmark_id"]].assign(id=ids[keep]).explode("id")
    rows = rows[rows["id"].notna() & (rows["id"] != "")].drop_duplicates("id")
    return chosen, rows[["id", "landmark_id"]].reset_index(drop=True)


def pick_top(csv, top: int, clean: bool = False, block_size: int = 4 << 20, urls: bool = True) -> pd.DataFrame:
    """The rows (id, url, landmark_id; strings, CSV order) of the `top` most frequent classes.

    Reads only the landmark_id column to count, then streams the CSV keeping the chosen rows.
    `clean`: counts and ids from train_clean.csv beside the CSV (ids it lists that the CSV lacks
    come with url ""). `urls=False` (images from tars): a CSV without a url column (the 2019-2021
    Kaggle train.csv, id,landmark_id) is read too, every url "". The chosen classes, most
    frequent first, are in `df.attrs["classes"]` (label -> count)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    from core.data.readers import _check_ids, _drop_duplicates, parse_csv
    path = Path(csv).expanduser()
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass the path of Google Landmarks' train.csv (id,url,landmark_id).")
    top = int(top)
    if top < 1:
        raise UserError(f"--top must be at least 1 (the number of most frequent classes to get); got {top}.")
    cols = _columns(path)
    if urls:
        needs_urls(path, cols)
    columns = [c for c in ("id", "url", "landmark_id") if c in cols]
    types = {c: pa.string() for c in columns}
    read = pacsv.ReadOptions(block_size=block_size)
    if clean:
        chosen, clean_rows = _clean_ids(path, top)
        value_set = pa.array(clean_rows["id"].tolist(), pa.string())
        key = "id"
    else:
        def count(kind):
            table = pacsv.read_csv(path, read_options=read, convert_options=pacsv.ConvertOptions(
                include_columns=["landmark_id"], column_types={"landmark_id": kind}))
            return pc.value_counts(table.column("landmark_id")).flatten()
        try:   # GLDv2's landmark ids are integers: parsed as such, the count pass is ~2x faster
            vc = count(pa.int64())
            types["landmark_id"] = pa.int64()
        except (pa.ArrowInvalid, ValueError):
            vc = parse_csv(path, lambda: count(pa.string()))
        labels = pd.Series(vc[0].to_pylist(), dtype=object)
        counts = pd.Series(vc[1].to_numpy(zero_copy_only=False), index=labels.where(labels.isna(), labels.astype(str)))
        chosen = _order(counts[counts.index.notna()], top)
        value_set = pa.array([int(v) for v in chosen.index] if types["landmark_id"] == pa.int64()
                             else list(chosen.index), types["landmark_id"])
        key = "landmark_id"
    if chosen.empty:
        raise UserError(f"{path} lists no labelled images.")

    def stream() -> list:
        parts = []
        reader = pacsv.open_csv(path, read_options=read,
                                convert_options=pacsv.ConvertOptions(include_columns=columns,
                                                                     column_types=types))
        for batch in reader:
            mask = pc.is_in(batch.column(key), value_set=value_set)
            if pc.any(mask).as_py():
                parts.append(batch.filter(mask))
        return parts
    parts = parse_csv(path, stream)
    schema = pa.schema([(c, types[c]) for c in columns])
    df = pa.Table.from_batches(parts, schema=schema).to_pandas() if parts else pd.DataFrame(
        {c: pd.Series([], dtype=object) for c in columns})
    df["landmark_id"] = df["landmark_id"].astype(str) if len(df) else df["landmark_id"]
    if "url" not in df:
        df["url"] = ""
    df = df[["id", "url", "landmark_id"]]
    if clean:
        label_of = dict(zip(clean_rows["id"], clean_rows["landmark_id"]))
        df = df[df["id"].map(label_of) == df["landmark_id"]]
        absent = clean_rows[~clean_rows["id"].isin(set(df["id"]))]
        if len(absent):
            df = pd.concat([df, absent.assign(url="")[["id", "url", "landmark_id"]]], ignore_index=True)
    df = df[df["id"] != ""].reset_index(drop=True)
    _check_ids(path, df["id"])
    short = df["id"].str.len() < 3
    if short.any():
        raise UserError(f"{path} has an image id {df['id'][short].iloc[0]!r} shorter than 3 characters; "
                        f"Google Landmarks ids are 16 hexadecimal digits.")
    df = _drop_duplicates(path, df).reset_index(drop=True)
    if df.empty:
        raise UserError(f"{path} lists no images of its {len(chosen)} most frequent classes.")
    df.attrs["classes"] = {str(k): int(v) for k, v in chosen.items()}
    return df
