"""Issue 11's single-GPU levers, checked without a GPU: the compile decision, the batched (nvJPEG)
preparation path run with torchvision's CPU decoder against the PIL path, the CPU process pool
against one process, and the files the batched path leaves to the CPU decoder."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

import core.data.prepared as P
from core.data.readers import resize_square
from core.train import speed


# ------------------------------------------------------------------ 1. compile when it pays

def test_compile_off_and_on_as_set():
    assert speed.compile_choice("off", torch.device("cuda"), 10**6, "resnet18") == (False, "compile off (as set)")
    on, why = speed.compile_choice("on", torch.device("cuda"), 10, "resnet18")
    assert on and "as set" in why
    assert speed.compile_choice(False, "cuda", 10**6, "resnet18")[0] is False   # the config's older boolean
    assert speed.compile_choice(True, "cuda:0", 10, "resnet18")[0] is True
    with pytest.raises(ValueError):
        speed.compile_choice("sometimes", "cuda", 10, "resnet18")


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "mps"])
@pytest.mark.parametrize("setting", ["auto", "on"])
def test_never_compiled_off_cuda(device, setting):
    on, why = speed.compile_choice(setting, device, 10**7, "resnet18", warm=True)
    kind = getattr(device, "type", device)
    assert not on and f"the device is {kind}" in why


def test_auto_compiles_a_run_long_enough_to_pay_back():
    cold, warm = speed.threshold("resnet18", False), speed.threshold("resnet18", True)
    assert (cold, warm) == (speed.COLD_STEPS, speed.WARM_STEPS)
    # the 3-epoch run (~1,500 steps at batch 32) and the poster's 10 epochs at b256 (740): eager
    for steps in (740, 1_500, cold - 1):
        on, why = speed.compile_choice("auto", "cuda", steps, "resnet18", warm=False)
        assert not on and why.startswith("compile auto: off") and f"{steps:,} steps" in why and "40 s" in why
    on, why = speed.compile_choice("auto", "cuda", cold, "resnet18", warm=False)
    assert on and why.startswith("compile auto: on") and f"{cold:,}" in why
    # a warm compiled-graph cache makes compiling cheap: the threshold drops
    assert speed.compile_choice("auto", "cuda", warm, "resnet18", warm=True)[0]
    assert not speed.compile_choice("auto", "cuda", warm - 1, "resnet18", warm=True)[0]
    # a model with a costlier compile needs a longer run; an unknown one is treated as costly
    assert speed.threshold("efficientnet_lite0", False) > cold
    assert speed.threshold("some_new_model", False) > cold


def test_the_warm_cache_mark(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    assert not speed.warm_cache("resnet18", "224/256")
    speed.note_compiled("resnet18", "224/256")
    assert not speed.warm_cache("resnet18", "224/256")        # Inductor's own cache is gone: cold
    (tmp_path / "inductor").mkdir()
    assert speed.warm_cache("resnet18", "224/256") and not speed.warm_cache("resnet18", "224/128")
    on, why = speed.compile_choice("auto", "cuda", speed.WARM_STEPS, "resnet18", warm=None)
    assert not on                                             # the mark is per (model, key)
    speed.note_compiled("resnet18")
    on, why = speed.compile_choice("auto", "cuda", speed.WARM_STEPS, "resnet18")
    assert on and "compiled it before" in why


# ------------------------------------------------------------------ files

def _photo(w, h, seed=0, mode="RGB") -> Image.Image:
    """A smooth picture with an asymmetric mark (a wrong orientation shows)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7 + seed * 40) % 256], -1)
    im = Image.fromarray(a.astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.rectangle([w // 8, h // 8, w // 3, h // 4], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return im.convert(mode) if mode != "RGB" else im


def _files(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}

    def save(name, im, **kw):
        p = folder / name
        im.save(p, **kw)
        out[name] = str(p)

    save("landscape.jpg", _photo(320, 240, 1), quality=92)
    save("portrait.jpg", _photo(150, 250, 2), quality=92)
    save("odd.jpg", _photo(161, 119, 3), quality=92)
    save("small.jpg", _photo(40, 30, 4), quality=92)                   # smaller than the size: upscaled
    save("progressive.jpg", _photo(200, 160, 5), quality=92, progressive=True)
    save("grey.jpg", _photo(120, 90, 6, "L"), quality=92)
    for o in (3, 6, 8):                                               # EXIF orientation, as cameras write it
        exif = Image.Exif()
        exif[0x0112] = o
        save(f"exif{o}.jpg", _photo(180, 120, 10 + o), quality=92, exif=exif.tobytes())
    save("cmyk.jpg", _photo(100, 80, 7).convert("CMYK"), quality=92)     # the CPU decoder takes these
    save("picture.png", _photo(90, 70, 8))
    full = (folder / "landscape.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    out["truncated.jpg"] = str(folder / "truncated.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    out["empty.jpg"] = str(folder / "empty.jpg")
    (folder / "text.jpg").write_bytes(b"not an image at all" * 10)
    out["text.jpg"] = str(folder / "text.jpg")
    return out


CPU_ONLY = {"cmyk.jpg", "picture.png", "truncated.jpg", "empty.jpg", "text.jpg"}


def test_jpeg_header_sorts_what_nvjpeg_may_decode(tmp_path):
    f = _files(tmp_path)
    info = {n: P._read(p)[1] for n, p in f.items()}
    assert {n for n, i in info.items() if i is None} == CPU_ONLY
    assert info["landscape.jpg"] == (320, 240, 1) and info["progressive.jpg"] == (200, 160, 1)
    assert info["exif6.jpg"] == (180, 120, 6) and info["grey.jpg"] == (120, 90, 1)
    assert P._read(str(tmp_path / "missing.jpg")) == (None, None)


# ------------------------------------------------------------------ 2. the batched (GPU) path, on the CPU

def test_resize_matches_pillow_on_the_same_pixels():
    """Everything after the decode is Pillow's rule: exact for landscape boxes, within 1 grey level
    where this Pillow runs the vertical pass first, and through Image.reduce for big shrinks."""
    for w, h, size, tol in [(320, 240, 224, 0), (641, 479, 224, 0), (500, 375, 32, 1), (1200, 801, 32, 1),
                            (100, 80, 224, 0), (240, 320, 224, 1), (333, 999, 50, 1)]:
        a = np.asarray(_photo(w, h, w))
        ref = np.asarray(resize_square(Image.fromarray(a), size)).astype(int)
        got = P._resize_square_t(torch.from_numpy(a.copy()).permute(2, 0, 1)[None].double(), size)[0].numpy()
        assert np.abs(ref - got.astype(int)).max() <= tol, (w, h, size)


@pytest.mark.parametrize("o", range(1, 9))
def test_orientation_matches_exif_transpose(tmp_path, o):
    im = _photo(36, 20, o)
    exif = Image.Exif()
    exif[0x0112] = o
    p = tmp_path / "o.png"
    im.save(p, exif=exif.tobytes())
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    got = P._orient_t(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None], o)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(ref, got)


def _batched(monkeypatch, paths, size, key, workers=1):
    monkeypatch.setattr(P, "BATCHED_ON_CPU", True)
    monkeypatch.setattr(P, "GPU_BATCH", 4)                   # several batches, one with several shapes
    return P.prepare(paths, size, key=key, workers=workers, device="cpu")


@pytest.mark.parametrize("size", [32, 64])
def test_batched_path_matches_the_pil_path(tmp_path, monkeypatch, size):
    f = _files(tmp_path / "img")
    paths = list(f.values())
    cpu = P.prepare(paths, size, key="cpu", workers=1)
    bat = _batched(monkeypatch, paths, size, "batched")
    assert P.last_stats["how"] == "gpu" and P.last_stats["cpu"] == len(CPU_ONLY)
    assert P.last_stats["gpu"] == len(paths) - len(CPU_ONLY)
    assert np.array_equal(cpu.ok, bat.ok) and cpu.reasons == bat.reasons     # the same unreadable-file reasons
    assert {Path(p).name for p, _ in bat.reasons} == CPU_ONLY - {"cmyk.jpg", "picture.png"}
    a, b = cpu.images().astype(int), bat.images().astype(int)
    for i, name in enumerate(f):
        d = np.abs(a[i] - b[i])
        if name in CPU_ONLY:                               # decoded by the CPU path in both: identical
            assert d.max() == 0, name
        else:                                              # nvJPEG's full decode + an s x s mean stands in for
            assert d.mean() < 2.0 and np.percentile(d, 99) <= 16, (name, d.mean())   # libjpeg's scaled IDCT
    # rows are verified like any other: a second call decodes nothing
    assert _batched(monkeypatch, paths, size, "batched").decoded == 0


def test_batched_path_with_a_cpu_pool_for_many_fallbacks(tmp_path, monkeypatch):
    """More than a few files per batch that nvJPEG does not take: a process pool decodes them."""
    folder = tmp_path / "png"
    folder.mkdir()
    paths = []
    for i in range(12):
        p = folder / f"{i}.png"
        _photo(50, 40, i).save(p)
        paths.append(str(p))
    monkeypatch.setattr(P, "GPU_BATCH", 12)
    bat = _batched(monkeypatch, paths, 16, "pngs", workers=2)
    cpu = P.prepare(paths, 16, key="pngs-cpu", workers=1)
    assert bat.ok.all() and np.array_equal(bat.images(), cpu.images())


def test_the_gpu_and_the_cpu_pool_share_the_batches(tmp_path, monkeypatch):
    """With CUDA and 4+ cores, whole batches go to the CPU pool while it is idle; rows, reasons and
    order are the same as one process gives (pool rows exactly, GPU rows within tolerance)."""
    paths = []
    for i in range(40):
        p = tmp_path / f"{i:02d}.jpg"
        _photo(48 + i % 5, 36, i).save(p, quality=90)
        paths.append(str(p))
    paths[7] = str(tmp_path / "missing.jpg")
    monkeypatch.setattr(P, "CHUNK", 3)
    monkeypatch.setattr(P, "TASK", 2)                      # the pool keeps 2 batches of 4: the GPU gets the rest
    cpu = P.prepare(paths, 16, key="cpu", workers=1)
    bat = _batched(monkeypatch, paths, 16, "shared", workers=4)
    assert P.last_stats["gpu"] > 0 and P.last_stats["cpu"] > 0 and P.last_stats["gpu"] + P.last_stats["cpu"] == 40
    assert np.array_equal(cpu.ok, bat.ok) and cpu.reasons == bat.reasons
    a, b = cpu.images().astype(int), bat.images().astype(int)
    exact = sum(np.array_equal(x, y) for x, y in zip(a, b))
    assert exact >= P.last_stats["cpu"] and np.abs(a - b).mean() < 2
    assert _batched(monkeypatch, paths, 16, "shared", workers=4).decoded == 0


# ------------------------------------------------------------------ 3. the CPU pool

def test_pool_writes_the_same_bytes_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "POOL_MIN", 8)
    monkeypatch.setattr(P, "TASK", 3)                      # many tasks, out-of-order completion
    monkeypatch.setattr(P, "CHUNK", 5)                     # and several index commits
    f = _files(tmp_path / "img")
    more = [str(tmp_path / "img" / f"m{i}.jpg") for i in range(20)]
    for i, p in enumerate(more):
        _photo(64 + i, 48, 30 + i).save(p, quality=90)
    paths = list(f.values()) + more
    one = P.prepare(paths, 24, key="one", workers=1)
    assert P.last_stats["how"] == "serial"
    many = P.prepare(paths, 24, key="many", workers=3)
    assert P.last_stats["how"] == "pool"
    assert np.array_equal(one.ok, many.ok) and one.reasons == many.reasons
    assert np.array_equal(one.images(), many.images())
    d1, d2 = P.store_dir("one", 24), P.store_dir("many", 24)
    assert (d1 / "images.u8").read_bytes() == (d2 / "images.u8").read_bytes()
    import pandas as pd
    i1, i2 = pd.read_parquet(d1 / "index.parquet"), pd.read_parquet(d2 / "index.parquet")
    assert i1.sort_values("path").reset_index(drop=True)[["path", "row", "ok", "reason", "crc"]].equals(
        i2.sort_values("path").reset_index(drop=True)[["path", "row", "ok", "reason", "crc"]])
    assert P.prepare(paths, 24, key="many", workers=3).decoded == 0


@pytest.mark.e2e
def test_a_cancelled_pool_leaves_a_store_that_finishes_right(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "POOL_MIN", 8)
    monkeypatch.setattr(P, "TASK", 2)
    monkeypatch.setattr(P, "CHUNK", 4)
    paths = []
    for i in range(30):
        p = tmp_path / f"{i}.jpg"
        _photo(40, 30, i).save(p, quality=90)
        paths.append(str(p))

    def stop(done, total):
        if done == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        P.prepare(paths, 16, key="cut", workers=2, progress=stop)
    prep = P.prepare(paths, 16, key="cut", workers=2)
    assert 0 < prep.decoded < 30                            # the committed part was kept
    for img, p in zip(prep.images(), paths):
        buf, _ = P._decode((p, 16))
        assert np.array_equal(img, np.frombuffer(buf, np.uint8).reshape(16, 16, 3)), p


def test_usable_cores():
    assert 1 <= P.usable_cores() <= (os.cpu_count() or 1)


@pytest.mark.e2e
def test_a_script_without_a_main_guard_still_finishes(tmp_path):
    """A caller script without `if __name__ == "__main__":` is re-run by each decoding worker as it
    starts: those workers stop at once (they used to wait for the caller's lock: a hang), and the
    caller decodes the rest in its own process."""
    import subprocess
    import sys
    data = tmp_path / "data"
    for c in range(2):
        (data / f"c{c}").mkdir(parents=True)
        for i in range(P.POOL_MIN // 2 + 8):
            Image.new("RGB", (24, 24), (c * 200, i % 255, 0)).save(data / f"c{c}" / f"{i}.jpg")
    script = tmp_path / "noguard.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
                      "from core.data.readers import load_index\nfrom core.data.prepared import prepare\n"
                      f"idx = load_index({str(data)!r})\n"
                      "p = prepare(idx.samples['path'].tolist(), 16, key='noguard', workers=2)\n"
                      "print('ok', int(sum(p.ok)))\n")
    env = dict(os.environ, LANDMARKS_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["ok", str(2 * (P.POOL_MIN // 2 + 8))]


def test_compile_setting_reads_old_booleans_and_a_bare_flag():
    """config.json files from before "auto" hold true/false; `--compile` alone still means on."""
    import argparse
    from core.train.config import TrainConfig, add_arguments, from_arguments
    assert TrainConfig.from_dict({"compile": True}).compile == "on"
    assert TrainConfig.from_dict({"compile": False}).compile == "off"
    assert TrainConfig().compile == "auto"
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    assert from_arguments(ap.parse_args(["--compile"])).compile == "on"
    assert from_arguments(ap.parse_args(["--compile", "off"])).compile == "off"
    assert from_arguments(ap.parse_args([])).compile == "auto"
