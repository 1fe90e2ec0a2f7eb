#!/bin/bash
# The GPU figures of issue 22 in one run, under ten minutes on an H200 (benchmarks/gpu_check.py says
# what each figure is): PPA seconds per class and peak GiB at the midre and ppa configurations with a
# random-weight 1024-px generator on the fake FaceScrub tree, fp32 and bf16; IR152 training images/s
# at batch 64 under fp32, bf16 and bf16 + torch.compile. Prints figures; asserts nothing.
#
#     bash benchmarks/gpu_check.sh                  # on the GPU machine (GPU_CHECK_DEVICE=cuda:1 ...)
#     GPU_CHECK_TOY=1 bash benchmarks/gpu_check.sh  # toy sizes, any CPU (the test's run): no GPU figure
#     GPU_CHECK_CLASSES=2 ...                       # identities PPA attacks (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
exec python3 benchmarks/gpu_check.py
