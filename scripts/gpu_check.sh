#!/usr/bin/env bash
# The device command for the GPU figures (prepared here by scripts/gpu_bundle.sh; see scripts/gpu_check.py):
# install the carried wheels beside the machine's own torch, then run every part and leave the report in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
SITE=.gpu/site  # the carried wheels, installed beside the machine's own packages (ignored by git, like .gpu/)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
if [ -d .gpu/reference ]; then mkdir -p third_party/diffusers_examples && cp .gpu/reference/*.py third_party/diffusers_examples/; fi
export PYTHONPATH=$PWD/$SITE:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 scripts/gpu_check.py --sdxl-config .gpu/sdxl-base-1.0-config --photos .gpu/photos --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
