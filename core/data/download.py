"""Get the images of the top-N Google Landmarks classes: from their URLs, or from GLDv2's tar shards.

    python -m core download --csv train.csv --top 100 --out DIR [--clean] [--max-side 512]
                            [--workers 32] [--shard K/N] [--tars DIR_OR_FILES...] [--json]

Design (habits borrowed from img2dataset, built on httpx, Pillow and pyarrow):

* **Pick first, fetch second** (`pick_top`). Only the `landmark_id` column of the CSV is read
  (pyarrow, multi-threaded) and counted; the N most frequent classes are chosen (ties broken by
  landmark id, as `core.data.splits.top_classes` does); then the CSV is streamed in blocks
  (`pyarrow.csv.open_csv`) keeping only the rows of those classes. A 4.1 M-row GLDv2 train.csv
  never sits in memory as a table. With `clean`, the counts and the images come from GLDv2's
  `train_clean.csv` (`landmark_id,images`) beside the CSV, the URLs from the CSV.
* **Shards.** The chosen rows, in CSV order, are cut into shards of SHARD_SIZE images; with
  `shard=(K, N)` this machine takes shards K-1, K-1+N, ... so several machines split one CSV.
  Each shard's outcome (id -> status) is written atomically to `OUT/.download/shard_00012.json`,
  and `shard_00012.success` marks it finished: a rerun skips a finished shard (after checking its
  images are still on disk), never retries its dead links or non-images, and revisits it only
  for its transient failures (timeouts, 5xx, broken transfers). `OUT/.download/plan.json` holds a
  hash of the chosen ids: a different --top/--clean/CSV starts the bookkeeping afresh (the
  images on disk are kept and still count).
* **Resumable.** An image whose file exists is never fetched again ("already there"); a file
  only exists once complete (written to a temporary name, then `os.replace`). A stopped or
  interrupted run writes its unfinished shards' outcomes too (without the success file), so a
  rerun fetches only the transient failures (timeouts, 5xx) and what was never tried.
* **Parallel fetches** on `httpx.AsyncClient`s holding `workers` connections in all (split into
  clients of at most POOL_SPLIT connections: httpcore scans its whole pool on every request) and
  `workers` worker coroutines pulling from a bounded queue (memory stays flat at any N);
  timeouts (connect/read, plus a total per attempt), redirects followed, retries with
  exponential backoff and jitter on timeouts, 408/425/429/5xx and connection errors, never on
  404/410 or other 4xx. A body larger than MAX_BYTES is abandoned.
* **Decode, resize, write in threads** (`loop.run_in_executor`): each body must decode fully
  (HTML saved as .jpg and truncated files are rejected as "not images"), is shrunk so its longer
  side is at most `max_side` (JPEG draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding,
  never below the final size; then an antialiased bilinear resize, JPEG quality 90); a JPEG
  already small enough keeps its original bytes; `max_side=0` keeps every
  JPEG as it came (other formats are converted to JPEG at full size: the files are .jpg).
* **Tar shards** (`tars=`): GLDv2's `images_000.tar` ... are streamed (`tarfile` mode "r|*",
  members `a/b/c/<id>.jpg`), only the chosen ids are decoded and written the same way. A finished
  tar has its own success file; `shard=(K, N)` splits the tar files between machines.
* **Output** is the layout `core.data.readers` detects: `OUT/train/<a>/<b>/<c>/<id>.jpg`,
  `OUT/train.csv` (id,url,landmark_id of the chosen images actually on disk, rewritten
  atomically at the end of every run, stopped or not), `train_label_to_category.csv` (the chosen
  classes' rows, when that file lies beside the CSV) and `OUT/download_report.json` (totals and,
  per class, what could not be had and why).

Outcome of each image (the counts in progress callbacks and the report):
  fetched    downloaded (or extracted), decoded and written in this run
  already    on disk before this run
  dead       404/410/other 4xx, or connection failures after the retries
  not_image  the body does not decode as an image (HTML, truncated, too large)
  failed     timeouts, 5xx or broken transfers after the retries (worth another run)
  no_url     the CSV has no usable http(s) URL ("None" in the 2018 Kaggle CSV)
  missing    (tars) not found in the tar files given
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import re
import sys
import tarfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pandas as pd

from core.errors import UserError
from core.paths import DISK_FULL, ensure_dir, write_error

SHARD_SIZE = 1000                 # images per shard (one bookkeeping file each)
MAX_BYTES = 40 * 2**20            # a body larger than this is abandoned ("not_image")
MAX_TAR_MEMBER = 40 * 2**20
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524}
STATUSES = ("fetched", "already", "dead", "not_image", "failed", "no_url", "missing")
SHORTFALL = ("dead", "not_image", "failed", "no_url", "missing")
PERMANENT = {"dead", "not_image", "no_url"}      # a rerun does not try these again
OK = {"fetched", "already"}
LABELS = {"fetched": "fetched", "already": "already there", "dead": "dead links", "not_image": "not images",
          "failed": "failed (timeouts, 5xx)", "no_url": "no URL", "missing": "not in the tars"}
STATE = ".download"
REPORT = "download_report.json"
POOL_SPLIT = 8                    # connections per AsyncClient: httpcore's pool does O(connections)
                                  # work per request, so 32 workers share 4 clients of 8 (2x the images/s)
STOP_GRACE_S = 2.0                # in-flight requests may finish this long after a stop
USER_AGENT = "landmarks-workbench/1.0 (+https://github.com; research data set download; httpx)"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


# ------------------------------------------------------------------ arguments

def parse_shard(text) -> tuple[int, int]:
    """'K/N' (or a (K, N) pair) -> (K, N) with 1 <= K <= N."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        k, n = (int(v) for v in text)
    else:
        m = _SHARD.match(str(text or ""))
        if not m:
            raise UserError(f"--shard must be K/N with 1 <= K <= N (for example 1/4); got {text!r}.")
        k, n = int(m[1]), int(m[2])
    if not 1 <= k <= n:
        raise UserError(f"--shard must be K/N with 1 <= K <= N (for example 1/4); got {k}/{n}.")
    return k, n


