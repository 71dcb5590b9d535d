"""Training loops: one optimisation loop (``optimize``) used by backbone pretraining and by the stage-aware VLM
trainer (``train_stages``). Stages declare what is trainable; everything else is frozen and gets no gradient.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .device import Compiled, autocast
from .loader import batches_ahead, data_workers
from .progress import TerminalProgress


class NonFiniteLoss(RuntimeError):
    pass


SCHEDULES = ("cosine", "constant")  # the learning rate after warm-up


def adamw(groups, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """The optimiser of every training loop here. foreach: one multi-tensor kernel per update instead of one small
    kernel per parameter, bitwise the same as the single-tensor loop torch picks on CPU (tests/test_train.py) and
    faster there (docs/lab-notes/vlm-step-speed.md); torch already picks it on CUDA."""
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98), foreach=True)


def update(opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float = 1.0) -> None:
    """One optimiser step on ``loss``: gradients, their global norm clipped to ``clip`` (0: no clipping), update."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    opt.step()


def optimize(params, batches: Callable[[int], Any], loss_fn: Callable[[Any], torch.Tensor], steps: int, lr: float,
             *, desc: str = "train", device: torch.device | None = None, precision: str = "fp32",
             warmup: float = 0.05, clip: float = 1.0, weight_decay: float = 0.0, progress: bool = True,
             param_groups=None, schedule: str = "cosine", start: int = 0,
             restore: Callable[[torch.optim.Optimizer], None] | None = None,
             after_step: Callable[[int, torch.optim.Optimizer, list[float]], None] | None = None,
             reduce_loss: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[float]:
    """AdamW with linear warm-up, then cosine decay (``schedule="cosine"``) or the peak rate held
    (``"constant"``). ``batches(step)`` builds step ``step``'s batch (a pure function of
    the step: on CUDA worker processes build them ahead, see :mod:`vlmlab.loader`); ``loss_fn(batch)`` returns
    its loss.

    Resuming (:mod:`vlmlab.checkpoint`): ``start`` steps are done already, and ``restore(optimizer)`` puts back
    their optimizer and RNG states just before step ``start`` runs; ``after_step(step, optimizer, losses)`` is
    called after every update (the losses returned so far). ``reduce_loss`` turns a process's loss into the one
    logged and checked (in a distributed run: the mean over the processes). Returns the losses of steps
    ``start`` onwards.

    Stops with :class:`NonFiniteLoss` the first time the loss is NaN or infinite.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; allowed values: {SCHEDULES}")
    groups = param_groups if param_groups is not None else [{"params": [p for p in params if p.requires_grad]}]
    groups = [g for g in groups if g["params"]]
    if not groups or steps <= start:
        return []
    for g in groups:
        g.setdefault("lr", lr)
        g["base_lr"] = g["lr"]
    opt = adamw(groups, lr, weight_decay)
    n_warm = max(1, int(warmup * steps))
    device = device or torch.device("cpu")
    losses: list[float] = []
    all_params = [p for g in groups for p in g["params"]]
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, leave=False, mininterval=1.0, initial=start,
               total=steps)
    terminal = TerminalProgress(desc, steps)  # in a notebook kernel the bar is a widget the terminal never sees
    make = batches if not start else (lambda i: batches(start + i))
    ahead = batches_ahead(make, steps - start, data_workers(device), pin_memory=device.type == "cuda")
    with contextlib.closing(ahead):  # stops any worker processes, also when a step raises
        for step, batch in zip(bar, ahead):
            if restore is not None and step == start:
                # after the first batch: building the workers' loader draws from the RNG, as it did before step 0
                restore(opt)
            decay = 0.5 * (1 + math.cos(math.pi * (step - n_warm) / max(1, steps - n_warm))) \
                if schedule == "cosine" else 1.0
            scale = (step + 1) / n_warm if step < n_warm else decay
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
            with autocast(device, precision):
                loss = loss_fn(batch)
            logged = loss if reduce_loss is None else reduce_loss(loss.detach())
            if not torch.isfinite(logged):
                # no advice here: what a user can change (knobs, backbones) is known to the caller (vlmlab.runs)
                raise NonFiniteLoss(f"{desc}: loss became {logged.item()} at step {step}")
            try:
                update(opt, loss, all_params, clip)
            except Exception as e:  # noqa: BLE001 - a compiled backward that fails: redo this step eagerly
                if not getattr(loss_fn, "compiled", False):
                    raise
                loss_fn.give_up(e)
                with autocast(device, precision):
                    loss = loss_fn(batch)
                update(opt, loss, all_params, clip)
            losses.append(float(logged.detach()))
            if after_step is not None:
                after_step(step, opt, losses)
            terminal.update(step, losses[-1])
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return losses


class CompiledLoss(Compiled):
    """A stage's loss under torch.compile (static shapes), called on the batch's tensors only: dynamo guards on
    every Python value a graph reads, and a batch's answer sets (lists) differ from batch to batch, so passing
    them recompiled until dynamo's limit and then ran eagerly. No loss reads them."""

    def __init__(self, loss, enabled: bool, device: torch.device):
        super().__init__(loss, enabled=enabled, dynamic=False, device=device)

    def __call__(self, batch: dict):
        return super().__call__({k: v for k, v in batch.items() if torch.is_tensor(v)})


@dataclass
class Stage:
    """One training stage of an architecture.

    trainable: names of sub-modules (attribute paths on the model) whose parameters train in this stage
    loss:      name of the model method ``loss_<loss>(batch)`` computing the stage loss
    task:      which text the data carries (see ``vlmlab.world.TASKS``), or "unpaired" for distillation data
    share:     fraction of the budget's VLM steps spent in this stage
    lr:        per-module learning rates (e.g. the LLM trains slower than a fresh connector)
    steps:     a fixed number of steps instead of a share (a pretraining-like stage outside the VLM budget)
    batch:     samples per step when not the budget's ``vlm_batch`` (e.g. a contrastive stage's larger batch)
    """

    name: str
    trainable: tuple[str, ...]
    loss: str = "lm"
    task: str = "qa"
    share: float = 1.0
    lr: dict[str, float] = field(default_factory=dict)
    steps: int | None = None
    batch: int | None = None


def stage_plan(stages: list[Stage], budget) -> list[int]:
    """Optimizer steps of each stage: its fixed ``steps``, else its share of ``budget.vlm_steps`` (at least 1)."""
    return [st.steps if st.steps is not None else max(1, round(budget.vlm_steps * st.share)) for st in stages]


def stage_batch(stage: Stage, budget) -> int:
    return stage.batch if stage.batch is not None else budget.vlm_batch


def set_trainable(model: torch.nn.Module, names) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze the named sub-modules (dotted paths). Returns the trainable params.

    Tables meant to stay fixed (the ViTs' sin-cos position embeddings) are buffers, not parameters, so
    unfreezing a whole vision tower leaves them fixed (``vlmlab.backbones.vision._position_embeddings``)."""
    model.requires_grad_(False)
    params = []
    for name in names:
        mod = model.get_submodule(name)
        mod.requires_grad_(True)
        params += [p for p in mod.parameters()]
    return params


@dataclass
class StageLog:
    name: str
    steps: int
    losses: list[float]
    seconds: float
    samples: int

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")


def train_stages(model, stages: list[Stage], data, budget, *, device, precision: str = "fp32",
                 progress: bool = True, checkpoint=None, dist=None) -> list[StageLog]:
    """Run each stage: set the trainable set, build per-module LR groups, optimise the stage loss.

    ``checkpoint`` (a :class:`vlmlab.checkpoint.Checkpointing`) saves the training state every so many steps and
    resumes from the latest one; ``dist`` (a :class:`vlmlab.distributed.Distributed`) trains each stage with
    DDP, ``data`` then giving this process's share of each batch."""
    if budget.vlm_compile:  # graphs of earlier runs in this process count towards dynamo's recompile limit
        torch._dynamo.reset()  # inductor's on-disk cache still makes compiling them again quick
    logs = []
    plan = stage_plan(stages, budget)
    resumed = checkpoint.load(model, stages, plan, device) if checkpoint is not None else None
    sizes = [stage_batch(st, budget) for st in stages]
    # per stage: optimizer steps and training samples before it (a stage's samples start where the earlier end)
    offsets = [sum(plan[:i]) for i in range(len(stages))]
    consumed = [sum(s * n for s, n in zip(plan[:i], sizes)) for i in range(len(stages))]
    for i, (st, steps, n, offset) in enumerate(zip(stages, plan, sizes, offsets)):
        if resumed is not None and i < resumed.stage:  # finished before the checkpoint: its log is kept there
            logs.append(StageLog(**resumed.logs[i]))
            continue
        here = resumed is not None and i == resumed.stage
        start = resumed.step if here else 0
        if here and start >= steps:  # the checkpoint closed this stage: the next one starts as it did
            from .checkpoint import set_rng_state

            set_rng_state(resumed.rng)
            logs.append(StageLog(st.name, steps, list(resumed.losses), resumed.seconds, steps * n))
            continue
        set_trainable(model, st.trainable)
        groups = []
        for name in st.trainable:
            ps = [p for p in model.get_submodule(name).parameters() if p.requires_grad]
            groups.append({"params": ps, "lr": st.lr.get(name, budget.vlm_lr)})
        # parameters shared by two named modules must appear once
        seen = set()
        for g in groups:
            g["params"] = [p for p in g["params"] if not (id(p) in seen or seen.add(id(p)))]
        loss_method = getattr(model, f"loss_{st.loss}")
        model.train()
        if dist is not None:  # after set_trainable: DDP synchronises the parameters that train in this stage
            loss_method = dist.wrap(model, st.loss)
        else:  # one graph per stage: its trainable set decides what the backward computes
            # static shapes: a stage's batches come in at most six lengths, and inductor's shape-generic
            # attention backward failed on one (benchmarks/compile_ab.py)
            loss_method = CompiledLoss(loss_method, enabled=budget.vlm_compile, device=device)

        first = -(-consumed[i] // n)  # the first batch whose samples all follow the earlier stages' samples
        if n == budget.vlm_batch:
            def batches(step, _task=st.task, _start=first):
                return data(_task, _start + step)
        else:  # the stage's own batch size
            def batches(step, _task=st.task, _start=first, _n=n):
                return data(_task, _start + step, _n)

        before = list(resumed.losses) if here else []
        t0 = time.perf_counter() - (resumed.seconds if here else 0.0)
        restore = None
        if here:
            def restore(opt, _r=resumed):
                from .checkpoint import set_rng_state

                if _r.optimizer is not None:
                    opt.load_state_dict(_r.optimizer)
                set_rng_state(_r.rng)

        def after_step(step, opt, losses, _i=i, _steps=steps, _offset=offset, _before=before, _t0=t0):
            if checkpoint is not None and checkpoint.due(_offset + step + 1, sum(plan)):
                checkpoint.save(model, stages, plan, stage=_i, step=step + 1, global_step=_offset + step + 1,
                                optimizer=opt, losses=_before + losses, seconds=time.perf_counter() - _t0,
                                logs=logs)

        losses = before + optimize(None, batches, loss_method, steps, budget.vlm_lr, desc=f"{model.arch}:{st.name}",
                                   device=device, precision=precision, progress=progress, param_groups=groups,
                                   schedule=budget.vlm_schedule, start=start, restore=restore,
                                   after_step=after_step if checkpoint is not None else None,
                                   reduce_loss=dist.mean if dist is not None else None)
        logs.append(StageLog(st.name, steps, losses, time.perf_counter() - t0, steps * n))
    model.requires_grad_(False)
    model.eval()
    return logs
