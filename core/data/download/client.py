"""Fetching the chosen images' URLs on httpx.

Parallel fetches on `httpx.AsyncClient`s holding `workers` connections in all (split into clients
of at most POOL_SPLIT connections: httpcore scans its whole pool on every request) and `workers`
worker coroutines pulling from a bounded queue (memory stays flat at any N); timeouts
(connect/read, plus a total per attempt), retries with exponential backoff and jitter on timeouts,
408/425/429/5xx and connection errors, never on 404/410 or other 4xx.

Every request goes through the address policy (core.data.download.guard): redirects are followed
here, hop by hop, each hop's host resolved and checked before anything connects to it, at most
MAX_REDIRECTS. A body is streamed and abandoned past `max_bytes` (MAX_BYTES by default), which
also bounds the memory of many workers on endless responses."""
from __future__ import annotations

import asyncio
import contextlib
import random
from concurrent.futures import ThreadPoolExecutor

from core.data.download.base import MAX_BYTES, MAX_REDIRECTS, POOL_SPLIT, RETRY_STATUS, STOP_GRACE_S, USER_AGENT, \
    reason
from core.data.download.guard import Policy, Refused
from core.data.download.images import save, target
from core.data.download.shards import Run, Shard

REDIRECT_STATUS = {301, 302, 303, 307, 308}


def default_client(workers: int, timeout: float):
    """The AsyncClient the downloader uses: one pool of `workers` connections, no cookies.
    Redirects are followed by `fetch`, one checked hop at a time, never by the client."""
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    import httpx
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=workers, max_keepalive_connections=min(workers, 64)),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        # requests go to checked addresses, not names: no cookie is kept (none is needed for an image)
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])))


def _limit(max_bytes: int) -> str:
    return f"{max_bytes >> 20} MB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"


async def _attempt(client, url: str, policy: Policy, max_bytes: int) -> tuple[str, str, bytes, bool]:
    """One attempt at `url`, redirects included: (status, why, body, worth a retry)."""
    import httpx
    current = httpx.URL(url)
    for _hop in range(MAX_REDIRECTS + 1):
        if current.scheme not in ("http", "https") or not current.host:
            return "no_url", f"not an http(s) URL ({str(current):.60})", b"", False
        try:
            pinned, headers, extensions = await policy.pin(current)
        except Refused as e:
            return "dead", str(e), b"", False
        except OSError as e:                                   # the name does not resolve
            return "dead", f"connection failed ({e.strerror or reason(e)})", b"", True
        async with client.stream("GET", pinned, headers=headers, extensions=extensions,
                                 follow_redirects=False) as r:
            code = r.status_code
            if code in REDIRECT_STATUS and r.headers.get("location"):
                current = current.join(r.headers["location"])
                continue
            if code in RETRY_STATUS:
                return "failed", f"HTTP {code}", b"", True
            if code >= 300:
                return "dead", f"HTTP {code}", b"", False
            size = int(r.headers.get("content-length") or 0)
            if size > max_bytes:
                return "not_image", f"{size:,} bytes is over the {_limit(max_bytes)} limit", b"", False
            chunks, size = [], 0
            async for chunk in r.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    return "not_image", f"more than the {_limit(max_bytes)} limit", b"", False
                chunks.append(chunk)
            return "ok", "", b"".join(chunks), False
    return "dead", "too many redirects", b"", False


async def fetch(client, url: str, timeout: float, retries: int, backoff: float, policy: Policy | None = None,
                max_bytes: int = MAX_BYTES) -> tuple[str, str, bytes]:
    """("ok", "", body) or (outcome, why, b"") for one URL, with retries and backoff. `policy`
    (default: private addresses refused) is asked before every hop connects."""
    import httpx
    policy = policy or Policy()
    status, why = "failed", ""
    for attempt in range(retries + 1):
        retry = False
        try:
            async with asyncio.timeout(timeout * 3):          # a whole attempt, not just one read
                status, why, body, retry = await _attempt(client, url, policy, max_bytes)
                if status == "ok":
                    return status, why, body
        except (TimeoutError, httpx.TimeoutException):
            status, why, retry = "failed", "timed out", True
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            return "no_url", reason(e), b""
        except (httpx.ConnectError, httpx.ProxyError) as e:    # refused, unreachable
            status, why, retry = "dead", f"connection failed ({reason(e)})", True
        except httpx.TransportError as e:                      # reset mid-transfer, truncated body
            status, why, retry = "failed", f"transfer broke off ({reason(e)})", True
        if not retry or attempt == retries:
            break
        await asyncio.sleep(backoff * (2 ** attempt) * (0.5 + random.random()))
    return status, why, b""


async def fetch_all(run: Run, shards: list[Shard], pool: ThreadPoolExecutor, max_side: int, workers: int,
                    timeout: float, retries: int, backoff: float, client_factory, policy: Policy,
                    max_bytes: int = MAX_BYTES) -> None:
    """Fetch, decode and write every row of `shards`; outcomes go to the shards and `run`."""
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
            status, why, body = await fetch(client, run.urls[i], timeout, retries, backoff, policy, max_bytes)
            if status == "ok":
                try:
                    status, why = await loop.run_in_executor(pool, save, body, target(run.out, image_id), max_side,
                                                             run.tmp)
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