def tar_files(tars) -> list[Path]:
    """Tar files from files and folders (a folder: its *.tar, *.tar.gz, *.tgz, sorted)."""
    if isinstance(tars, (str, os.PathLike)):
        tars = [tars]
    found: list[Path] = []
    for t in tars or []:
        p = Path(t).expanduser()
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith((".tar", ".tar.gz", ".tgz")))
            if not inside:
                raise UserError(f"The folder {p} holds no .tar files; pass GLDv2's images_000.tar ... or their folder.")
            found += inside
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"The tar file or folder {p} does not exist.")
    return list(dict.fromkeys(found))


def _whole(v, name: str) -> int:
    try:
        if isinstance(v, float) and not v.is_integer():
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a whole number; got {v!r}.") from None


def check(csv, out, top, clean: bool = False, max_side: int = 512, workers: int = 32, shard=(1, 1),
          tars=None) -> tuple[Path, Path, list[Path]]:
    """Validate the arguments cheaply (no CSV body is read): (csv, out, tar files) or a UserError."""
    if not csv or not str(csv).strip():
        raise UserError("Give the Google Landmarks train.csv to download from (--csv).")
    csv = Path(str(csv).strip()).expanduser()
    if not csv.is_file():
        raise UserError(f"{csv} does not exist; pass the path of Google Landmarks' train.csv "
                        f"(id,url,landmark_id).")
    if not out or not str(out).strip():
        raise UserError("Give the folder to download into (--out).")
    top, max_side, workers = (_whole(v, name) for v, name in ((top, "--top"), (max_side, "--max-side"),
                                                              (workers, "--workers")))
    if top < 1:
        raise UserError(f"--top must be at least 1 (the number of most frequent classes to get); got {top}.")
    if max_side != 0 and not 16 <= max_side <= 8192:
        raise UserError(f"--max-side must be 0 (keep the original size) or between 16 and 8192 px; got {max_side}.")
    if not 1 <= workers <= 1024:
        raise UserError(f"--workers must be between 1 and 1024; got {workers}.")
    parse_shard(shard)
    if clean and not (csv.parent / "train_clean.csv").is_file():
        raise UserError(f"--clean needs GLDv2's train_clean.csv beside {csv.name} in {csv.parent}; "
                        f"download it too, or leave --clean off.")
    files = tar_files(tars) if tars else []
    out = Path(str(out).strip()).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"Cannot write the download folder {out} (it is a file); choose a folder.")
    return csv, out, files


