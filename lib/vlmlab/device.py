"""Device and precision choices: CUDA when present, else Apple's MPS when present, else the CPU; bf16 autocast on
request or on CUDA."""
from __future__ import annotations

import contextlib
import functools
import logging
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
    """``torch.compile(fn)`` where it can work, the eager ``fn`` (a module or a function) as the fallback.

    Compiling fuses the many small element-wise kernels of a tiny transformer (RMSNorm, RoPE, SiLU), a quarter of
    a CPU training step at width 128. On CPU it needs a C compiler; without one, with ``VLMLAB_COMPILE=0``, or when
    compiling fails, ``fn`` runs eagerly (the same maths up to rounding; a warning says so). ``dynamic=None`` is
    torch's default: static shapes first, a shape-generic graph once a shape changes; inductor keeps what it
    compiled on disk, so a later process on the same machine starts in seconds instead of a minute or two.
    """

    def __init__(self, fn, enabled: bool = True, dynamic: bool | None = None, device: torch.device | None = None):
        self.module = fn
        if device is None:
            owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
            first = next(owner.parameters(), None) if isinstance(owner, torch.nn.Module) else None
            device = first.device if first is not None else torch.device("cpu")
        enabled = enabled and compile_allowed()
        can = device.type == "cuda" or any(shutil.which(c) for c in ("cc", "gcc", "clang"))
        on = enabled and can
        if enabled and not can:
            warnings.warn("torch.compile needs a C compiler (cc, gcc or clang) on a CPU and none was found: the "
                          "training step runs eagerly", RuntimeWarning, stacklevel=2)
        if on:  # the compiler's notices (no CUDA_HOME on a CPU, a graph break at .item()) are not the user's to act on
            for name in ("torch.utils.cpp_extension", "torch._dynamo.variables.tensor"):
                logging.getLogger(name).setLevel(logging.ERROR)
        self.fn = torch.compile(fn, dynamic=dynamic) if on else fn

    @property
    def compiled(self) -> bool:
        return self.fn is not self.module

    def __call__(self, *args, **kwargs):
        if not self.compiled:
            return self.module(*args, **kwargs)
        try:
            return self.fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly from now on
            self.give_up(e)
            return self.module(*args, **kwargs)

    def give_up(self, error: Exception) -> None:
        """Run eagerly from now on, saying why: also for a failure in the compiled backward, which raises where
        the caller calls ``backward()`` (see ``vlmlab.train.optimize``)."""
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); running eagerly",
                      RuntimeWarning, stacklevel=3)
        self.fn = self.module


COMPILE_ENV = "VLMLAB_COMPILE"


def compile_allowed() -> bool:
    """``$VLMLAB_COMPILE``: unset or 1 lets the budgets' ``*_compile`` knobs compile, 0 runs everything eagerly."""
    env = os.environ.get(COMPILE_ENV, "").strip()
    if env not in ("", "0", "1"):
        raise ValueError(f"{COMPILE_ENV}={env!r}; allowed values: 0 (run eagerly) or 1 (compile where the budget "
                         f"says so)")
    return env != "0"
