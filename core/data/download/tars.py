"""GLDv2's tar shards (`images_000.tar` ...): streamed (`tarfile` mode "r|*", members
`a/b/c/<id>.jpg`), only the chosen ids decoded and written as fetched images are. A finished tar
has its own success file; `shard=(K, N)` splits the tar files between machines."""
from __future__ import annotations

import os
import re
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.data.download.base import MAX_TAR_MEMBER, permanent, reason
from core.data.download.images import save, target
from core.data.download.shards import Run, Shard
from core.errors import DISK_FULL, UserError


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


def _member_id(name: str) -> str | None:
    base = name.rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".jpg") else None


def import_tars(run: Run, files: list[Path], state: Path, pool: ThreadPoolExecutor, max_side: int,
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
                if image_id in want and image_id not in resolved and permanent(status):
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
                    fut = pool.submit(save, body, target(run.out, image_id), max_side, run.tmp)
                    fut.add_done_callback(lambda _f, room=room: room.release())
                    inflight.append((image_id, fut))
                    inflight = _collect(run, shard, inflight, block=False)
                    run.report()
        except (tarfile.TarError, EOFError, OSError) as e:
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                raise
            _collect(run, shard, inflight, block=True)
            shard.save(finished=False)
            raise UserError(f"{f} could not be read as a tar file ({reason(e)}); re-download that file.") from None
        _collect(run, shard, inflight, block=True)
        if run.fatal:
            raise run.fatal
        shard.save(finished=not run.stopping)
    return shards


def _collect(run: Run, shard: Shard, inflight: list, block: bool) -> list:
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