# ------------------------------------------------------------------ choosing the images

def _header(path: Path) -> list[str]:
    from core.data.readers import parse_csv
    return list(parse_csv(path, lambda: pd.read_csv(path, nrows=0)).columns)


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


def pick_top(csv, top: int, clean: bool = False, block_size: int = 4 << 20) -> pd.DataFrame:
    """The rows (id, url, landmark_id; strings, CSV order) of the `top` most frequent classes.

    Reads only the landmark_id column to count, then streams the CSV keeping the chosen rows.
    `clean`: counts and ids from train_clean.csv beside the CSV (ids it lists that the CSV lacks
    come with url ""). The chosen classes, most frequent first, are in `df.attrs["classes"]`
    (label -> count)."""
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
    cols = _header(path)
    missing = [c for c in ("id", "url", "landmark_id") if c not in cols]
    if missing:
        raise UserError(f"{path} is missing column(s) {', '.join(missing)}; expected columns id,url,landmark_id.")
    types = {c: pa.string() for c in ("id", "url", "landmark_id")}
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
                                convert_options=pacsv.ConvertOptions(include_columns=["id", "url", "landmark_id"],
                                                                     column_types=types))
        for batch in reader:
            mask = pc.is_in(batch.column(key), value_set=value_set)
            if pc.any(mask).as_py():
                parts.append(batch.filter(mask))
        return parts
    parts = parse_csv(path, stream)
    schema = pa.schema([(c, types[c]) for c in ("id", "url", "landmark_id")])
    df = pa.Table.from_batches(parts, schema=schema).to_pandas() if parts else pd.DataFrame(
        {c: pd.Series([], dtype=object) for c in ("id", "url", "landmark_id")})
    df["landmark_id"] = df["landmark_id"].astype(str) if len(df) else df["landmark_id"]
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


# ------------------------------------------------------------------ one image

def target(out: Path, image_id: str) -> Path:
    """OUT/train/<a>/<b>/<c>/<id>.jpg (GLDv2's nested layout, as readers._rel writes it)."""
    return out / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def encode(body: bytes, max_side: int) -> bytes:
    """The bytes to store: the body decoded in full (or ValueError/OSError), shrunk so the longer
    side is at most max_side and saved as JPEG; a JPEG small enough keeps its own bytes."""
    from PIL import Image, ImageOps

    from core.data.readers import MAX_PIXELS, to_rgb
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(body))
        if im.width * im.height > MAX_PIXELS:
            raise ValueError(f"{im.width}x{im.height} pixels is over the {MAX_PIXELS:,}-pixel limit")
        jpeg = im.format in ("JPEG", "MPO")
        big = bool(max_side) and max(im.size) > max_side
        if jpeg and big:                            # DCT-domain downscale by 2, 4 or 8 while decoding,
            k = max_side / max(im.size)             # never below the final size
            im.draft("RGB", (max(1, int(im.width * k)), max(1, int(im.height * k))))
        im.load()                                   # the full decode: a truncated body fails here
    if jpeg and not big:
        return body
    im = to_rgb(ImageOps.exif_transpose(im))
    if big:
        im.thumbnail((max_side, max_side), Image.BILINEAR, reducing_gap=2.0)   # antialiased, as torchvision's Resize
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:160]


def save(body: bytes, path: Path, max_side: int) -> tuple[str, str]:
    """Decode/resize `body` and write it atomically at `path`: ("fetched", "") or ("not_image", why).
    An OSError while writing (disk full, permissions) propagates: it stops the whole download."""
    try:
        data = encode(body, max_side)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "not an image"
        return "not_image", _reason(e)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return "fetched", ""


# ------------------------------------------------------------------ bookkeeping

