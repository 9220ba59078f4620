"""Benchmark: the Google Landmarks downloader (core.data.download) against the plain recipe.

    python bench/download.py                 # fetch: downloader vs a sequential httpx.get loop
    python bench/download.py --pick          # + top-N picking from a 4.1 M-row GLDv2-like train.csv
    python bench/download.py --pick --only-pick
    python bench/download.py --json out.json

Fetch: a local server (its own process, 127.0.0.1) adds 50 ms of latency to every request and
serves JPEG photos of 640x480, 1024x768 and 1600x1200 px in turn. Both sides do the same work per image: GET, decode in full,
shrink to 512 px, write the file. The plain side is `httpx.get` one URL after the other; the
downloader is `download(..., workers=32)`. Both run in this same process, one after the other,
and the ratio of images/s is the result (goal >= 10x).

Pick: a GLDv2-sized train.csv (4.1 M rows: 16-hex-digit ids, ~90-character URLs, ~200 k landmark
ids with a long-tailed distribution) is generated in a temp dir; `pick_top(csv, N)` runs in a
fresh subprocess that reports its time and peak resident memory (ru_maxrss, which includes the
interpreter, pandas and pyarrow themselves; the figure before the call is printed too).
Goals: <= 5 s and <= 1 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LATENCY_S = 0.05


# ------------------------------------------------------------------ the server (own process)

SIZES = ((640, 480), (1024, 768), (1600, 1200))     # web, Flickr "large", camera-ish


def _photos(n: int = 18) -> list[bytes]:
    import io

    import numpy as np
    from PIL import Image

    from core.data.demo import KINDS, draw_landmark
    out = []
    kinds = list(KINDS)
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        im = draw_landmark(kinds[i % len(kinds)], 0, i, 480).resize((w, h), Image.BICUBIC)
        grain = rng.normal(0, 6, (h, w, 1)).astype(np.float32)          # photo-like texture and file size
        im = Image.fromarray(np.clip(np.asarray(im, np.float32) + grain, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def serve(port_file: str, latency: float) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    photos = _photos()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"              # keep-alive, as real image hosts

        def log_message(self, *a):
            pass

        def do_GET(self):
            time.sleep(latency)
            i = int(self.path.rsplit("/", 1)[-1].split(".")[0]) % len(photos)
            body = photos[i]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer.request_queue_size = 256
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    Path(port_file).write_text(str(httpd.server_address[1]))
    httpd.serve_forever()


def start_server(tmp: Path, latency: float) -> tuple[subprocess.Popen, int]:
    port_file = tmp / "port"
    p = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file), "--latency", str(latency)])
    t0 = time.time()
    while not port_file.exists() or not port_file.read_text():
        if time.time() - t0 > 60 or p.poll() is not None:
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.05)
    return p, int(port_file.read_text())


# ------------------------------------------------------------------ 1. fetching

def bench_fetch(n_plain: int, n_fast: int, workers: int, max_side: int) -> dict:
    import httpx
    import pandas as pd

    from core.data.download import download, save, target
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server, port = start_server(tmp, LATENCY_S)
        try:
            base = f"http://127.0.0.1:{port}/img"
            # the plain recipe: one httpx.get after the other, same decode/resize/write per image
            out = tmp / "plain"
            t0 = time.perf_counter()
            ok = 0
            for i in range(n_plain):
                r = httpx.get(f"{base}/{i}.jpg", timeout=20)
                r.raise_for_status()
                ok += save(r.content, target(out, f"{i:016x}"), max_side)[0] == "fetched"
            plain_s = time.perf_counter() - t0
            assert ok == n_plain
            # a stricter plain loop: one httpx.Client reused (no new connection per image)
            t0 = time.perf_counter()
            with httpx.Client(timeout=20) as c:
                for i in range(n_plain):
                    r = c.get(f"{base}/{n_plain + i}.jpg")
                    save(r.content, target(tmp / "plain2", f"{i:016x}"), max_side)
            client_s = time.perf_counter() - t0
            # the downloader
            rows = [(f"{i:016x}", f"{base}/{i}.jpg", str(i % 50)) for i in range(n_fast)]
            csv = tmp / "train.csv"
            pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(csv, index=False)
            t0, cpu0, srv0 = time.perf_counter(), time.process_time(), _cpu_s(server.pid)
            r = download(csv, tmp / "fast", 50, max_side=max_side, workers=workers, allow_private=True)   # 127.0.0.1
            fast_s = time.perf_counter() - t0
            cpu_ms = (time.process_time() - cpu0) / n_fast * 1000
            srv_ms = (_cpu_s(server.pid) - srv0) / n_fast * 1000
            assert r["fetched"] == n_fast, r
        finally:
            server.terminate()
            server.wait()
    plain, fast = n_plain / plain_s, n_fast / fast_s
    return {"latency_ms": LATENCY_S * 1000, "max_side": max_side, "workers": workers,
            "photo_kb": round(sum(map(len, _photos())) / len(_photos()) / 1024),
            "plain_client_images_per_s": round(n_plain / client_s, 1),
            "plain_images": n_plain, "plain_s": round(plain_s, 2), "plain_images_per_s": round(plain, 1),
            "downloader_images": n_fast, "downloader_s": round(fast_s, 2), "downloader_images_per_s": round(fast, 1),
            "downloader_inner_images_per_s": r["images_per_s"], "ratio": round(fast / plain, 1),
            "ratio_vs_client": round(fast / (n_plain / client_s), 1),
            "downloader_cpu_ms_per_image": round(cpu_ms, 2), "server_cpu_ms_per_image": round(srv_ms, 2),
            "cpu_bound_ceiling_images_per_s": round((os.cpu_count() or 1) * 1000 / (cpu_ms + srv_ms), 1),
            "load_after": round(os.getloadavg()[0], 1)}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc (0 where there is none)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# ------------------------------------------------------------------ 2. picking the top-N classes

def make_gldv2_csv(path: Path, rows: int = 4_100_000, classes: int = 200_000, seed: int = 0) -> dict:
    """A GLDv2-like train.csv: random 16-hex ids, ~90-char URLs, long-tailed landmark ids."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    rng = np.random.default_rng(seed)
    rank = np.arange(classes)
    p = 1.0 / (rank + 30.0) ** 0.75
    p /= p.sum()
    by_rank = rng.choice(classes, size=rows, p=p)
    landmark_of_rank = rng.permutation(203_094)[:classes]           # GLDv2 ids run to ~203 k
    labels = landmark_of_rank[by_rank]
    hexed = rng.integers(0, 2**63, size=rows, dtype=np.int64).view(np.uint64)
    ids = pa.array(_hex16(hexed)).cast(pa.string())
    a = pc.utf8_slice_codeunits(ids, 0, 1)
    ab = pc.utf8_slice_codeunits(ids, 0, 2)
    url = pc.binary_join_element_wise("https://upload.wikimedia.org/wikipedia/commons/", a, "/", ab, "/",
                                      ids, "_landmark_photo.jpg", "")
    table = pa.table({"id": ids, "url": url, "landmark_id": pa.array(labels.astype(np.int64))})
    pacsv.write_csv(table, path)
    counts = np.bincount(by_rank, minlength=classes)
    return {"rows": rows, "classes": int((counts > 0).sum()), "largest": int(counts.max()),
            "url_chars": round(float(pc.mean(pc.utf8_length(url)).as_py()), 1),
            "mb": round(path.stat().st_size / 2**20, 1)}


