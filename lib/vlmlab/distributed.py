"""One run on several processes: PyTorch DDP, launched by torchrun (``torchrun --nproc-per-node N -m vlmlab.cli
run ...``, or ``vlmlab run --nproc N``, which starts torchrun).

The budget's batch stays the batch of a step: each of the N processes builds and trains on its own N-th of it
(``vlmlab.runs.make_data``'s ``rank``), DDP averages the gradients, so every process takes the same update. Only
rank 0 evaluates, writes checkpoints and writes the record. CUDA processes use NCCL, one GPU each; CPU processes use
gloo (the tests run 2 of them).
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch


def world_size_from_env() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


class _StageLoss(torch.nn.Module):
    """A stage's loss method as a module's forward, which DDP wraps (its hooks need the forward to run)."""

    def __init__(self, model: torch.nn.Module, loss: str):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch):
        return getattr(self.model, f"loss_{self.loss}")(batch)


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    owned: bool = True  # whether setup() started the process group (and teardown() ends it)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, loss: str):
        """The stage loss ``loss_<loss>`` of ``model`` under DDP, over the parameters that train now."""
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        # buffers are fixed tables (sin-cos positions), so they are not re-broadcast every step (newer torch
        # names the option forward_sync_buffers)
        accepted = inspect.signature(DistributedDataParallel).parameters
        sync = "forward_sync_buffers" if "forward_sync_buffers" in accepted else "broadcast_buffers"
        return DistributedDataParallel(_StageLoss(model, loss), device_ids=ids, **{sync: False})

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over the processes (the loss a step logs and checks, the same on every rank)."""
        import torch.distributed as td

        out = value.detach().float().clone()
        td.all_reduce(out)
        return out / self.world_size

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}


def setup(device: torch.device) -> tuple[Distributed | None, torch.device]:
    """Join torchrun's process group when this process is one of several; returns it (None alone) and the
    device this process trains on (on CUDA: the GPU of its local rank)."""
    n = world_size_from_env()
    if n == 1:
        return None, device
    import torch.distributed as td

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owned = not td.is_initialized()
    if owned:
        td.init_process_group(backend)
    return Distributed(rank, n, local, td.get_backend(), owned), device


def teardown(dist: Distributed | None) -> None:
    if dist is None or not dist.owned:
        return
    import torch.distributed as td

    if td.is_initialized():
        td.destroy_process_group()