def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class Shard:
    """A slice of the work: rows [start, stop) of the chosen images (or one tar file)."""

    def __init__(self, name: str, rows: range, state: Path):
        self.name, self.rows = name, rows
        self.file, self.success = state / f"{name}.json", state / f"{name}.success"
        self.status: dict[str, str] = {}      # id -> outcome
        self.why: dict[str, str] = {}         # id -> detail of a failure
        self.pending = 0
        self.queued_all = False
        self.dirty = False
        self.finished = False

    def load(self) -> None:
        try:
            d = json.loads(self.file.read_text())
            self.status, self.why = dict(d.get("status") or {}), dict(d.get("why") or {})
        except (OSError, ValueError):
            self.status, self.why = {}, {}

    def record(self, image_id: str, status: str, why: str = "") -> None:
        self.status[image_id] = status
        if why:
            self.why[image_id] = why
        self.dirty = True

    def save(self, finished: bool) -> None:
        _write_json(self.file, {"shard": self.name, "status": self.status, "why": self.why,
                                "counts": {s: sum(1 for v in self.status.values() if v == s) for s in STATUSES},
                                "finished": finished, "time": time.time()})
        if finished:
            self.success.write_text(f"{len(self.status)}\n")
            self.finished = True
        self.dirty = False


class _Run:
    """Counters, shards and callbacks of one download() call."""

    def __init__(self, work: pd.DataFrame, out: Path, progress, should_stop):
        self.ids = work["id"].tolist()
        self.urls = work["url"].tolist()
        self.labels = work["landmark_id"].tolist()
        self.out = out
        self.counts = dict.fromkeys(STATUSES, 0)
        self.done = self.total = 0
        self._progress, self._should_stop = progress, should_stop
        self.stopping = False
        self.fatal: BaseException | None = None
        self.t0 = time.monotonic()
        self.resolved_now = 0            # outcomes decided by network/decoding in this run
        self._last = 0.0
        self.lock = threading.Lock()

    def add(self, status: str, now: bool = True) -> None:
        with self.lock:
            self.counts[status] += 1
            self.done += 1
            if now and status != "already":
                self.resolved_now += 1

    def stop_requested(self) -> bool:
        if not self.stopping and self._should_stop is not None and self._should_stop():
            self.stopping = True
        return self.stopping

    def report(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        rate = self.resolved_now / max(now - self.t0, 1e-6)
        left = self.total - self.done
        extra = {"rate": round(rate, 2), "eta_s": round(left / rate, 1) if rate > 0 and left else (0.0 if not left else None),
                 "seconds": round(now - self.t0, 2)}
        self._progress(self.done, self.total, {**self.counts, **extra})


# ------------------------------------------------------------------ fetching

def default_client(workers: int, timeout: float):
    """The AsyncClient the downloader uses: one pool of `workers` connections, redirects followed."""
    import httpx
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=workers, max_keepalive_connections=min(workers, 64)),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), follow_redirects=True,
        headers={"User-Agent": USER_AGENT})


async def fetch(client, url: str, timeout: float, retries: int, backoff: float) -> tuple[str, str, bytes]:
    """("ok", "", body) or (outcome, why, b"") for one URL, with retries and backoff."""
    import httpx
    status, why = "failed", ""
    for attempt in range(retries + 1):
        retry = False
        try:
            async with asyncio.timeout(timeout * 3):          # a whole attempt, not just one read
                async with client.stream("GET", url) as r:
                    code = r.status_code
                    if code in RETRY_STATUS:
                        status, why, retry = "failed", f"HTTP {code}", True
                    elif code >= 400:
                        return "dead", f"HTTP {code}", b""
                    else:
                        size = int(r.headers.get("content-length") or 0)
                        if size > MAX_BYTES:
                            return "not_image", f"{size:,} bytes is over the {MAX_BYTES >> 20} MB limit", b""
                        chunks, size = [], 0
                        async for chunk in r.aiter_bytes():
                            size += len(chunk)
                            if size > MAX_BYTES:
                                return "not_image", f"more than the {MAX_BYTES >> 20} MB limit", b""
                            chunks.append(chunk)
                        return "ok", "", b"".join(chunks)
        except (TimeoutError, httpx.TimeoutException):
            status, why, retry = "failed", "timed out", True
        except httpx.TooManyRedirects:
            return "dead", "too many redirects", b""
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            return "no_url", _reason(e), b""
        except (httpx.ConnectError, httpx.ProxyError) as e:    # refused, DNS, unreachable
            status, why, retry = "dead", f"connection failed ({_reason(e)})", True
        except httpx.TransportError as e:                      # reset mid-transfer, truncated body
            status, why, retry = "failed", f"transfer broke off ({_reason(e)})", True
        if not retry or attempt == retries:
            break
        await asyncio.sleep(backoff * (2 ** attempt) * (0.5 + random.random()))
    return status, why, b""


