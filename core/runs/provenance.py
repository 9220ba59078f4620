"""Provenance: what a run was made from, recorded in its folder when the run is created (issue 24).

Keys: `code` (the project's git commit, whether the tree was dirty, a sha256 of `git diff HEAD`),
`packages` (python and the libraries that change the numbers), `hardware` (CPU, GPUs, torch's
CUDA), `data` (the data set's name, layout, a sha256 of its sorted (relative path, size) list and
the count, and of the run's split manifest once training wrote it), `seed` and `config` (the whole
stored configuration). Whatever cannot be known is "unknown": collecting never fails a run.

The file list's hash stats every image (no image is read) and is cached under LANDMARKS_HOME/cache,
keyed on the data set's signature (its CSVs' size and mtime, or its class folders' mtimes) and on
the mtimes of the folders that hold the images (adding, removing or renaming an image changes them).

`compare(then, now)` says what differs between a run's record and the present (train --like, the
Runs page's "Train again like this"): the data set (refused unless forced), packages and code (warned).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from core.files import atomic_write, sha256_of
from core.paths import cache_dir

UNKNOWN = "unknown"
PARENT = "parent"     # TrainConfig.extra key: the run this one was trained again from (train --like, "Train again")
KEYS = ("code", "packages", "hardware", "data", "seed", "config")
PACKAGES = ("torch", "torchvision", "streamlit", "numpy", "pandas", "pillow", "optuna", "timm")
CODE_ROOT = Path(__file__).resolve().parents[2]      # the project's checkout (core/runs/ -> the root)
GIT_TIMEOUT_S = 10
CACHE_VERSION = 1


# ------------------------------------------------------------------ collecting

def collect(config, code_root: str | os.PathLike | None = None) -> dict:
    """The provenance of a run about to be made from `config` (a TrainConfig)."""
    cfg = json.loads(config.to_json())
    return {"code": code_version(code_root), "packages": package_versions(), "hardware": hardware(),
            "data": data_identity(cfg.get("data"), bool(cfg.get("clean"))), "seed": cfg.get("seed"), "config": cfg}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True,
                          timeout=GIT_TIMEOUT_S).stdout.decode(errors="replace")


def code_version(root: str | os.PathLike | None = None) -> dict:
    """{commit, dirty, diff_sha256}; each "unknown" outside a git checkout or without git."""
    root = Path(root or CODE_ROOT)
    unknown = {"commit": UNKNOWN, "dirty": UNKNOWN, "diff_sha256": UNKNOWN}
    if shutil.which("git") is None:
        return unknown
    try:
        top, commit = _git(root, "rev-parse", "--show-toplevel", "HEAD").split()
        if top != str(root.resolve()):
            return unknown                 # a checkout further up (the project copied into one) is not ours
        diff = _git(root, "diff", "HEAD", "--no-ext-diff", "--binary")
    except (OSError, subprocess.SubprocessError):
        return unknown
    dirty = bool(diff)
    return {"commit": commit, "dirty": dirty,
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if dirty else None}


def package_versions() -> dict:
    """Python's and PACKAGES' versions as installed now (a worker started after an upgrade trains
    with the new ones); re-read when a folder on sys.path changes (pip adds and removes dist-info
    folders there)."""
    stamp = tuple(_mtime(p) for p in sys.path if p)
    if _PACKAGES_SEEN.get("stamp") != stamp:
        out = {"python": platform.python_version()}
        for name in PACKAGES:
            try:
                out[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                out[name] = None           # not installed
        _PACKAGES_SEEN.update(stamp=stamp, versions=out)
    return dict(_PACKAGES_SEEN["versions"])


_PACKAGES_SEEN: dict = {}


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def hardware() -> dict:
    """CPU, GPUs and torch's CUDA version. A process that has not imported torch (the dashboard creating
    a run) does not import it for this (~3 s): torch's CUDA version is read from its version file and the
    GPUs from nvidia-smi (a machine without it has no NVIDIA driver)."""
    out = {"cpu": _cpu_model(), "cores": os.cpu_count(), "gpus": UNKNOWN, "cuda": UNKNOWN}
    try:
        torch = sys.modules.get("torch")
        if torch is None:
            out["cuda"] = _torch_cuda_unimported()
            # a CPU build uses no GPU; NVIDIA's driver installs nvidia-smi with it: none, no GPU
            out["gpus"] = [] if out["cuda"] is None else (_smi_gpus() or [])
        else:
            out["cuda"] = torch.version.cuda    # None: a CPU build
            out["gpus"] = _gpus(torch)
    except Exception:  # noqa: BLE001 - never fail a run over its description
        pass
    return out


def _torch_cuda_unimported():
    """torch.version.cuda without importing torch: its generated version.py holds `cuda = '12.8'`
    (or None for a CPU build). UNKNOWN if it cannot be read."""
    import importlib.util
    import re
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return UNKNOWN
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        return UNKNOWN
    m = re.search(r"^cuda\s*(?::[^=]*)?=\s*(?:'([^']*)'|\"([^\"]*)\"|None)", text, re.M)
    if m is None:
        return UNKNOWN
    return m.group(1) or m.group(2) or None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def _smi_gpus() -> list[dict] | None:
    """[{name, memory_gb}] from nvidia-smi, or None where it is missing or fails."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        rows = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, check=True, timeout=GIT_TIMEOUT_S).stdout.decode()
        return [{"name": n.strip(), "memory_gb": round(float(m) / 1024, 1)}
                for n, m in (r.rsplit(",", 1) for r in rows.strip().splitlines())]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _gpus(torch) -> list[dict]:
    """[{name, memory_gb}] of the CUDA devices. nvidia-smi where it exists, so that the process
    making the run (the dashboard) does not initialise CUDA; else torch."""
    if not torch.cuda.is_available():
        return []
    found = _smi_gpus()
    if found is not None:
        return found
    return [{"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)}
            for p in map(torch.cuda.get_device_properties, range(torch.cuda.device_count()))]


def data_identity(path, clean: bool = False) -> dict:
    """{path, name, layout, files, files_sha256, split_sha256}; "unknown" where the data set cannot be read."""
    from core.data.registry import name_of
    out = {"path": path, "name": UNKNOWN, "layout": UNKNOWN, "clean": clean, "files": UNKNOWN,
           "files_sha256": UNKNOWN, "split_sha256": None}
    try:
        out["name"] = name_of(path) if path else UNKNOWN
        out.update(file_list_hash(path, clean))
    except Exception:  # noqa: BLE001 - gone or unreadable (a UserError, an OSError…): never fail a run over it
        pass                               # gone or unreadable: what is known stays, the rest is unknown
    return out


def file_list_hash(path, clean: bool = False) -> dict:
    """{layout, files, files_sha256} of the data set's images: the sorted (path relative to the
    data set, size in bytes) list, hashed. Cached (see the module's docstring): a hit reads neither
    the CSV nor the image list, only stats the folders that hold the images."""
    from core.data.readers import load_index, signature
    root = Path(path).expanduser().resolve()
    cache = cache_dir() / "provenance" / (hashlib.sha256(f"{signature(root, clean)}|{clean}".encode())
                                          .hexdigest()[:24] + f"-v{CACHE_VERSION}.json")
    try:
        hit = json.loads(cache.read_text())
        if hit["stamp"] == _stamp(hit["folders"]):
            return hit["out"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    index = load_index(root, clean)
    paths = index.samples["path"].drop_duplicates().sort_values()
    folders = sorted(set(os.path.dirname(p) for p in paths))
    stamp = _stamp(folders)                # before the stats: a change while hashing misses the cache next time
    h, prefix = hashlib.sha256(), len(str(index.root)) + 1
    for p in paths:
        h.update(f"{p[prefix:]}\t{os.stat(p).st_size}\n".encode())
    out = {"layout": index.layout, "files": int(len(paths)), "files_sha256": h.hexdigest()}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, json.dumps({"folders": folders, "stamp": stamp, "out": out}))
    except OSError:
        pass                               # no cache: the next run stats again
    return out


def _stamp(folders: list[str]) -> str:
    """Changes when an image is added to, removed from or renamed in any of `folders`."""
    h = hashlib.sha256()
    for d in folders:
        try:
            h.update(f"{d}:{os.stat(d).st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{d}:gone\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------ reading back

def read(run) -> dict:
    """A run's provenance (a RunFolder), with its split manifest's hash once split.csv exists. A
    folder from before the record existed gives what can be known: config, seed and the data set's
    path and name from the config; the rest "unknown"."""
    rec = run.read_provenance()
    if not rec:
        cfg = run.read_config()
        from core.data.registry import name_of
        rec = {"code": UNKNOWN, "packages": UNKNOWN, "hardware": UNKNOWN,
               "data": {"path": cfg.get("data"), "name": name_of(cfg.get("data")) if cfg.get("data") else UNKNOWN,
                        "layout": UNKNOWN, "clean": bool(cfg.get("clean")), "files": UNKNOWN,
                        "files_sha256": UNKNOWN, "split_sha256": None},
               "seed": cfg.get("seed", UNKNOWN), "config": cfg or UNKNOWN, "recorded": False}
    rec = {**{k: rec.get(k, UNKNOWN) for k in KEYS}, "recorded": rec.get("recorded", True)}
    if isinstance(rec["data"], dict) and run.split_file.exists():
        rec["data"] = {**rec["data"], "split_sha256": _split_sha256(run.split_file)}
    return rec


def _split_sha256(path: Path) -> str | None:
    """split.csv's hash, read again only when the file changes (the Runs page shows it at every rerun;
    the manifest is ~135 MB at 1.6 M images)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _hash_once(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _hash_once(path: str, mtime_ns: int, size: int) -> str | None:
    return sha256_of(path)


def lines(rec: dict) -> list[str]:
    """The record as `key.sub: value` lines (runs show without --json)."""
    out = []

    def walk(prefix, v):
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}", x)
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                walk(f"{prefix}.{i}", x)
        else:
            out.append(f"{prefix}: {json.dumps(v) if isinstance(v, (list, dict)) else v}")
    for k in KEYS:
        walk(k, rec.get(k, UNKNOWN))
    return out


# ------------------------------------------------------------------ then vs now

def compare(then: dict, now: dict, run_id: str) -> list[tuple[str, str]]:
    """[(kind, sentence)] of what differs; kind "data" (train --like refuses it unless forced),
    "packages", "code" or "record" (warned)."""
    if not then.get("recorded", True):
        return [("record", f"Run {run_id} was made before runs recorded their provenance: only its data set's "
                           "presence can be checked, not its files, packages or code.")] + _data_gone(then, now, run_id)
    return [d for d in (_data(then["data"], now["data"], run_id), _packages(then, now, run_id),
                        _code(then["code"], now["code"], run_id)) if d]


def _data_gone(then, now, run_id) -> list[tuple[str, str]]:
    return [d for d in [_data({**then["data"], "files_sha256": None}, now["data"], run_id)] if d]


def _data(old: dict, new: dict, run_id: str):
    where = old.get("path")
    if new.get("files_sha256") == UNKNOWN:
        return "data", f"The data set {where} of run {run_id} is gone or unreadable now."
    if old.get("files_sha256") in (None, UNKNOWN) or old["files_sha256"] == new["files_sha256"]:
        return None
    n0, n1 = old.get("files"), new.get("files")
    if isinstance(n0, int) and n0 != n1:
        what = f"{n0:,} images then, {n1:,} now ({abs(n1 - n0):,} {'added' if n1 > n0 else 'removed'} at least)"
    else:
        what = f"the same number of images ({n1:,}) but other files or sizes"
    return "data", f"The data set {where} changed since run {run_id} was made: {what}."


def _packages(then: dict, now: dict, run_id: str):
    old, new = then.get("packages"), now.get("packages")
    if not isinstance(old, dict):
        return None
    changed = [f"{k} {old.get(k)}→{new.get(k)}" for k in new if old.get(k) != new.get(k)]
    return ("packages", f"Packages changed since run {run_id}: {', '.join(changed)}.") if changed else None


def _code(old, new, run_id: str):
    if not isinstance(old, dict) or old.get("commit") == UNKNOWN:
        return None
    if new.get("commit") == UNKNOWN:
        return "code", (f"The code's version cannot be known now (no git checkout); run {run_id} was made at "
                        f"{old['commit'][:12]}.")
    if (old["commit"], old.get("diff_sha256")) == (new["commit"], new.get("diff_sha256")):
        return None
    state = lambda c: c["commit"][:12] + (" with uncommitted changes" if c.get("dirty") else "")  # noqa: E731
    return "code", f"The code changed since run {run_id}: {state(old)} then, {state(new)} now."


def like(run) -> tuple[dict, list[tuple[str, str]]]:
    """(the run's stored config as a dict, what differs now), for training again like it."""
    then = read(run)
    cfg = run.read_config()
    now = {"code": code_version(), "packages": package_versions(),
           "data": data_identity(cfg.get("data"), bool(cfg.get("clean")))}
    return cfg, compare(then, now, run.dir.name)
