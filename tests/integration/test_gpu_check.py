"""``benchmarks/gpu_check.sh`` (the GPU figures of issue 22) runs at toy sizes on a CPU and prints
every figure line it prints on a GPU: PPA per class and peak at midre and ppa, fp32 and bf16; the
training line under fp32, bf16 and bf16 + torch.compile (a one-layer net in IR152's place). The
figures themselves are not checked (toy sizes on a CPU say nothing about a GPU)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_at_toy_sizes_prints_every_figure_line(tmp_path):
    env = {
        **os.environ,
        "GPU_CHECK_TOY": "1",
        "GPU_CHECK_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    run = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "(TOY sizes: no GPU figure)" in out and "not a GPU" in run.stderr
    number = r"[0-9]+(\.[0-9]+)?"
    for config in ("midre", "ppa"):
        for precision in ("fp32", "bf16"):
            line = (
                rf"^ppa {config}\s+{precision}: {number} s per class \(search {number} s once; 1 class\(es\) "
                rf"{number} s; 530 classes ~{number} h\), peak n/a \(not CUDA\)$"
            )
            assert re.search(line, out, re.M), out
    for label in ("fp32", "bf16", r"bf16 \+ torch\.compile"):
        line = rf"^gpu-check-toy {label}: {number} img/s \({number}x fp32\), peak nan GiB$"  # IR152 on a GPU
        assert re.search(line, out, re.M), out