async def _fetch_all(run: _Run, shards: list[Shard], pool: ThreadPoolExecutor, max_side: int, workers: int,
                     timeout: float, retries: int, backoff: float, client_factory) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=workers * 2)

    def finish(shard: Shard) -> None:
        if shard.queued_all and shard.pending == 0 and not shard.finished:
            shard.save(finished=True)

    async def produce() -> None:
        try:
            await queue_all()
        except asyncio.CancelledError:
            raise                                          # the workers are being cancelled too
        except Exception as e:
            run.fatal = run.fatal or e
            run.stopping = True
            raise
        for _ in range(workers):                           # stopped or done: let the workers go
            await queue.put(None)

    async def queue_all() -> None:
        for shard in shards:
            for n, i in enumerate(shard.rows):
                if run.stop_requested() or run.fatal:
                    return
                if n % 256 == 255:
                    await asyncio.sleep(0)             # a long run of files on disk: let the workers in
                image_id, url = run.ids[i], run.urls[i]
                if target(run.out, image_id).exists():
                    shard.record(image_id, "already")
                    run.add("already", now=False)
                    continue
                if not url.startswith(("http://", "https://")):
                    shard.record(image_id, "no_url", f"no usable URL ({url or 'empty'!s:.40})")
                    run.add("no_url")
                    continue
                shard.pending += 1
                await queue.put((shard, i))
            shard.queued_all = True
            finish(shard)

    async def work(client) -> None:
        try:
            await work_on(client)
        except Exception as e:                             # a bug: stop the others, report it
            run.fatal = run.fatal or e
            run.stopping = True
            raise

    async def work_on(client) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            shard, i = item
            if run.stopping or run.fatal:
                continue                                   # left for the next run
            image_id = run.ids[i]
            status, why, body = await fetch(client, run.urls[i], timeout, retries, backoff)
            if status == "ok":
                try:
                    status, why = await loop.run_in_executor(pool, save, body, target(run.out, image_id), max_side)
                except OSError as e:                       # disk full, unwritable: stop everything
                    run.fatal = run.fatal or e
                    run.stopping = True
                    shard.pending -= 1
                    continue
            shard.record(image_id, status, why)
            shard.pending -= 1
            run.add(status)
            finish(shard)
            run.report()

    async def monitor(tasks) -> None:
        while True:
            await asyncio.sleep(0.05)
            run.report()
            if run.stop_requested() or run.fatal:
                break
        await asyncio.sleep(STOP_GRACE_S)                  # let requests in flight land on disk
        for t in tasks:
            t.cancel()

    factory = client_factory or default_client
    n_clients = -(-workers // POOL_SPLIT)
    sizes = [len(range(j, workers, n_clients)) for j in range(n_clients)]   # worker w uses client w % n_clients
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(factory(size, timeout)) for size in sizes]
        tasks = [asyncio.create_task(work(clients[w % len(clients)])) for w in range(workers)]
        producer = asyncio.create_task(produce())
        watch = asyncio.create_task(monitor(tasks + [producer]))
        try:
            results = await asyncio.gather(producer, *tasks, return_exceptions=True)
        finally:
            watch.cancel()
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                raise r


# ------------------------------------------------------------------ tar shards

def _member_id(name: str) -> str | None:
    base = name.rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".jpg") else None


