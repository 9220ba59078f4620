"""The Google Landmarks downloader (core.data.download) against a local HTTP server on 127.0.0.1
that serves generated images, slow responses, 5xx, 404/410, truncated bodies, redirects and HTML
saved as .jpg, counting every hit per path; plus tar import, the CLI and the job kind."""
from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest
from PIL import Image

from core.data import download as dl
from core.data.readers import load_index
from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
NET = dict(timeout=0.5, retries=2, backoff=0.01, workers=8)
FAST = {**NET, "allow_private": True}              # the test server is on loopback


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every connection and name lookup made in these tests stays on this machine: a connection to
    any other address, or a lookup of a name (which would ask a DNS server), fails the test and
    sends nothing. Returns the list of what was attempted."""
    tried: list = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def local(address) -> bool:
        if not isinstance(address, tuple):
            return True                                    # a unix socket
        return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback

    def guarded(real):
        def call(self, address):
            if not local(address):
                tried.append(address)
                raise AssertionError(f"a test tried to connect to {address}")
            return real(self, address)
        return call

    def lookup(host, port=None, *args, **kwargs):
        if host not in (None, "localhost"):
            try:
                getaddrinfo(host, port, flags=socket.AI_NUMERICHOST)
            except socket.gaierror:
                tried.append(host)
                raise AssertionError(f"a test tried to look up the name {host}") from None
        return getaddrinfo(host, port, *args, **kwargs)
    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    yield tried
    assert tried == [], f"connections outside this machine were attempted: {tried}"


# ------------------------------------------------------------------ the server

def jpeg(w: int = 40, h: int = 30, seed: int = 0) -> bytes:
    im = Image.new("RGB", (w, h), ((seed * 37) % 256, (seed * 91) % 256, 120))
    im.paste((255, 255, 255), (0, 0, w // 2, h // 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(w: int = 30, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (w, h), (10, 200, 30, 128)).save(buf, "PNG")
    return buf.getvalue()


class Server:
    """Routes by the first path segment; every request is counted in `hits` (path -> n)."""

    def __init__(self, delay: float = 0.0):
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        self.delay = delay
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def send(self, code: int, body: bytes = b"", ctype: str = "image/jpeg", length: int | None = None,
                     headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def do_GET(self):
                path = self.path.split("?")[0]
                with server.lock:
                    server.hits[path] += 1
                    n = server.hits[path]
                if server.delay:
                    time.sleep(server.delay)
                kind, name = (path.strip("/").split("/", 1) + [""])[:2]
                seed = int(hashlib.md5(name.encode()).hexdigest()[:4], 16)
                if kind == "img":
                    self.send(200, jpeg(seed=seed))
                elif kind == "big":
                    self.send(200, jpeg(200, 150, seed))
                elif kind == "png":
                    self.send(200, png(), "image/png")
                elif kind == "slow":                       # first hit: slower than the client's timeout
                    if n == 1:
                        time.sleep(1.2)
                    self.send(200, jpeg(seed=seed))
                elif kind == "flaky":                      # 503 once, then fine
                    self.send(503, b"busy", "text/plain") if n == 1 else self.send(200, jpeg(seed=seed))
                elif kind == "e500":
                    self.send(500, b"oops", "text/plain")
                elif kind in ("404", "410", "403"):
                    self.send(int(kind), b"no", "text/html")
                elif kind == "trunc":                      # a complete response holding half a JPEG
                    self.send(200, jpeg(200, 150, seed)[:600])
                elif kind == "cut":                        # promises more bytes than it sends, then hangs up
                    self.send(200, jpeg(seed=seed)[:300], length=5000)
                    self.close_connection = True
                elif kind == "redir":
                    self.send(302, b"", "text/plain", headers={"Location": f"/img/{name}"})
                elif kind == "to":                         # a redirect to the URL after /to/
                    self.send(302, b"", "text/plain", headers={"Location": self.path.split("/to/", 1)[1]})
                elif kind == "loop":
                    self.send(302, b"", "text/plain", headers={"Location": "/loop/again"})
                elif kind == "endless":                    # no length, never ends
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()
                    self.close_connection = True
                    try:
                        while True:
                            self.wfile.write(b"\xff" * 65536)
                    except OSError:
                        pass
                elif kind == "huge":                       # announces a gigabyte
                    self.send(200, jpeg(seed=seed), length=2**30)
                    self.close_connection = True
                elif kind == "html":
                    self.send(200, b"<!doctype html><html><body>Photo not found</body></html>", "text/html")
                else:
                    self.send(404, b"", "text/plain")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def iid(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()[:16]


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(path, index=False)
    return path


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mixed_rows(server: Server) -> list[tuple[str, str, str]]:
    """Class 100 (6, all fine), 200 (6: 2 fine, 404, 410, HTML, truncated JPEG), 300 (5: slow then
    fine, 503 then fine, always 500, cut-off body, "None"), 400 (5: 4 fine, connection refused),
    50 (5, a tie that loses to 300 and 400 on the label), 7 (2)."""
    refused = f"http://127.0.0.1:{closed_port()}/img/x.jpg"
    spec = {"100": ["img/a1", "img/a2", "img/a3", "big/a4", "redir/a5", "png/a6"],
            "200": ["img/b1", "img/b2", "404/b3", "410/b4", "html/b5.jpg", "trunc/b6"],
            "300": ["slow/c1", "flaky/c2", "e500/c3", "cut/c4", None],
            "400": ["img/d1", "img/d2", "img/d3", "img/d4", refused],
            "50": [f"img/e{i}" for i in range(5)],
            "7": ["img/f1", "img/f2"]}
    rows = []
    for label, paths in spec.items():
        for j, p in enumerate(paths):
            url = "None" if p is None else p if p.startswith("http") else server.url("/" + p)
            rows.append((iid(f"{label}-{j}"), url, label))
    # interleave the classes as a real CSV does
    return sorted(rows, key=lambda r: r[0])


# ------------------------------------------------------------------ picking

def test_pick_top_counts_first_breaks_ties_by_label_and_keeps_csv_order(tmp_path, server):
    rows = mixed_rows(server)
    f = write_csv(tmp_path / "gld" / "train.csv", rows)
    df = dl.pick_top(f, 4)
    assert list(df.attrs["classes"]) == ["100", "200", "300", "400"]      # 6, 6, 5, 5: "50" loses the tie
    assert set(df["landmark_id"]) == {"100", "200", "300", "400"} and len(df) == 22
    assert df["id"].tolist() == [r[0] for r in rows if r[2] in {"100", "200", "300", "400"}]
    assert list(dl.pick_top(f, 100).attrs["classes"]) == ["100", "200", "300", "400", "50", "7"]

    # the 2018 Kaggle file: quoted fields, "None" URLs, other columns order
    k = tmp_path / "k2018.csv"
    k.write_text('"id","landmark_id","url"\n"aaaa1111bbbb2222","9","None"\n"aaaa1111bbbb3333","9","http://x/y.jpg"\n'
                 '"aaaa1111bbbb4444","8","http://x/z.jpg"\n')
    df = dl.pick_top(k, 1)
    assert df.to_dict("list") == {"id": ["aaaa1111bbbb2222", "aaaa1111bbbb3333"],
                                  "url": ["None", "http://x/y.jpg"], "landmark_id": ["9", "9"]}

    bad = tmp_path / "bad.csv"
    bad.write_text("id,url,landmark_id\n../../etc/passwd,http://x,1\n")
    with pytest.raises(UserError, match="unsafe image id"):
        dl.pick_top(bad, 1)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("id,landmark_id\nabc,1\n")
    with pytest.raises(UserError, match="has no url column .*--tars"):   # issue 20: the Kaggle 2019-2021 CSV
        dl.pick_top(nocol, 1)


def test_pick_top_reads_only_what_it_needs_on_a_larger_csv(tmp_path):
    """200 k rows, 5 k classes in a long tail: top 10 by count, ties by label; well under a second."""
    import numpy as np
    rng = np.random.default_rng(0)
    labels = (rng.zipf(1.3, 200_000) % 5000).astype(str)
    ids = [f"{i:016x}" for i in range(200_000)]
    f = tmp_path / "train.csv"
    pd.DataFrame({"id": ids, "url": "http://example.org/" + pd.Series(ids), "landmark_id": labels}).to_csv(f, index=False)
    t0 = time.perf_counter()
    df = dl.pick_top(f, 10, block_size=1 << 20)          # small blocks: many batches streamed
    took = time.perf_counter() - t0
    counts = pd.Series(labels).value_counts()
    expect = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert list(df.attrs["classes"].items()) == [(k, int(v)) for k, v in expect]
    assert len(df) == sum(v for _, v in expect)
    assert took < 5, took


# ------------------------------------------------------------------ downloading

def test_download_counts_files_layout_and_report(tmp_path, server):
    gld = tmp_path / "gld"
    f = write_csv(gld / "train.csv", mixed_rows(server))
    (gld / "train_label_to_category.csv").write_text(
        "landmark_id,category\n100,http://commons.wikimedia.org/wiki/Category:Eiffel_Tower\n200,Category:Big_Ben\n"
        "999,Category:Elsewhere\n")
    out = tmp_path / "out"
    seen = []
    r = dl.download(f, out, 4, max_side=64, progress=lambda d, t, c: seen.append((d, t, dict(c))), **FAST)
    assert {k: r[k] for k in dl.STATUSES} == {"fetched": 14, "already": 0, "dead": 3, "not_image": 2,
                                               "failed": 2, "no_url": 1, "missing": 0}
    assert r["on_disk"] == 14 and r["total"] == 22 and r["classes"] == 4 and not r["stopped"]
    assert seen[-1][0] == seen[-1][1] == 22 and seen[-1][2]["fetched"] == 14
    # retries: the slow one timed out once, 503 once, 500 every time, 404 and HTML never retried
    h = server.hits
    assert h["/slow/c1"] == 2 and h["/flaky/c2"] == 2 and h["/e500/c3"] == 3 and h["/cut/c4"] == 3
    assert h["/404/b3"] == h["/410/b4"] == h["/html/b5.jpg"] == h["/trunc/b6"] == 1
    assert h["/redir/a5"] == 1 and h["/img/a5"] == 1
    assert not any(p.startswith("/img/e") or p.startswith("/img/f") for p in h), "only the top classes are fetched"

    # files: nested GLDv2 layout, resized on the fly, PNG stored as JPEG, small JPEG byte-identical
    big = out / "train" / iid("100-3")[0] / iid("100-3")[1] / iid("100-3")[2] / f"{iid('100-3')}.jpg"
    with Image.open(big) as im:
        assert im.format == "JPEG" and im.size == (64, 48)
    with Image.open(dl.target(out, iid("100-5"))) as im:
        assert im.format == "JPEG" and im.size == (30, 30)
    assert dl.target(out, iid("100-0")).read_bytes() == jpeg(seed=int(hashlib.md5(b"a1").hexdigest()[:4], 16))
    assert not dl.target(out, iid("200-4")).exists() and not dl.target(out, iid("200-5")).exists()
    assert not list(out.rglob("*.tmp"))

    index = load_index(out)
    assert index.layout == "gldv2" and len(index.samples) == 14
    assert index.counts().to_dict() == {"100": 6, "400": 4, "200": 2, "300": 2}
    assert index.name("100") == "Eiffel Tower"
    assert set(pd.read_csv(out / "train_label_to_category.csv", dtype=str)["landmark_id"]) == {"100", "200"}

    rep = json.loads((out / "download_report.json").read_text())
    per = {c["landmark_id"]: c for c in rep["per_class"]}
    assert (per["200"]["short"], per["200"]["dead"], per["200"]["not_image"]) == (4, 2, 2)
    assert (per["300"]["failed"], per["300"]["no_url"], per["400"]["dead"], per["100"]["short"]) == (2, 1, 1, 0)
    assert rep["short_classes"] == 3 and rep["examples"]["dead"][0]["why"].startswith(("HTTP", "connection"))

    # a rerun fetches nothing on disk and never a dead link or a non-image again: only the two
    # transient failures (always 500, cut-off body) are tried again
    before = Counter(server.hits)
    r2 = dl.download(f, out, 4, max_side=64, **FAST)
    assert server.hits - before == Counter({"/e500/c3": 3, "/cut/c4": 3})
    assert (r2["already"], r2["fetched"], r2["dead"], r2["not_image"], r2["failed"], r2["on_disk"]) == (14, 0, 3, 2, 2, 14)


def test_stopped_download_reruns_without_fetching_anything_twice(tmp_path):
    server = Server(delay=0.02)
    try:
        rows = [(iid(f"s{i}"), server.url(f"/img/s{i}" if i % 9 else f"/404/s{i}"), str(i % 3)) for i in range(60)]
        f = write_csv(tmp_path / "train.csv", rows)
        out = tmp_path / "out"
        stop_at = 15
        r1 = dl.download(f, out, 3, shard_size=16, should_stop=lambda: sum(server.hits.values()) >= stop_at, **FAST)
        assert r1["stopped"] and 0 < r1["on_disk"] < 60
        assert len(pd.read_csv(out / "train.csv")) == r1["on_disk"]          # usable already
        assert load_index(out).samples.shape[0] == r1["on_disk"]
        assert sum(server.hits.values()) < 40
        r2 = dl.download(f, out, 3, shard_size=16, **FAST)
        assert not r2["stopped"] and r2["on_disk"] == 60 - 7 and r2["dead"] == 7
        assert r2["already"] == r1["on_disk"] and r2["fetched"] == 53 - r1["on_disk"]
        assert max(server.hits.values()) == 1, [p for p, n in server.hits.items() if n > 1]
        assert len(server.hits) == 60
        assert sorted(p.name for p in (out / ".download").glob("*.success")) == [
            f"shard_{i:05d}.success" for i in range(4)]
    finally:
        server.close()


@pytest.mark.e2e
def test_a_killed_cli_download_resumes_where_it_stopped(tmp_path):
    """SIGTERM in the middle of a CLI download: train.csv is written on the way out; the rerun does
    not fetch again any image that was on disk."""
    server = Server(delay=0.05)
    try:
        rows = [(iid(f"k{i}"), server.url(f"/img/k{i}"), str(i % 2)) for i in range(80)]
        f = write_csv(tmp_path / "train.csv", rows)
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "core", "download", "--csv", str(f), "--top", "2", "--out", str(out),
               "--workers", "2", "--allow-private", "--json"]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while sum(server.hits.values()) < 10 and time.time() - t0 < 60:
            time.sleep(0.02)
        p.terminate()
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130, err
        assert "run the same command again" in err
        kept = {r[0] for r in rows if dl.target(out, r[0]).exists()}
        assert 0 < len(kept) < 80 and len(pd.read_csv(out / "train.csv")) == len(kept)
        hits = Counter(server.hits)
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        assert summary["on_disk"] == 80 and summary["already"] == len(kept)
        for image_id, url, _ in rows:
            path = url.split(str(server.port))[1]
            if image_id in kept:
                assert server.hits[path] == hits[path] == 1
            else:
                assert server.hits[path] <= 2
    finally:
        server.close()


def test_two_machines_take_disjoint_shards_that_cover_everything_once(tmp_path, server):
    rows = [(iid(f"m{i}"), server.url(f"/img/m{i}"), str(i % 4)) for i in range(30)]
    f = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "shared"
    a = dl.download(f, out, 4, shard=(1, 2), shard_size=7, **FAST)            # shards 0, 2, 4 -> 7 + 7 + 2
    assert a["total"] == a["fetched"] == 16 and len(pd.read_csv(out / "train.csv")) == 16
    b = dl.download(f, out, 4, shard="2/2", shard_size=7, **FAST)             # shards 1, 3 -> 14
    assert b["total"] == b["fetched"] == 14
    assert len(server.hits) == 30 and set(server.hits.values()) == {1}
    assert len(load_index(out).samples) == 30                              # the last one lists both shares
    with pytest.raises(UserError, match="--shard must be K/N"):
        dl.download(f, out, 4, shard="3/2")


def test_clean_subset_picks_and_fetches_only_its_images(tmp_path, server):
    rows = [(iid(f"c{i}"), server.url(f"/img/c{i}"), "1" if i < 10 else "2" if i < 16 else "3") for i in range(20)]
    f = write_csv(tmp_path / "gld" / "train.csv", rows)
    with pytest.raises(UserError, match="train_clean.csv"):
        dl.download(f, tmp_path / "o", 1, clean=True)
    # cleaned: class 1 keeps 3 images, class 2 keeps 5, class 3 keeps 4 (+ one id with no row in train.csv)
    clean = {"1": [iid(f"c{i}") for i in (0, 1, 2)], "2": [iid(f"c{i}") for i in (10, 11, 12, 13, 14)],
             "3": [iid(f"c{i}") for i in (16, 17, 18, 19)] + ["ffff0000ffff0000"]}
    pd.DataFrame({"landmark_id": list(clean), "images": [" ".join(v) for v in clean.values()]}).to_csv(
        tmp_path / "gld" / "train_clean.csv", index=False)
    df = dl.pick_top(f, 2, clean=True)
    assert list(df.attrs["classes"]) == ["2", "3"] and len(df) == 10
    r = dl.download(f, tmp_path / "out", 2, clean=True, **FAST)
    assert (r["fetched"], r["no_url"], r["on_disk"]) == (9, 1, 9)
    assert sorted(server.hits) == sorted(f"/img/c{i}" for i in (10, 11, 12, 13, 14, 16, 17, 18, 19))


def test_tar_shards_extract_only_the_chosen_classes(tmp_path, server):
    rows = [(iid(f"t{i}"), server.url(f"/img/t{i}"), "1" if i < 8 else "2" if i < 14 else "3") for i in range(18)]
    f = write_csv(tmp_path / "train.csv", rows)
    tars = tmp_path / "tars"
    tars.mkdir()

    def add(tar, image_id, body):
        info = tarfile.TarInfo(f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    with tarfile.open(tars / "images_000.tar", "w") as t:
        for i in range(0, 9):                            # class 1 (8) and one of class 2
            add(t, iid(f"t{i}"), jpeg(120, 90, i) if i != 3 else b"<html>not a photo</html>")
    with tarfile.open(tars / "images_001.tar.gz", "w:gz") as t:
        for i in range(9, 18):                           # class 2 but t13, and class 3 (not chosen)
            if i != 13:
                add(t, iid(f"t{i}"), jpeg(40, 30, i))
    r = dl.download(f, tmp_path / "out", 2, tars=[tars], max_side=64)
    assert {k: r[k] for k in ("fetched", "not_image", "missing", "on_disk")} == {
        "fetched": 12, "not_image": 1, "missing": 1, "on_disk": 12}
    assert not server.hits, "tars: no URL is fetched"
    assert not dl.target(tmp_path / "out", iid("t15")).exists()           # class 3 was not chosen
    with Image.open(dl.target(tmp_path / "out", iid("t0"))) as im:
        assert im.size == (64, 48)
    per = {c["landmark_id"]: c for c in r["per_class"]}
    assert (per["1"]["not_image"], per["2"]["missing"]) == (1, 1)
    assert len(load_index(tmp_path / "out").samples) == 12
    r2 = dl.download(f, tmp_path / "out", 2, tars=[tars], max_side=64)
    assert (r2["already"], r2["fetched"], r2["not_image"]) == (12, 0, 1)
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"this is not a tar file at all" * 50)
    with pytest.raises(UserError, match="could not be read as a tar file"):
        dl.download(f, tmp_path / "out2", 2, tars=[broken])


def test_encode_rejects_html_and_truncated_and_keeps_small_jpegs():
    small = jpeg(40, 30)
    assert dl.encode(small, 512) == small and dl.encode(small, 0) == small
    with pytest.raises(Exception):
        dl.encode(b"<html></html>", 512)
    with pytest.raises(Exception):
        dl.encode(jpeg(300, 200)[:800], 512)
    out = Image.open(io.BytesIO(dl.encode(jpeg(300, 200), 100)))
    assert out.format == "JPEG" and out.size == (100, 67)


# ------------------------------------------------------------------ addresses, redirects, body size (issue 19 #8)

def test_the_guard_of_these_tests_stops_an_outside_connection_before_it_leaves(loopback_only):
    s = socket.socket()
    with pytest.raises(AssertionError, match="tried to connect"):
        s.connect(("10.255.255.1", 9))
    s.close()
    with pytest.raises(AssertionError, match="look up the name"):
        socket.getaddrinfo("example.invalid", 80)
    assert loopback_only == [("10.255.255.1", 9), "example.invalid"]
    loopback_only.clear()


# literals the downloader must refuse before it connects: (URL, reason, refused even with allow_private)
REFUSED = [("http://10.0.0.1/a.jpg", "a private address", False),
           ("http://192.168.1.1/a.jpg", "a private address", False),
           ("https://172.16.5.4:8443/a.jpg", "a private address", False),
           ("http://100.64.0.7/a.jpg", "a private address", False),                       # shared (carrier NAT)
           ("http://[fd12:3456::1]/a.jpg", "a private address", False),
           ("http://127.0.0.1:9/a.jpg", "a loopback address", False),
           ("http://[::1]/a.jpg", "a loopback address", False),
           ("http://0x7f.1/a.jpg", "a loopback address", False),                          # 127.0.0.1 spelled oddly
           ("http://169.254.169.254/latest/meta-data/iam/", "a cloud metadata address", True),
           ("http://[fd00:ec2::254]/latest/meta-data/", "a cloud metadata address", True),
           ("http://100.100.100.200/latest/meta-data/", "a cloud metadata address", True),
           ("http://2852039166/latest/meta-data/", "a cloud metadata address", True),      # 169.254.169.254 as a number
           ("http://[::ffff:169.254.169.254]/", "a cloud metadata address", True),        # IPv4-mapped
           ("http://[64:ff9b::a9fe:a9fe]/", "a cloud metadata address", True),           # NAT64
           ("http://169.254.10.20/a.jpg", "a link-local address", True),
           ("http://[fe80::1]/a.jpg", "a link-local address", True),
           ("http://224.0.0.1/a.jpg", "a multicast address", True),
           ("http://0.0.0.0:8501/", "an unspecified address", True),
           ("http://240.0.0.1/a.jpg", "a reserved address", True)]


class Recorder:
    """An httpx transport that sends nothing: it records each request and answers from `reply`."""

    def __init__(self, reply=None):
        self.requests: list[httpx.Request] = []
        self.reply = reply or (lambda r: httpx.Response(200, content=jpeg()))

    def client(self) -> httpx.AsyncClient:
        def handle(request):
            self.requests.append(request)
            return self.reply(request)
        return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def fetch_one(client_or_recorder, url: str, policy, **kw) -> tuple[str, str, bytes]:
    async def go():
        client = client_or_recorder.client() if isinstance(client_or_recorder, Recorder) else client_or_recorder()
        async with client as c:
            return await dl.fetch(c, url, 2.0, 0, 0.0, policy, **kw)
    return asyncio.run(go())


def test_private_and_metadata_addresses_are_refused_before_any_connection():
    rec = Recorder()
    for url, why, always in REFUSED:
        status, reason, body = fetch_one(rec, url, dl.Policy(allow_private=False))
        assert (status, body) == ("dead", b""), url
        assert reason.startswith("refused: ") and f"is {why}" in reason, (url, reason)
        assert ("--allow-private" in reason) == (not always), reason
    assert rec.requests == []                                # refused before the transport was asked
    # allowed private addresses reach the transport (a recorder: nothing is sent); metadata,
    # link-local and the others never do
    for url, why, always in REFUSED:
        status, reason, _ = fetch_one(rec, url, dl.Policy(allow_private=True))
        assert (status == "dead" and reason.startswith("refused: ") and why in reason) == always, (url, reason)
    assert len(rec.requests) == sum(not always for *_, always in REFUSED)


def test_a_name_is_resolved_checked_and_pinned_to_the_address_that_was_checked():
    answers = {"mixed.example": ["93.184.215.14", "10.0.0.7"], "meta.example": ["169.254.169.254"],
               "photos.example": ["93.184.215.14"]}
    asked = []

    def resolve(host, port):
        asked.append(host)
        if host == "gone.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]
    policy = dl.Policy(resolve=resolve)
    rec = Recorder()
    status, reason, _ = fetch_one(rec, "http://mixed.example/a.jpg", policy)
    assert (status, reason) == ("dead", "refused: mixed.example (10.0.0.7) is a private address "
                                        "(pass --allow-private to fetch from such addresses)")
    status, reason, _ = fetch_one(rec, "http://meta.example/latest", dl.Policy(True, lambda h, p: answers[h]))
    assert reason == "refused: meta.example (169.254.169.254) is a cloud metadata address"
    assert rec.requests == []
    status, _, body = fetch_one(rec, "https://photos.example:8443/p/a.jpg?s=1", policy)
    (req,) = rec.requests
    assert status == "ok" and body == jpeg()
    assert str(req.url) == "https://93.184.215.14:8443/p/a.jpg?s=1"       # no second lookup can answer otherwise
    assert req.headers["host"] == "photos.example:8443" and req.extensions["sni_hostname"] == "photos.example"
    fetch_one(rec, "https://photos.example:8443/p/b.jpg", policy)
    assert asked.count("photos.example") == 1                          # looked up once, then remembered

    async def gone():
        async with rec.client() as c:
            return await dl.fetch(c, "http://gone.example/a.jpg", 2.0, 2, 0.0, policy)
    assert asyncio.run(gone()) == ("dead", "connection failed (Name or service not known)", b"")
    assert asked.count("gone.example") == 3                            # a failed lookup is asked again
    assert len(rec.requests) == 2


def test_an_image_is_written_beside_itself_when_train_is_on_another_disk(tmp_path, monkeypatch):
    real = os.replace

    def replace(src, dst):
        if Path(src).parent.name == "tmp":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "tmp").mkdir()
    path = dl.target(tmp_path / "out", "abcdef0123")
    assert dl.save(jpeg(), path, 512, tmp_path / "tmp") == ("fetched", "")
    assert path.read_bytes() == jpeg()
    assert not list((tmp_path / "tmp").iterdir()) and [p.name for p in path.parent.iterdir()] == [path.name]


def test_every_redirect_hop_is_checked_before_it_connects():
    # a public-looking first hop (a recorder: nothing is sent) redirecting inside the network
    hops = {"/a.jpg": "http://10.1.2.3/a.jpg", "/b.jpg": "http://169.254.169.254/latest/meta-data/",
            "/c.jpg": "/d.jpg", "/d.jpg": None, "/e.jpg": "file:///etc/passwd"}

    def reply(request):
        to = hops[request.url.path]
        return httpx.Response(302, headers={"Location": to}) if to else httpx.Response(200, content=jpeg())
    rec = Recorder(reply)
    policy = dl.Policy(resolve=lambda host, port: ["93.184.215.14"])
    assert fetch_one(rec, "http://photos.example/a.jpg", policy)[:2] == (
        "dead", "refused: 10.1.2.3 is a private address (pass --allow-private to fetch from such addresses)")
    assert fetch_one(rec, "http://photos.example/b.jpg", policy)[:2] == (
        "dead", "refused: 169.254.169.254 is a cloud metadata address")
    status, _, body = fetch_one(rec, "http://photos.example/c.jpg", policy)     # a relative redirect: same host
    assert status == "ok" and body == jpeg()
    assert fetch_one(rec, "http://photos.example/e.jpg", policy)[0] == "no_url"
    assert [(r.url.host, r.url.path, r.headers["host"]) for r in rec.requests] == [
        ("93.184.215.14", p, "photos.example") for p in ("/a.jpg", "/b.jpg", "/c.jpg", "/d.jpg", "/e.jpg")]


def test_download_refuses_loopback_by_default_and_redirects_to_metadata_always(tmp_path, server, loopback_only):
    rows = [(iid(f"r{i}"), server.url(f"/img/r{i}"), "1") for i in range(3)]
    rows += [(iid("meta"), server.url("/to/http://169.254.169.254/latest/meta-data/iam/"), "1"),
             (iid("mapped"), server.url("/to/http://[::ffff:a9fe:a9fe]/latest/"), "1"),
             (iid("loop"), server.url("/loop/x"), "1")]
    f = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "out"
    r = dl.download(f, out, 1, **NET)                     # the attack: a CSV pointing at this machine
    assert (r["dead"], r["fetched"], r["on_disk"]) == (6, 0, 0)
    assert not server.hits, "nothing was requested from the loopback server"
    assert r["examples"]["dead"][0]["why"] == ("refused: 127.0.0.1 is a loopback address "
                                               "(pass --allow-private to fetch from such addresses)")
    # the operator allows private addresses: the refused URLs are tried again (not permanent), the
    # loopback server answers, its redirects to metadata addresses are still refused, a loop ends
    r = dl.download(f, out, 1, **FAST)
    assert (r["fetched"], r["dead"], r["on_disk"]) == (3, 3, 3)
    why = {e["id"]: e["why"] for e in r["examples"]["dead"]}
    assert why[iid("meta")] == "refused: 169.254.169.254 is a cloud metadata address"
    assert why[iid("mapped")] == "refused: ::ffff:a9fe:a9fe is a cloud metadata address"
    assert why[iid("loop")] == "too many redirects"
    assert server.hits["/loop/x"] == 1 and server.hits["/loop/again"] == 5
    assert loopback_only == []                             # nothing left this machine


def test_one_body_is_capped_while_it_streams(tmp_path, server):
    t0 = time.perf_counter()
    status, why, body = fetch_one(lambda: dl.default_client(2, 5.0), server.url("/endless/x"),
                                  dl.Policy(allow_private=True), max_bytes=2**20)
    assert (status, why, body) == ("not_image", "more than the 1 MB limit", b"")
    status, why, _ = fetch_one(lambda: dl.default_client(2, 5.0), server.url("/huge/x"),
                               dl.Policy(allow_private=True))
    assert (status, why) == ("not_image", f"{2**30:,} bytes is over the 20 MB limit")
    assert dl.MAX_BYTES == 20 * 2**20
    assert time.perf_counter() - t0 < 10
    rows = [(iid("endless"), server.url("/endless/y"), "1"), (iid("fine"), server.url("/img/fine"), "1")]
    r = dl.download(write_csv(tmp_path / "train.csv", rows), tmp_path / "out", 1, max_bytes=2**20, **FAST)
    assert (r["fetched"], r["not_image"]) == (1, 1)


# ------------------------------------------------------------------ leftovers of a killed run (issue 19 #12)

def gone_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporary_files_a_killed_download_left_are_removed_at_the_next_start(tmp_path, server, monkeypatch):
    monkeypatch.setenv("LANDMARKS_ALLOW_PRIVATE", "1")   # the operator allows the loopback test server
    rows = [(iid(f"l{i}"), server.url(f"/img/l{i}"), "1") for i in range(3)]
    f = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "out"
    old = time.time() - 3600
    dead, live = gone_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # what kill -9 left in a folder an earlier version wrote: temporary images beside the images,
        # the index's and a shard's temporary files
        nest = out / "train" / "a" / "b" / "c"
        nest.mkdir(parents=True)
        (out / ".download").mkdir()
        left = [nest / f".abc1234567890def.jpg.{dead}.140234.tmp", out / f".train.csv.{dead}.tmp",
                out / ".download" / f".shard_00000.json.{dead}.tmp"]
        kept = [nest / f".abc1234567890dee.jpg.{live.pid}.1.tmp",     # its writer still runs
                nest / "notes.tmp", out / "mine.jpg.tmp"]              # not the downloader's names
        for p in left + kept:
            p.write_bytes(b"partial")
            os.utime(p, (old, old))
        young = nest / f".abc1234567890ded.jpg.{dead}.1.tmp"          # newer than this process
        young.write_bytes(b"partial")
        r = dl.download(f, out, 1, **NET)
        assert r["fetched"] == 3
        assert [p for p in left if p.exists()] == []
        assert all(p.exists() for p in kept) and young.exists()
        # this version writes its temporary files in one folder: what a killed run leaves there goes too
        tmp = out / ".download" / "tmp"
        stale = [tmp / f"{iid('l0')}.jpg.{dead}.77.tmp", tmp / f"{iid('l1')}.jpg.{os.getpid()}.78.tmp"]
        for p in stale:
            p.write_bytes(b"partial")
            os.utime(p, (old, old))
        fresh = tmp / f"{iid('l2')}.jpg.{live.pid}.79.tmp"
        fresh.write_bytes(b"partial")
        dl.download(f, out, 1, **NET)
        assert [p.name for p in tmp.iterdir()] == [fresh.name]
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------ CLI and job

def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from core.cli import main
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_json_and_one_sentence_errors(tmp_path, server, capsys):
    rows = [(iid(f"j{i}"), server.url(f"/img/j{i}" if i != 2 else f"/404/j{i}"), str(i % 2)) for i in range(8)]
    f = write_csv(tmp_path / "gld" / "train.csv", rows)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["download", "--csv", str(f), "--top", "1", "--out", str(out), "--workers", "4",
                                 "--allow-private", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["fetched"], summary["dead"], summary["on_disk"], summary["classes"]) == (3, 1, 3, 1)
    assert "fetched" in err                                       # progress went to stderr
    from core.data.registry import by_path
    assert by_path(out)["source"] == "download"

    code, stdout, err = run_cli(["download", "--csv", str(f), "--top", "1", "--out", str(out), "--allow-private"],
                                capsys)
    assert code == 0 and "3 already there" in stdout and "1 dead links" in stdout

    (tmp_path / "afile").write_text("x")
    nocols = tmp_path / "nocols.csv"
    nocols.write_text("id,landmark\na,1\n")
    cases = [(["--csv", str(tmp_path / "nope.csv"), "--top", "1", "--out", str(out)], "does not exist"),
             (["--csv", str(nocols), "--top", "1", "--out", str(out)], "missing column"),
             (["--csv", str(f), "--top", "0", "--out", str(out)], "--top must be at least 1"),
             (["--csv", str(f), "--top", "1", "--out", str(out), "--shard", "3/2"], "--shard must be K/N"),
             (["--csv", str(f), "--top", "1", "--out", str(out), "--shard", "two"], "--shard must be K/N"),
             (["--csv", str(f), "--top", "1", "--out", str(tmp_path / "afile")], "Cannot write"),
             (["--csv", str(f), "--top", "1", "--out", str(tmp_path / "afile" / "sub")], "Cannot write"),
             (["--csv", str(f), "--top", "1", "--out", str(out), "--clean"], "train_clean.csv"),
             (["--csv", str(f), "--top", "1", "--out", str(out), "--max-side", "3"], "--max-side"),
             (["--csv", str(f), "--top", "1", "--out", str(out), "--tars", str(tmp_path / "none")], "does not exist")]
    for args, expect in cases:
        code, stdout, err = run_cli(["download", *args], capsys)
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], (args, err)


def test_download_job_runs_end_to_end_and_registers_the_data_set(tmp_path, server, monkeypatch):
    from core.data.registry import by_path
    monkeypatch.setenv(dl.ALLOW_ENV, "1")              # the operator allows the loopback test server
    from core.runs import jobs
    from core.runs.store import RunStore
    rows = [(iid(f"q{i}"), server.url(f"/img/q{i}" if i != 1 else "/html/q.jpg"), str(i % 3)) for i in range(12)]
    f = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "home" / "datasets" / "gldv2-top2"
    store = RunStore()
    with pytest.raises(UserError, match="does not exist"):
        jobs.submit(store, "download", {"csv": str(tmp_path / "missing.csv"), "out": str(out), "top": 2})
    assert store.jobs(kind="download") == []
    args = {"csv": str(f), "out": str(out), "top": 2, "clean": False, "max_side": 64, "workers": 4}
    job_id = jobs.submit(store, "download", args, start=False)
    with pytest.raises(UserError, match="already running"):
        jobs.submit(store, "download", args, start=False)
    result = jobs.run_job(store, job_id)
    assert result["status"] == "done", result
    job = jobs.status(store, job_id)
    assert job["result"]["fetched"] == 7 and job["result"]["not_image"] == 1
    assert job["progress"]["done"] == job["progress"]["total"] == 8 and job["progress"]["fetched"] == 7
    assert by_path(out)["source"] == "download"
    assert len(load_index(out).samples) == 7


def test_a_cancelled_download_job_is_cancelled_and_keeps_its_files(tmp_path, monkeypatch):
    from core.runs import jobs
    monkeypatch.setenv(dl.ALLOW_ENV, "1")
    from core.runs.store import RunStore
    server = Server(delay=0.05)
    try:
        rows = [(iid(f"x{i}"), server.url(f"/img/x{i}"), "1") for i in range(60)]
        f = write_csv(tmp_path / "train.csv", rows)
        out = tmp_path / "out"
        store = RunStore()
        job_id = jobs.submit(store, "download", {"csv": str(f), "out": str(out), "top": 1, "workers": 2}, start=False)
        threading.Timer(0.5, lambda: jobs.cancel(store, job_id)).start()
        store.set_job(job_id, status="running")
        t0 = time.time()
        result = jobs.run_job(store, job_id)
        assert result["status"] == "cancelled" and time.time() - t0 < 8
        on_disk = [r for r in rows if dl.target(out, r[0]).exists()]
        assert 0 < len(on_disk) < 60 and len(pd.read_csv(out / "train.csv")) == len(on_disk)
    finally:
        server.close()


def test_download_panel_renders_and_submits(tmp_path, server, home, monkeypatch, started_jobs):
    from streamlit.testing.v1 import AppTest
    from core.runs.store import RunStore
    monkeypatch.setenv("LANDMARKS_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv(dl.ALLOW_ENV, "1")              # inherited by the job's worker process
    rows = [(iid(f"p{i}"), server.url(f"/img/p{i}"), str(i % 2)) for i in range(6)]
    f = write_csv(tmp_path / "gld" / "train.csv", rows)

    def script():
        from dashboard.download_panel import download_panel
        download_panel()
    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception, at.exception
    at.text_input(key="download_csv").set_value(str(f)).run()
    at.number_input(key="download_top").set_value(1).run()
    assert at.text_input(key="download_out").placeholder.endswith("gldv2-top1")
    at.text_input(key="download_out").set_value("/etc/elsewhere").run()
    at.button(key="download_start").click().run()
    assert any("must be under" in e.value for e in at.error)
    at.text_input(key="download_out").set_value(str(home / "datasets" / "panel-set")).run()
    at.button(key="download_start").click().run()
    assert not at.exception, at.exception
    store = RunStore()
    job = store.jobs(kind="download")[0]
    assert job["args"]["top"] == 1 and job["args"]["out"] == str((home / "datasets" / "panel-set").resolve())
    assert started_jobs.run() == 1                       # the job the panel started, run here
    assert store.job(job["job_id"])["status"] == "done", store.job(job["job_id"])
    at.run()
    assert not at.exception, at.exception
    assert any("3 of 3" in s.value for s in at.success), [s.value for s in at.success]


def test_download_panel_shows_progress_counts_and_stops(home):
    from streamlit.testing.v1 import AppTest
    from core.runs.store import RunStore
    store = RunStore()
    job_id = store.add_job("download", {"csv": "/data/train.csv", "out": str(home / "datasets" / "g"), "top": 5})
    store.set_job(job_id, status="running", pid=os.getpid(), heartbeat=time.time(),
                  progress={"done": 50, "total": 200, "fetched": 30, "already": 15, "dead": 3, "not_image": 2,
                            "failed": 0, "no_url": 0, "missing": 0, "rate": 12.5, "eta_s": 12.0, "seconds": 4})

    def script():
        from dashboard.download_panel import download_panel
        download_panel()
    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric} == {"Fetched": "30", "Already there": "15", "Dead links": "3",
                                                      "Not images": "2", "Other failures": "0"}
    assert "ETA 12s" in at.get("progress")[0].proto.text
    at.button(key="download_cancel").click().run()
    assert store.job(job_id)["cancel"] == 1


def test_download_panel_says_why_urls_were_refused_and_how_to_allow_them(home):
    from streamlit.testing.v1 import AppTest
    from core.runs.store import RunStore
    store = RunStore()
    job_id = store.add_job("download", {"csv": "/data/train.csv", "out": str(home / "datasets" / "g"), "top": 1})
    why = "refused: 10.0.0.8 is a private address (pass --allow-private to fetch from such addresses)"
    store.set_job(job_id, status="done", result={
        "on_disk": 1, "listed": 2, "classes": 1, "fetched": 1, "dead": 1, "seconds": 1,
        "per_class": [{"landmark_id": "1", "listed": 2, "on_disk": 1, "short": 1, "dead": 1}],
        "examples": {"dead": [{"id": "abc", "url": "http://10.0.0.8/a.jpg", "why": why}]}})

    def script():
        from dashboard.download_panel import download_panel
        download_panel()
    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception, at.exception
    assert [i.value for i in at.info] == [
        "Some URLs were refused because they point at this machine, its network or a cloud metadata service "
        "(10.0.0.8 is a private address); an operator who trusts a local mirror can allow private addresses by "
        "starting the app with LANDMARKS_ALLOW_PRIVATE=1."]
