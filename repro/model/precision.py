"""Numerical precision of the base network's convolutions (issue 16, first step).

    float32  the reference, and the CPU default: no autocast
    bf16     torch.autocast in bfloat16 for the base's convolutions; the
             pooling (NetVLAD's custom backward, f_max) and whitening run in
             float32 on the base's output cast back, so their accumulations
             stay float32
    auto     bf16 on CUDA, float32 elsewhere (TrainConfig's default)

fp16 (which needs a gradient scaler) is not offered: bf16 has float32's
range, so training needs no loss scaling. TF32 for the float32 matmuls and
convolutions on CUDA is set explicitly by :func:`set_tf32` (off unless
asked), so a float32 run means float32.
"""
from __future__ import annotations

import contextlib

import torch

from repro.errors import ConfigError

PRECISIONS = ("float32", "bf16", "auto")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: choose one of {list(PRECISIONS)} "
                          "(float32: the reference; bf16: autocast of the base; auto: bf16 on CUDA, float32 on CPU)")
    return precision


def resolve_precision(precision: str, device) -> str:
    """``float32`` or ``bf16`` for ``device`` ("auto": bf16 on CUDA only)."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "float32"
    return precision


def base_autocast(precision: str, device_type: str):
    """The context the base network runs in: autocast for bf16, nothing for float32."""
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA float32 matmuls and convolutions, stated explicitly (no effect on a CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
