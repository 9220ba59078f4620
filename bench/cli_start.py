"""How long `python -m core --help` takes to answer, against a bare `python -c pass` and against
importing what a training command needs (torch, torchvision, pandas), in the same run.

    python bench/cli_start.py [--repeat 7]

Prints the median wall time of each and the ratios. The CLI's help imports none of the heavy
libraries (tests/test_layers.py checks that); this measures what that is worth.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -m core --help": [sys.executable, "-m", "core", "--help"],
    "import torch, torchvision, pandas": [sys.executable, "-c", "import torch, torchvision, pandas"],
}


def median_s(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    got = {name: median_s(cmd, a.repeat) for name, cmd in CASES.items()}
    for name, s in got.items():
        print(f"{name:<36} {s:6.3f} s")
    help_s, heavy = got["python -m core --help"], got["import torch, torchvision, pandas"]
    print(f"help vs bare python: {help_s / got['python -c pass']:.1f}x; heavy imports vs help: {heavy / help_s:.1f}x")


if __name__ == "__main__":
    main()