def _import_tars(run: _Run, files: list[Path], state: Path, pool: ThreadPoolExecutor, max_side: int,
                 threads: int) -> list[Shard]:
    """Stream each tar, decoding and writing only the chosen ids; returns the tars' shards."""
    want = {image_id: i for i, image_id in enumerate(run.ids)}
    resolved: set[str] = set()
    for i, image_id in enumerate(run.ids):
        if target(run.out, image_id).exists():
            resolved.add(image_id)
            run.add("already", now=False)
    shards = []
    for f in files:
        stem = re.sub(r"[^\w.-]", "_", f.name)
        shard = Shard(f"tar_{stem}", range(0), state)
        shards.append(shard)
        if shard.success.exists():
            shard.load()
            for image_id, status in shard.status.items():
                if image_id in want and image_id not in resolved and status in PERMANENT:
                    resolved.add(image_id)
                    run.add(status, now=False)
            continue
        if run.stop_requested():
            break
        inflight: list = []
        room = threading.Semaphore(threads * 2)           # bodies waiting for a decoder, at most
        try:
            with tarfile.open(f, mode="r|*") as tar:
                for m in tar:
                    if run.fatal or run.stop_requested():
                        break
                    image_id = _member_id(m.name)
                    if not m.isfile() or image_id not in want or image_id in resolved:
                        continue
                    resolved.add(image_id)
                    if m.size > MAX_TAR_MEMBER:
                        shard.record(image_id, "not_image", f"{m.size:,} bytes is over the limit")
                        run.add("not_image")
                        continue
                    body = tar.extractfile(m).read()
                    room.acquire()
                    fut = pool.submit(save, body, target(run.out, image_id), max_side)
                    fut.add_done_callback(lambda _f, room=room: room.release())
                    inflight.append((image_id, fut))
                    inflight = _collect(run, shard, inflight, block=False)
                    run.report()
        except (tarfile.TarError, EOFError, OSError) as e:
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                raise
            _collect(run, shard, inflight, block=True)
            shard.save(finished=False)
            raise UserError(f"{f} could not be read as a tar file ({_reason(e)}); re-download that file.") from None
        _collect(run, shard, inflight, block=True)
        if run.fatal:
            raise run.fatal
        shard.save(finished=not run.stopping)
    return shards


def _collect(run: _Run, shard: Shard, inflight: list, block: bool) -> list:
    left = []
    for image_id, fut in inflight:
        if block or fut.done():
            try:
                status, why = fut.result()
            except OSError as e:
                run.fatal = run.fatal or e
                run.stopping = True
                continue
            shard.record(image_id, status, why)
            run.add(status)
        else:
            left.append((image_id, fut))
    return left


# ------------------------------------------------------------------ the download

def _plan_key(work: pd.DataFrame, shard_size: int, source: str) -> str:
    h = hashlib.sha1(f"{source}|{shard_size}|".encode())
    h.update("\n".join(work["id"]).encode())
    h.update("\n".join(work["landmark_id"]).encode())
    return h.hexdigest()[:20]


def _state_dir(out: Path, key: str) -> Path:
    """OUT/.download for this plan; bookkeeping of another plan is cleared (images are kept)."""
    state = out / STATE
    state.mkdir(exist_ok=True)
    plan = state / "plan.json"
    try:
        old = json.loads(plan.read_text()).get("key")
    except (OSError, ValueError):
        old = None
    if old != key:
        for f in state.iterdir():
            if f.is_file() and (f.name.startswith(("shard_", "tar_"))):
                f.unlink(missing_ok=True)
        _write_json(plan, {"key": key, "time": time.time()})
    return state


def _write_index(out: Path, work: pd.DataFrame) -> pd.Series:
    """OUT/train.csv of the chosen images on disk (all shards: machines may share OUT). Returns the mask."""
    on_disk = pd.Series([target(out, i).exists() for i in work["id"]], index=work.index, dtype=bool)
    if on_disk.any():
        tmp = out / f".train.csv.{os.getpid()}.tmp"
        work.loc[on_disk, ["id", "url", "landmark_id"]].to_csv(tmp, index=False)
        os.replace(tmp, out / "train.csv")
    return on_disk


