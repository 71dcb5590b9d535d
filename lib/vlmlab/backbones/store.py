"""Pretrained backbones: build once (with a progress bar and a message), cache on disk, load everywhere.

``load_backbones(world, budget)`` returns the tiny pretrained LM, CL ViT and MIM ViT (+ decoder) for a world
config and budget, building whichever is missing from the cache. Real checkpoints load through
``vlmlab.backbones.real`` instead.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from ..budgets import Budget
from ..world import World, WorldConfig
from . import cache
from .pretrain import (PRETRAIN_SEED, make_lm, new_mae_decoder, new_vision_encoder, pretrain_cl, pretrain_lm,
                       pretrain_mim)
from .vision import MAEDecoder, VisionEncoder

KINDS = ("lm", "cl", "mim")


@dataclass
class Backbones:
    tokenizer: PreTrainedTokenizerBase
    lm: LlamaForCausalLM
    cl: VisionEncoder | None  # None when not loaded (``load_backbones(kinds=...)``)
    mim: VisionEncoder | None
    mim_decoder: MAEDecoder | None
    patch: int  # the MIM encoder's patch size: that of the MAE decoder's pixel targets
    mae_mask_ratio: float = 0.75
    paths: dict = field(default_factory=dict)
    pretrain_losses: dict = field(default_factory=dict)
    mae_norm_pix: bool = False  # the MAE decoder predicts per-patch normalised pixels (official MAE) or plain ones

    def to(self, device):
        for m in (self.lm, self.cl, self.mim, self.mim_decoder):
            if m is not None:  # real backbones may come without a MIM encoder or decoder; kinds not loaded are None
                m.to(device)
        return self


def _keys(world: WorldConfig, b: Budget) -> dict[str, dict]:
    base = {"world": asdict(world)}
    pb = b.pretrain_dict()
    pick = lambda *pre: {k: v for k, v in pb.items() if k.startswith(pre)}  # noqa: E731
    return {
        "lm": {**base, **pick("lm_")},
        "cl": {**base, **pick("vit_", "clip_", "cl_")},
        "mim": {**base, **pick("vit_", "mae_", "mim_")},
    }


def _say(msg: str):
    print(f"[vlmlab] {msg}", file=sys.stderr, flush=True)


def _build(kind: str, world: World, b: Budget, device, progress) -> tuple[dict, list[float]]:
    if kind == "lm":
        lm, losses = pretrain_lm(world, b, device, progress)
        return {"lm": lm}, losses
    if kind == "cl":
        enc, losses = pretrain_cl(world, b, device, progress)
        return {"vit": enc}, losses
    enc, dec, losses = pretrain_mim(world, b, device, progress)
    return {"vit": enc, "decoder": dec}, losses


def _write(kind: str, parts: dict, losses: list[float], tok):
    def write(tmp: Path):
        if kind == "lm":
            parts["lm"].save_pretrained(tmp / "lm", safe_serialization=True)
            tok.save_pretrained(tmp / "lm")
        else:
            save_file({k: v.contiguous() for k, v in parts["vit"].state_dict().items()}, tmp / "vit.safetensors")
            if "decoder" in parts:
                save_file(parts["decoder"].state_dict(), tmp / "decoder.safetensors")
        (tmp / "losses.json").write_text(json.dumps(losses))
    return write


def _resolve(world_config: WorldConfig | None, budget: Budget | None) -> tuple[WorldConfig, Budget, World]:
    """The world and budget to pretrain for (defaults when None), and the world pretraining draws its data from."""
    from ..budgets import DEFAULT

    world_config = world_config or WorldConfig()
    return world_config, budget or DEFAULT, World(world_config, seed=PRETRAIN_SEED)


def _check_kinds(kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds={list(kinds)!r}: allowed values are a non-empty subset of {list(KINDS)}")
    return tuple(k for k in KINDS if k in kinds)


def ensure_backbones(world_config: WorldConfig | None = None, budget: Budget | None = None, *, device="cpu",
                     build: bool = True, progress: bool = True, root: Path | None = None,
                     kinds=KINDS) -> tuple[dict, dict]:
    """The cache entries of a budget's backbones (all three, or only ``kinds``), building (with a message and a
    progress bar) those that are missing or corrupt; returns ``(paths, pretraining losses)`` by kind, without
    loading any model."""
    kinds = _check_kinds(kinds)
    world_config, b, world = _resolve(world_config, budget)
    device = torch.device(device)
    keys = _keys(world_config, b)
    paths, losses = {}, {}
    for kind in kinds:
        path = cache.lookup(kind, keys[kind], root)
        if path is None:
            if not build:
                raise FileNotFoundError(f"the {kind} backbone for budget {b.name!r} is not cached; run "
                                        f"`vlmlab pretrain --budget {b.name}`")
            with cache.build_lock(kind, keys[kind], root):
                path = cache.lookup(kind, keys[kind], root)  # another process may have built it meanwhile
                if path is None:
                    _say(f"building the {kind.upper()} backbone for budget {b.name!r} (once; cached under "
                         f"{cache.entry_dir(kind, keys[kind], root)})")
                    t0 = time.perf_counter()
                    parts, ls = _build(kind, world, b, device, progress)
                    path = cache.store(kind, keys[kind], _write(kind, parts, ls, world.tokenizer), root)
                    _say(f"built {kind.upper()} in {time.perf_counter() - t0:.0f}s")
        paths[kind] = path
        losses[kind] = json.loads((path / "losses.json").read_text())
    return paths, losses


def load_backbones(world_config: WorldConfig | None = None, budget: Budget | None = None, *, device="cpu",
                   build: bool = True, progress: bool = True, root: Path | None = None, kinds=KINDS) -> Backbones:
    """The budget's pretrained backbones, built first where missing (see :func:`ensure_backbones`). ``kinds``
    must include ``"lm"``; a kind left out is not built, and its field is None (``mim`` and ``mim_decoder``
    for the MIM encoder)."""
    kinds = _check_kinds(kinds)
    if "lm" not in kinds:
        raise ValueError(f"kinds={list(kinds)!r}: every model reads the LM; include 'lm'")
    world_config, b, world = _resolve(world_config, budget)
    device = torch.device(device)
    paths, losses = ensure_backbones(world_config, b, device=device, build=build, progress=progress, root=root,
                                     kinds=kinds)

    lm = LlamaForCausalLM.from_pretrained(paths["lm"] / "lm").to(device).eval()
    cl = mim = dec = None
    if "cl" in paths:
        cl = new_vision_encoder(world, b).eval()
        cl.load_state_dict(load_file(paths["cl"] / "vit.safetensors"))
    if "mim" in paths:
        mim = new_vision_encoder(world, b, b.mim_patch).eval()
        mim.load_state_dict(load_file(paths["mim"] / "vit.safetensors"))
        dec = new_mae_decoder(b, mim.grid ** 2).eval()
        dec.load_state_dict(load_file(paths["mim"] / "decoder.safetensors"))
    bb = Backbones(world.tokenizer, lm, cl, mim, dec, b.mim_patch, b.mim_mask_ratio,
                   {k: str(v) for k, v in paths.items()}, losses, b.mae_norm_pix)
    return bb.to(device)


__all__ = ["Backbones", "ensure_backbones", "load_backbones", "make_lm"]
