#!/usr/bin/env bash
# Issue 11's GPU figures, in one run of under 5 minutes on one H100/H200 (see bench/gpu_bench.py for
# the stages and the GPU_CHECK_* sizes). On a machine without CUDA it says so and measures nothing.
#
#   bash bench/gpu_check.sh
#   GPU_CHECK_JSON=/tmp/gpu.json GPU_CHECK_IMAGES=8000 bash bench/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" >/dev/null 2>&1; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "${GPU_CHECK_DRY_RUN_CPU:-0}" != 1 ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "no GPU: nothing measured"
  exit 0
fi
export PYTHONUNBUFFERED=1
# SIGINT at the limit: the script prints the table of what it measured so far, then ends
timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-290}" "$PY" bench/gpu_bench.py "$@"
