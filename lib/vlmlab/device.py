"""Device and precision choices: CUDA when present, else Apple's MPS when present, else the CPU; bf16 autocast on
request or on CUDA."""
from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import warnings

import numpy as np
import torch

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    return torch.device(device)


@functools.cache  # the hardware does not change; autocast asks at every step
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX, as oneDNN sees it). Without them
    torch emulates bf16: on a 2-core AVX2 CPU a bf16 matmul of 1,024 ran at 1 GFLOP/s against 147 in fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA by default; on CPU only when asked (measure first: benchmarks/), with a warning where
    the CPU has no bf16 instructions."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; allowed values: {PRECISIONS}")
    use = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    if device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("precision='bf16' on a CPU without bf16 instructions (AVX512-BF16 or AMX): torch emulates "
                      "them, about 100x slower than fp32 (benchmarks/run_all.py measures both peaks); "
                      "use precision='fp32' here", RuntimeWarning, stacklevel=2)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Compiled:
    """``torch.compile(module, dynamic=True)`` where it can work, the eager module as the fallback.

    Compiling fuses the many small element-wise kernels of a tiny transformer (RMSNorm, RoPE, SiLU), a quarter of
    a CPU training step at width 128. On CPU it needs a C compiler; without one, with ``VLMLAB_COMPILE=0``, or when
    compiling fails, the module runs eagerly (the same maths up to rounding; a warning says so). Compiling the
    first step takes about 20 s on the 2-core CPU.
    """

    def __init__(self, module: torch.nn.Module, enabled: bool = True):
        self.module = module
        device = next(module.parameters()).device
        can = device.type == "cuda" or any(shutil.which(c) for c in ("cc", "gcc", "clang"))
        on = enabled and can and os.environ.get("VLMLAB_COMPILE", "1") != "0"
        self.fn = torch.compile(module, dynamic=True) if on else module

    @property
    def compiled(self) -> bool:
        return self.fn is not self.module

    def __call__(self, *args, **kwargs):
        if not self.compiled:
            return self.module(*args, **kwargs)
        try:
            return self.fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly from now on
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); running eagerly",
                          stacklevel=2)
            self.fn = self.module
            return self.module(*args, **kwargs)
