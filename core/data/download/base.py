"""What every part of the downloader shares: the defaults, the outcomes of one image and the
arguments' checks that need no file."""
from __future__ import annotations

import re
from types import MappingProxyType

from core.errors import UserError

# The one place the download's defaults are declared: the CLI, the job kind and the Dataset
# page's panel read them from here.
DEFAULTS = MappingProxyType({
    "max_side": 512,      # px, the longer side after the on-the-fly resize (0: keep the original size)
    "workers": 32,        # concurrent requests
    "shard": "1/1",       # K/N: this machine's share of the chosen images
})
SHARD_SIZE = 1000                 # images per shard (one bookkeeping file each)
MAX_BYTES = 20 * 2**20            # one image's body: past this the transfer is stopped ("not_image");
                                  # with 64 workers that bounds the bodies in memory to ~1.3 GB
MAX_TAR_MEMBER = 40 * 2**20
MAX_REDIRECTS = 5
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524}
STATUSES = ("fetched", "already", "dead", "not_image", "failed", "no_url", "missing")
SHORTFALL = ("dead", "not_image", "failed", "no_url", "missing")
PERMANENT = {"dead", "not_image", "no_url"}      # a rerun does not try these again (refusals excepted)
OK = {"fetched", "already"}
LABELS = {"fetched": "fetched", "already": "already there", "dead": "dead links", "not_image": "not images",
          "failed": "failed (timeouts, 5xx)", "no_url": "no URL", "missing": "not in the tars"}
REFUSED = "refused: "             # the start of the reason of a URL the address policy refused
STATE = ".download"
REPORT = "download_report.json"
POOL_SPLIT = 8                    # connections per AsyncClient: httpcore's pool does O(connections)
                                  # work per request, so 32 workers share 4 clients of 8 (2x the images/s)
STOP_GRACE_S = 2.0                # in-flight requests may finish this long after a stop
USER_AGENT = "landmarks-workbench/1.0 (+https://github.com; research data set download; httpx)"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


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


def whole(v, name: str) -> int:
    try:
        if isinstance(v, float) and not v.is_integer():
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a whole number; got {v!r}.") from None


def reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:160]


def permanent(status: str, why: str = "") -> bool:
    """A rerun does not try it again: a dead link or a non-image, but not a URL the address policy
    refused (a rerun that allows private addresses should fetch it)."""
    return status in PERMANENT and not why.startswith(REFUSED)