def _hex16(v) -> "np.ndarray":
    """uint64 -> 16 lowercase hex digits (bytes), vectorised."""
    import numpy as np
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nib = ((v[:, None] >> shifts[None, :]) & np.uint64(15)).astype(np.uint8)
    return digits[nib].view("S16").ravel()


PICK_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from core.data.download import pick_top

def peak_mb():  # VmHWM: this process's own peak (ru_maxrss can carry a parent's across fork+exec)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

before = peak_mb()
t0 = time.perf_counter()
df = pick_top({csv!r}, {top})
s = time.perf_counter() - t0
print(json.dumps({{"top": {top}, "seconds": round(s, 2), "rows": len(df), "classes": len(df.attrs["classes"]),
                  "rss_before_mb": round(before), "peak_rss_mb": round(peak_mb())}}))
"""


def bench_pick(tops=(100, 1000), keep: str | None = None) -> dict:
    d = Path(keep) if keep else Path(tempfile.mkdtemp())
    d.mkdir(parents=True, exist_ok=True)
    csv = d / "train.csv"
    try:
        t0 = time.perf_counter()
        if csv.exists():
            info = {"rows": None, "mb": round(csv.stat().st_size / 2**20, 1), "reused": True}
        else:                                   # in a child: this process stays small for the next ones
            p = subprocess.run([sys.executable, __file__, "--make-csv", str(csv)], capture_output=True, text=True,
                               check=True)
            info = json.loads(p.stdout.strip().splitlines()[-1])
        info["generate_s"] = round(time.perf_counter() - t0, 1)
        runs = []
        for top in tops:
            code = PICK_CHILD.format(root=str(ROOT), csv=str(csv), top=top)
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
        return {"csv": info, "pick": runs}
    finally:
        if not keep:
            csv.unlink(missing_ok=True)
            d.rmdir()


# ------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pick", action="store_true", help="also time pick_top on a 4.1 M-row train.csv")
    ap.add_argument("--only-pick", action="store_true")
    ap.add_argument("--plain", type=int, default=100, help="images fetched by the sequential loop")
    ap.add_argument("--images", type=int, default=1500, help="images fetched by the downloader")
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--keep-csv", default=None, help="folder to keep (and reuse) the generated train.csv in")
    ap.add_argument("--json", default=None)
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--make-csv", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--latency", type=float, default=LATENCY_S, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve(a.serve, a.latency)
    if a.make_csv:
        return print(json.dumps(make_gldv2_csv(Path(a.make_csv))))
    out = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                       "load_before": [round(x, 1) for x in os.getloadavg()]}}
    print(f"{os.cpu_count()} CPUs, load average {out['machine']['load_before'][0]} before the benchmark")
    if not a.only_pick:
        f = out["fetch"] = bench_fetch(a.plain, a.images, a.workers, a.max_side)
        print(f"fetch ({f['latency_ms']:.0f} ms latency per request, {f['max_side']} px): sequential httpx.get "
              f"{f['plain_images_per_s']} img/s; downloader ({f['workers']} workers) {f['downloader_images_per_s']} "
              f"img/s -> {f['ratio']}x (goal >= 10x); a sequential loop on one reused httpx.Client: "
              f"{f['plain_client_images_per_s']} img/s ({f['ratio_vs_client']}x)")
        print(f"  downloader CPU {f['downloader_cpu_ms_per_image']} ms/image (+ server {f['server_cpu_ms_per_image']} ms): "
              f"on {os.cpu_count()} idle cores at most ~{f['cpu_bound_ceiling_images_per_s']} img/s; "
              f"load average after {f['load_after']}")
    if a.pick or a.only_pick:
        p = out["pick"] = bench_pick(keep=a.keep_csv)
        c = p["csv"]
        print(f"train.csv: {c.get('rows') or '?'} rows, {c.get('classes', '?')} classes, largest {c.get('largest', '?')}, "
              f"URLs ~{c.get('url_chars', '?')} chars, {c['mb']} MB (generated in {c['generate_s']} s)")
        for r in p["pick"]:
            print(f"pick_top(csv, {r['top']}): {r['seconds']} s, {r['rows']:,} rows kept, peak RSS {r['peak_rss_mb']} MB "
                  f"({r['rss_before_mb']} MB before the call) (goals <= 5 s, <= 1024 MB)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