def _copy_names(csv: Path, out: Path, labels: set) -> bool:
    f = csv.parent / "train_label_to_category.csv"
    if not f.is_file() or f.resolve() == (out / f.name).resolve():
        return False
    try:
        df = pd.read_csv(f, dtype=str, keep_default_na=False, engine="pyarrow")
    except Exception:  # noqa: BLE001 - names are optional: a broken file costs only the readable names
        return False
    if "landmark_id" in df.columns:
        df = df[df["landmark_id"].isin(labels)]
    tmp = out / f".{f.name}.{os.getpid()}.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / f.name)
    return True


def _per_class(run: _Run, work: pd.DataFrame, rows: list[int] | None, shards: list[Shard], on_disk: pd.Series,
               classes: dict, default: str = "") -> list[dict]:
    """Per chosen class (of this machine's share): listed, on disk, and each reason for a shortfall."""
    status: dict[str, str] = {}
    for s in shards:
        status.update(s.status)
    mine = work.iloc[rows] if rows is not None else work
    df = pd.DataFrame({"label": mine["landmark_id"].to_numpy(), "on_disk": on_disk.loc[mine.index].to_numpy(),
                       "status": [status.get(i, default) for i in mine["id"]]})
    out = []
    for label, g in df.groupby("label", sort=False):
        row = {"landmark_id": str(label), "listed": int(len(g)), "on_disk": int(g["on_disk"].sum())}
        row["short"] = row["listed"] - row["on_disk"]
        lost = g.loc[~g["on_disk"], "status"].value_counts()
        row.update({k: int(lost.get(k, 0)) for k in SHORTFALL})
        row["not_tried"] = int(row["short"] - sum(row[k] for k in SHORTFALL))
        out.append(row)
    rank = {label: r for r, label in enumerate(classes)}
    out.sort(key=lambda r: rank.get(r["landmark_id"], len(rank)))
    return out


