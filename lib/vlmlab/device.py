"""Device and precision choices: CUDA when present, CPU otherwise; bf16 autocast on request or on CUDA."""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA by default; on CPU only when asked (measure first: benchmarks/)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; allowed values: {PRECISIONS}")
    use = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
