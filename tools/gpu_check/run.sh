#!/bin/bash
# On the GPU machine, from the repository root (the device call carries .gpu-check): install the wheels that
# tools/gpu_check/prepare.py packed, then run the check into $OUT.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu-check/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 tools/gpu_check/check.py --out "${OUT:-/tmp/gpu-check-out}" "$@"
