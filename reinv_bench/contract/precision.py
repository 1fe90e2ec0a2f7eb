"""The one owner of numeric precision: a step's precision, bf16 autocast and TF32.

``--precision`` (``fp32`` | ``bf16`` | ``tf32``) enters each step's spec; a worker reads it with
``step_precision``, sets TF32 with ``set_tf32`` and runs the step's compute under ``autocast``.
Plugins never read the flag themselves: an attack gets the run's precision from its context
(``AttackContext.autocast()``, ``AttackContext.fp32()`` for a part kept in float32).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from reinv_bench.contract.config import PRECISIONS, ConfigError


def check_precision(precision: str, device: Any = None) -> None:
    """The one check of ``--precision``: a known name, and bf16 only on a device that has it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: give one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device is not None and device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use tf32 or fp32"
            )


def step_precision(spec: dict[str, Any]) -> str:
    """The precision a step computes at: the ``precision`` entry of its spec (absent: fp32, so
    fp32 keys are those of the runs before ``--precision`` existed)."""
    return spec.get("precision", "fp32")


def set_tf32(precision: str) -> None:
    """TF32 matmuls and convolutions on Ampere+ GPUs for ``tf32``; off otherwise (true fp32)."""
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


def autocast(device: torch.device, precision: str):
    """bf16 autocast on ``device`` for ``bf16`` (CPU too: slower, but the same code path);
    a no-op otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def full_precision(device: torch.device, precision: str):
    """Autocast switched off on ``device`` under ``bf16`` (a part that must stay float32, e.g. a
    loss; its inputs should be cast with ``.float()``); a no-op otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
