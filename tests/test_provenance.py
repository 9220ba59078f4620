"""Provenance (issue 24): the record a run folder gets when the run is created, `runs show`, its
survival through `runs rebuild`, `train --like` refusing a changed data set unless --force, and
"unknown" outside a git checkout. The CLI runs in this process (core.cli.main)."""
import hashlib
import json
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from core.cli import main
from core.runs import provenance
from core.runs.store import RunStore
from tests.conftest import tiny_config


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def show(capsys, run_id: str) -> dict:
    code, out, err = cli(capsys, "runs", "show", run_id, "--json")
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def files_hash(root: Path) -> tuple[int, str]:
    """The data set's (relative path, size) list hashed, worked out here from the disk alone."""
    rows = sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*.jpg"))
    return len(rows), hashlib.sha256("".join(f"{r}\t{s}\n" for r, s in rows).encode()).hexdigest()


def test_every_field_is_recorded_and_survives_rebuild(use_trained_home, demo_root, capsys):
    home, (run_id, _) = use_trained_home
    store = RunStore()
    folder = store.run(run_id)
    rec = show(capsys, run_id)
    assert set(provenance.KEYS) <= set(rec) and rec["recorded"] is True
    assert set(rec["code"]) == {"commit", "dirty", "diff_sha256"}
    assert rec["packages"]["torch"] == metadata.version("torch")
    assert rec["packages"]["pillow"] == metadata.version("pillow")
    assert set(rec["packages"]) == {"python", *provenance.PACKAGES}
    assert rec["hardware"]["cores"] == os.cpu_count() and rec["hardware"]["gpus"] == []   # the tests' CPU
    assert "cuda" in rec["hardware"] and rec["hardware"]["cpu"]
    n, digest = files_hash(Path(demo_root))
    assert (rec["data"]["files"], rec["data"]["files_sha256"]) == (240, digest) and n == 240
    assert rec["data"]["layout"] == "gldv2" and rec["data"]["path"] == str(demo_root)
    assert rec["data"]["split_sha256"] == hashlib.sha256(folder.split_file.read_bytes()).hexdigest()
    assert rec["config"] == json.loads(folder.config_file.read_text()) and rec["seed"] == 0

    store.db.unlink()                                 # the index is gone: the folders are the truth
    code, out, err = cli(capsys, "runs", "rebuild", "--json")
    assert code == 0, err
    assert show(capsys, run_id) == rec

    code, out, _ = cli(capsys, "runs", "show", run_id)  # the plain listing: one key a line
    assert f"data.files_sha256: {digest}" in out.splitlines() and "seed: 0" in out.splitlines()

    folder.provenance_file.unlink()                   # a run from before the record existed
    old = show(capsys, run_id)
    assert (old["recorded"], old["code"], old["packages"], old["hardware"]) == (False, "unknown", "unknown", "unknown")
    assert (old["config"], old["seed"], old["data"]["path"]) == (rec["config"], 0, str(demo_root))
    assert old["data"]["files_sha256"] == "unknown"
    code, _, err = cli(capsys, "runs", "show", "no-such-run")
    assert code == 2 and f"There is no run 'no-such-run' in {home / 'runs'}." in err


def test_like_refuses_a_changed_data_set_and_trains_with_force(tmp_path, demo_root, capsys, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    store = RunStore()
    cfg = tiny_config(data, epochs=1, max_images=48, image_size=16, batch_size=64, seed=3)
    parent = store.create(cfg, status="done")
    csv = data / "train.csv"
    rows = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(rows[:-2]))                 # two images fewer

    code, _, err = cli(capsys, "train", "--like", parent)
    assert code == 2
    assert err.strip() == (f"error: The data set {data} changed since run {parent} was made: 240 images then, "
                           f"238 now (2 removed at least). Train on it as it is now with --force.")
    assert [r["run_id"] for r in store.list()] == [parent]    # nothing was made

    then = provenance.package_versions()
    monkeypatch.setattr(provenance, "package_versions", lambda: {**then, "timm": "0.0.1"})
    code, out, err = cli(capsys, "train", "--like", parent, "--force", "--json")
    assert code == 0, err
    assert f"warning: Packages changed since run {parent}: timm {then['timm']}→0.0.1." in err
    assert f"warning: The data set {data} changed since run {parent}" in err
    child = json.loads(out.strip().splitlines()[-1])["run_id"]
    cfg, parent_cfg = store.run(child).read_config(), store.run(parent).read_config()
    assert cfg["extra"] == {"parent": parent}
    assert {k: v for k, v in cfg.items() if k != "extra"} == {k: v for k, v in parent_cfg.items() if k != "extra"}
    assert store.get(child)["status"] == "done"
    assert show(capsys, child)["data"]["files"] == 238


def test_code_version_in_a_checkout_and_unknown_outside_or_without_git(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    (repo / "a.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "a.py"], ["commit", "-q", "-m", "one"]):
        subprocess.run(git + args, check=True, capture_output=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert provenance.code_version(repo) == {"commit": head, "dirty": False, "diff_sha256": None}
    (repo / "a.py").write_text("x = 2\n")
    diff = subprocess.run(git + ["diff", "HEAD", "--no-ext-diff", "--binary"], check=True, capture_output=True).stdout
    assert provenance.code_version(repo) == {"commit": head, "dirty": True,
                                             "diff_sha256": hashlib.sha256(diff).hexdigest()}

    unknown = {"commit": "unknown", "dirty": "unknown", "diff_sha256": "unknown"}
    (repo / "sub").mkdir()
    assert provenance.code_version(repo / "sub") == unknown      # a checkout further up is not the project's
    plain = tmp_path / "plain"
    plain.mkdir()
    assert provenance.code_version(plain) == unknown
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))        # no git at all
    assert provenance.code_version(repo) == unknown
    monkeypatch.setattr(provenance, "CODE_ROOT", plain)          # a run made outside a checkout
    rec = provenance.collect(tiny_config(tmp_path / "gone"))
    assert rec["code"] == unknown and rec["data"]["files_sha256"] == "unknown" and rec["seed"] == 0


def test_gpus_are_read_from_nvidia_smi_without_initialising_cuda(tmp_path, monkeypatch):
    import torch
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    smi = bin_ / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771'\necho 'NVIDIA H200, 143771'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: 1 / 0)   # would initialise CUDA here
    hw = provenance.hardware()
    assert hw["gpus"] == [{"name": "NVIDIA H200", "memory_gb": 140.4}] * 2 and hw["cuda"] == torch.version.cuda


def test_hardware_does_not_import_torch_in_a_process_without_it():
    """The dashboard creating a run records its hardware without importing torch (~3 s on the first Launch)."""
    import sys

    import torch
    assert provenance._torch_cuda_unimported() == torch.version.cuda        # read from torch's version file
    code = ("import sys; from core.runs import provenance as p; hw = p.hardware(); "
            "print(repr(hw['cuda']), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(provenance.__file__).parents[2])).stdout.split()
    assert out == [repr(torch.version.cuda), "False"]