def download(csv, out, top: int, clean: bool = False, max_side: int = 512, workers: int = 32, shard=(1, 1),
             tars=None, progress: Callable | None = None, should_stop: Callable | None = None,
             client_factory: Callable | None = None, timeout: float = 20.0, retries: int = 2,
             backoff: float = 0.5, shard_size: int = SHARD_SIZE, threads: int | None = None) -> dict:
    """Download (or, with `tars`, extract) the images of the `top` most frequent classes into `out`.

    progress(done, total, counts): counts has one entry per STATUSES outcome plus "rate" (images
    per second decided in this run), "eta_s" and "seconds". should_stop(): checked between images;
    when it turns true the run stops within STOP_GRACE_S, writes its bookkeeping and train.csv and
    returns with "stopped": True. client_factory(connections, timeout) -> httpx.AsyncClient, called
    once per client (workers are spread over clients of at most POOL_SPLIT connections).
    Returns the report also written to OUT/download_report.json."""
    csv, out, files = check(csv, out, top, clean, max_side, workers, shard, tars)
    k, n = parse_shard(shard)
    ensure_dir(out, "download", "choose a folder you can write to")
    work = pick_top(csv, top, clean)
    classes = work.attrs["classes"]
    source = "tars" if files else "urls"
    threads = threads or min(8, max(2, os.cpu_count() or 2))
    run = _Run(work, out, progress, should_stop)
    shards: list[Shard] = []
    rows: list[int] | None = None
    try:
        state = _state_dir(out, _plan_key(work, shard_size, source))
        if files:
            files = [f for j, f in enumerate(files) if j % n == k - 1]
            run.total = len(work)
        else:
            count = -(-len(work) // shard_size)
            shards = [Shard(f"shard_{j:05d}", range(j * shard_size, min(len(work), (j + 1) * shard_size)), state)
                      for j in range(count) if j % n == k - 1]
            rows = [i for s in shards for i in s.rows]
            run.total = len(rows)
    except OSError as e:
        raise write_error(e, out, "download", any_error=True) from None
    run.report(force=True)
    stopped_by_signal = False
    with ThreadPoolExecutor(threads, thread_name_prefix="download") as pool:
        try:
            if files:
                shards = _import_tars(run, files, state, pool, max_side, threads)
            else:
                todo = []
                for s in shards:
                    if s.file.exists():
                        s.load()
                    if s.success.exists() and _still_there(run, s) and "failed" not in s.status.values():
                        for i in s.rows:               # finished earlier: nothing to fetch
                            st = s.status.get(run.ids[i], "already")
                            run.add("already" if st in OK else st, now=False)
                        s.finished = True
                        continue
                    s.success.unlink(missing_ok=True)
                    s.finished = False
                    _carry_over(s, run)               # permanent failures of a stopped run are kept
                    todo.append(s)
                if todo:
                    asyncio.run(_fetch_all(run, todo, pool, max_side, int(workers), float(timeout), int(retries),
                                           float(backoff), client_factory))
                if run.fatal:
                    raise run.fatal
        except KeyboardInterrupt:
            stopped_by_signal = True
            raise
        except OSError as e:
            err = write_error(e, out, "download")
            if err is None:
                raise
            raise err from None
        finally:
            try:
                for s in shards:
                    if not s.finished and (s.dirty or s.status):
                        s.save(finished=False)
                on_disk = _write_index(out, work)
                names = _copy_names(csv, out, set(classes))
            except OSError as e:
                if not stopped_by_signal:
                    raise write_error(e, out, "download", any_error=True) from None
                raise
    if files and not run.stopping:
        run.counts["missing"] = max(0, run.total - run.done)
        run.done = run.total
    run.report(force=True)
    seconds = time.monotonic() - run.t0
    report = {
        "out": str(out), "csv": str(csv), "source": source, "top": int(top), "clean": bool(clean),
        "max_side": int(max_side), "workers": int(workers), "shard": f"{k}/{n}",
        "classes": len(classes), "listed": int(len(work)), "total": run.total,
        **{s: run.counts[s] for s in STATUSES},
        "on_disk": int(on_disk.sum()), "stopped": bool(run.stopping), "seconds": round(seconds, 2),
        "images_per_s": round(run.resolved_now / seconds, 2) if seconds > 0 else None,
        "names": names, "tars": [str(f) for f in files] if files else None,
        "per_class": _per_class(run, work, rows, shards, on_disk, classes,
                                "missing" if files and not run.stopping else ""),
        "examples": _examples(run, shards),
    }
    report["short_classes"] = sum(1 for r in report["per_class"] if r["short"])
    try:
        _write_json(out / REPORT, report)
    except OSError as e:
        raise write_error(e, out, "download", any_error=True) from None
    return report


def _still_there(run: _Run, s: Shard) -> bool:
    return all(target(run.out, run.ids[i]).exists() for i in s.rows if s.status.get(run.ids[i]) in OK)


def _carry_over(s: Shard, run: _Run) -> None:
    """A shard to (re)visit: keep its permanent failures, forget the rest (timeouts and 5xx are
    tried again; what is on disk counts as already there)."""
    keep = {i: st for i, st in s.status.items() if st in PERMANENT}
    s.why = {i: w for i, w in s.why.items() if i in keep}
    s.status = keep
    if keep:
        todo = []
        for i in s.rows:
            st = keep.get(run.ids[i])
            if st is None:
                todo.append(i)
            else:
                run.add(st, now=False)
        s.rows = todo


def _examples(run: _Run, shards: list[Shard], per: int = 5) -> dict:
    """A few failures of each kind: {outcome: [{id, url, why}]}."""
    url = dict(zip(run.ids, run.urls))
    out: dict[str, list] = {}
    for s in shards:
        for image_id, st in s.status.items():
            if st in SHORTFALL and len(out.setdefault(st, [])) < per:
                out[st].append({"id": image_id, "url": url.get(image_id, ""), "why": s.why.get(image_id, "")})
    return out


def describe(counts: dict) -> str:
    """'12 fetched · 3 already there · 1 dead links' (only the non-zero outcomes)."""
    parts = [f"{int(counts.get(s) or 0):,} {LABELS[s]}" for s in STATUSES if counts.get(s)]
    return " · ".join(parts) or "nothing yet"


__all__ = ["pick_top", "download", "check", "parse_shard", "tar_files", "encode", "save", "fetch", "target",
           "describe", "default_client", "STATUSES", "LABELS", "SHARD_SIZE"]
