"""Get the images of the top-N Google Landmarks classes: from their URLs, or from GLDv2's tar shards.

    python -m core download --csv train.csv --top 100 --out DIR [--clean] [--max-side 512]
                            [--workers 32] [--shard K/N] [--tars DIR_OR_FILES...] [--allow-private] [--json]

One module per concern: `select` (the top-N choice from the CSV), `client` (httpx) and `guard`
(which addresses it may reach), `tars`, `images` (decode, resize, atomic write, leftovers),
`shards` (bookkeeping), `report`, and `run` (download() itself). Import from here.

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
  for its transient failures (timeouts, 5xx, broken transfers) and refused URLs. `OUT/.download/plan.json` holds a
  hash of the chosen ids: a different --top/--clean/CSV starts the bookkeeping afresh (the
  images on disk are kept and still count).
* **Resumable.** An image whose file exists is never fetched again ("already there"); a file
  only exists once complete (written to OUT/.download/tmp, then `os.replace`; what a killed run
  left there is removed at the next start). A stopped or
  interrupted run writes its unfinished shards' outcomes too (without the success file), so a
  rerun fetches only the transient failures (timeouts, 5xx) and what was never tried.
* **Parallel fetches** on `httpx.AsyncClient`s holding `workers` connections in all (split into
  clients of at most POOL_SPLIT connections: httpcore scans its whole pool on every request) and
  `workers` worker coroutines pulling from a bounded queue (memory stays flat at any N);
  timeouts (connect/read, plus a total per attempt), retries with exponential backoff and jitter
  on timeouts, 408/425/429/5xx and connection errors, never on 404/410 or other 4xx. A body
  larger than MAX_BYTES (20 MB) is abandoned while it streams.
* **Only public addresses** (`guard`): every URL and every redirect hop (followed here, at most
  MAX_REDIRECTS) is resolved and each address checked before anything connects; loopback and
  private addresses need `allow_private` (`--allow-private`, LANDMARKS_ALLOW_PRIVATE=1), cloud
  metadata and link-local addresses are never fetched. A refused URL counts as a dead link whose
  reason starts with "refused:"; a rerun tries it again.
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
  dead       404/410/other 4xx, connection failures after the retries, or a refused address
  not_image  the body does not decode as an image (HTML, truncated, too large)
  failed     timeouts, 5xx or broken transfers after the retries (worth another run)
  no_url     the CSV has no usable http(s) URL ("None" in the 2018 Kaggle CSV)
  missing    (tars) not found in the tar files given
"""
from core.data.download.base import (DEFAULTS, LABELS, MAX_BYTES, OK, PERMANENT, REFUSED, SHARD_SIZE, SHORTFALL,
                                     STATUSES, parse_shard)
import importlib

_LAZY = {  # the parts that import httpx, pyarrow or Pillow load when first used (`--help` stays light)
    "default_client": "client", "fetch": "client", "ALLOW_ENV": "guard", "Policy": "guard", "Refused": "guard",
    "refusal": "guard", "clean_leftovers": "images", "encode": "images", "save": "images", "target": "images",
    "describe": "report", "check": "run", "download": "run", "pick_top": "select", "tar_files": "tars"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"core.data.download.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'core.data.download' has no attribute {name!r}")


__all__ = ["pick_top", "download", "check", "parse_shard", "tar_files", "encode", "save", "fetch", "target",
           "describe", "default_client", "clean_leftovers", "Policy", "Refused", "refusal", "ALLOW_ENV",
           "DEFAULTS", "STATUSES", "LABELS", "SHORTFALL", "PERMANENT", "OK", "REFUSED", "SHARD_SIZE", "MAX_BYTES"]
