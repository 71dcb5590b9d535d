"""Mid-training checkpoints of :func:`vlmlab.train.train_stages`, and resuming from the latest one.

A checkpoint is a folder ``step-<global step>`` holding ``weights.safetensors`` (the parameters any stage trains)
and ``state.pt`` (the optimizer, the schedule, the stage and its step, the losses so far and every RNG state).
The batch of a step is a pure function of the step, so a run resumed from a checkpoint computes the same steps as
one never stopped: on CPU its losses, weights and metrics are identical (tests/test_checkpoint.py).
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FORMAT = 1
WEIGHTS, STATE = "weights.safetensors", "state.pt"
PREFIX = "step-"


def rng_state() -> dict:
    """Every random generator a training step may draw from: Python's, numpy's, torch's CPU one and the
    accelerators'."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    out = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                   gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out["mps"] = torch.mps.get_rng_state()
    return out


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def trained_parameters(model: torch.nn.Module, stages) -> dict[str, torch.nn.Parameter]:
    """The parameters any of ``stages`` trains, by name (a parameter shared by two modules once): all a checkpoint
    must hold, since the frozen rest is rebuilt from the seed and the backbones."""
    ids = {id(p) for st in stages for name in st.trainable for p in model.get_submodule(name).parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) in ids}


@dataclass
class Resumed:
    """What a checkpoint restores into :func:`vlmlab.train.train_stages`: ``step`` steps of stage ``stage`` done."""

    stage: int
    step: int
    global_step: int
    optimizer: dict | None
    rng: dict
    losses: list[float]
    seconds: float
    logs: list[dict]  # the stages before ``stage``, as StageLog fields

    def describe(self) -> dict:
        return {"stage": self.stage, "step": self.step, "global_step": self.global_step}


@dataclass
class Checkpointing:
    """Where and how often :func:`vlmlab.train.train_stages` saves, and whether it resumes.

    every:       save after every ``every`` optimizer steps counted over all stages, and when training ends
                 (0: never save)
    resume:      start from the latest checkpoint in ``directory`` when there is one
    fingerprint: what the run's result depends on (JSON-able); a checkpoint of another run is refused
    writer:      whether this process writes (only rank 0 of a distributed run does)
    """

    directory: Path
    every: int = 0
    resume: bool = False
    fingerprint: dict = field(default_factory=dict)
    writer: bool = True
    resumed_from: dict | None = None  # set by load(): where training continued, None when it started afresh

    def __post_init__(self):
        self.directory = Path(self.directory)

    def due(self, global_step: int, total: int) -> bool:
        return self.every > 0 and (global_step % self.every == 0 or global_step == total)

    # ---- writing
    def save(self, model, stages, plan: list[int], *, stage: int, step: int, global_step: int, optimizer,
             losses: list[float], seconds: float, logs: list) -> Path | None:
        """Write the checkpoint of ``global_step`` next to the older ones, then remove them; a folder appears under
        its final name only once complete, so a process killed while writing leaves the previous checkpoint."""
        if not self.writer:
            return None
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{PREFIX}{global_step:08d}"
        tmp = self.directory / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        weights = {n: p.detach().to("cpu", copy=True).contiguous()
                   for n, p in trained_parameters(model, stages).items()}
        save_file(weights, str(tmp / WEIGHTS))
        torch.save({
            "format": FORMAT, "fingerprint": json.dumps(self.fingerprint, sort_keys=True, default=str),
            "stages": [st.name for st in stages], "plan": list(plan), "stage": stage, "step": step,
            "global_step": global_step, "optimizer": optimizer.state_dict() if optimizer is not None else None,
            # the schedule is a function of the step; what it was built from is kept to document the checkpoint
            "scheduler": {"step": step, "steps": plan[stage],
                          "base_lr": [g["base_lr"] for g in optimizer.param_groups] if optimizer is not None else []},
            "rng": rng_state(), "losses": list(losses), "seconds": float(seconds),
            "logs": [{"name": l.name, "steps": l.steps, "losses": list(l.losses), "seconds": l.seconds,
                      "samples": l.samples} for l in logs],
        }, tmp / STATE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.directory.iterdir():
            if old != final and (old.name.startswith(PREFIX) or old.name.startswith(f".{PREFIX}")):
                shutil.rmtree(old, ignore_errors=True)
        return final

    # ---- reading
    def latest(self) -> Path | None:
        if not self.directory.is_dir():
            return None
        done = [p for p in self.directory.iterdir() if p.name.startswith(PREFIX) and (p / STATE).is_file()
                and (p / WEIGHTS).is_file()]
        return max(done, key=lambda p: int(p.name[len(PREFIX):]), default=None)

    def load(self, model, stages, plan: list[int], device) -> Resumed | None:
        """Load the latest checkpoint's weights into ``model``; its optimizer and RNG states are returned for the
        trainer to restore at the step it continues from. None when resuming is off or nothing was saved."""
        path = self.latest() if self.resume else None
        if path is None:
            return None
        from safetensors.torch import load_file

        try:
            state = torch.load(path / STATE, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is named, not a traceback
            raise ValueError(f"checkpoint {path}: {STATE} cannot be read ({type(e).__name__}: {e}); remove "
                             f"{path} to resume from an earlier one or from the start") from None
        mine = json.dumps(self.fingerprint, sort_keys=True, default=str)
        if state.get("format") != FORMAT or state["fingerprint"] != mine:
            raise ValueError(f"checkpoint {path} belongs to another run ({_difference(state['fingerprint'], mine)}); "
                             f"resume with the parameters it was saved with, or remove {self.directory}")
        if state["stages"] != [st.name for st in stages] or state["plan"] != list(plan):
            raise ValueError(f"checkpoint {path} has stages {state['stages']} of {state['plan']} steps; this run has "
                             f"{[st.name for st in stages]} of {list(plan)}")
        params = trained_parameters(model, stages)
        weights = load_file(str(path / WEIGHTS))
        if set(weights) != set(params):
            raise ValueError(f"checkpoint {path}: its weights are not those the stages train "
                             f"(missing {sorted(set(params) - set(weights))[:3]}, extra "
                             f"{sorted(set(weights) - set(params))[:3]})")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name].to(p.device))
        self.resumed_from = {"checkpoint": str(path), "stage": stages[state["stage"]].name, "step": state["step"],
                             "global_step": state["global_step"]}
        return Resumed(state["stage"], state["step"], state["global_step"], state["optimizer"], state["rng"],
                       state["losses"], state["seconds"], state["logs"])


def _difference(saved: str, mine: str) -> str:
    """The first top-level entries in which two fingerprints differ, for the error message."""
    a, b = json.loads(saved), json.loads(mine)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "differs in " + ", ".join(keys[:4]) if keys else "another format"
