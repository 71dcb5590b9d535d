"""Training batches built ahead of the step that consumes them, in worker processes, where that pays.

Every training loop here draws batch ``s`` as a pure function of ``s`` (the world generates sample ``i`` of a split
from its seed and ``i`` alone), so the batches can be made anywhere and in any order without changing what is
learnt. On a CPU batches are built inline, because the step keeps every core busy; on a GPU, where one core
building every batch is the bottleneck, ``data_workers`` processes build them (docs/lab-notes/vlm-steps.md).
"""
from __future__ import annotations

import multiprocessing
import os
from typing import Any, Callable, Iterator

import torch

WORKERS_ENV = "VLMLAB_DATA_WORKERS"
MAX_AUTO_WORKERS = 8


def data_workers(device: torch.device) -> int:
    """Worker processes that build batches ahead: ``$VLMLAB_DATA_WORKERS`` when set (0: inline), else none on CPU
    and one per spare CPU core (at most 8) on CUDA."""
    env = os.environ.get(WORKERS_ENV)
    if env is not None and env.strip() != "":
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(f"{WORKERS_ENV}={env!r}; allowed values: an integer >= 0 (0 builds batches inline)")
        return n
    if device.type != "cuda":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))


class _Steps(torch.utils.data.Dataset):
    """Batch ``s`` of a loop of ``steps`` steps, made by ``make(s)``."""

    def __init__(self, make: Callable[[int], Any], steps: int):
        self.make, self.steps = make, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        return self.make(step)


def batches_ahead(make: Callable[[int], Any], steps: int, workers: int = 0, *,
                  pin_memory: bool = False) -> Iterator[Any]:
    """``make(0), make(1), ..., make(steps - 1)`` in order: inline when ``workers`` is 0, else built ahead by
    ``workers`` processes (up to four batches each). The workers are forked where the platform can (Linux), so
    ``make`` may be any closure; elsewhere it must pickle."""
    if workers <= 0:
        for step in range(steps):
            yield make(step)
        return
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(_Steps(make, steps), batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=4, pin_memory=pin_memory,
                                         multiprocessing_context=context)
    yield from loader
