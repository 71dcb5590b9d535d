"""Pretrained backbones: build once (with a progress bar and a message), cache on disk, load everywhere.

``load_backbones(world, budget)`` returns the tiny pretrained LM, CL ViT and MIM ViT (+ decoder) for a world
config and budget: from the cache, else from the ones the repository ships (the default budget's, see
``data/backbones/README.md``), else built (announced, with a progress bar) and cached. Real checkpoints load through
``vlmlab.backbones.real`` instead.
"""
from __future__ import annotations

import json
import shutil
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


_ANNOUNCED: set[str] = set()  # shipped entries already announced in this process


def _find(kind: str, key: dict, root: Path | None, shipped: Path | None, b: Budget) -> Path | None:
    """The entry in the cache, else the shipped one (announced once per process), else None."""
    path = cache.lookup(kind, key, root)
    if path is None:
        path = cache.lookup_shipped(kind, key, shipped)
        if path is not None and str(path) not in _ANNOUNCED:
            _ANNOUNCED.add(str(path))
            _say(f"using the shipped {kind.upper()} backbone for budget {b.name!r} ({path}); "
                 f"`vlmlab pretrain --budget {b.name} --rebuild` builds one on this machine instead")
    return path


def ensure_backbones(world_config: WorldConfig | None = None, budget: Budget | None = None, *, device="cpu",
                     build: bool = True, progress: bool = True, root: Path | None = None, kinds=KINDS,
                     rebuild: bool = False, shipped: Path | None = None) -> tuple[dict, dict]:
    """The entries of a budget's backbones (all three, or only ``kinds``): from the cache (``root``), else the
    repository's shipped ones (``shipped``, default ``data/backbones``; see :func:`cache.shipped_root`), else
    built (with a message and a progress bar) into the cache; a corrupt cache entry is rebuilt. ``rebuild``
    builds every kind anew into the cache, whatever is cached or shipped. Returns ``(paths, pretraining losses)``
    by kind, without loading any model."""
    kinds = _check_kinds(kinds)
    world_config, b, world = _resolve(world_config, budget)
    device = torch.device(device)
    keys = _keys(world_config, b)
    paths, losses = {}, {}
    for kind in kinds:
        path = None if rebuild else _find(kind, keys[kind], root, shipped, b)
        if path is None:
            if not build:
                raise FileNotFoundError(f"the {kind} backbone for budget {b.name!r} is not cached; run "
                                        f"`vlmlab pretrain --budget {b.name}`")
            with cache.build_lock(kind, keys[kind], root):
                # another process may have built it meanwhile
                path = None if rebuild else _find(kind, keys[kind], root, shipped, b)
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


def ship_backbones(budget: Budget, *, root: Path | None = None, dest: Path | None = None,
                   world_config: WorldConfig | None = None) -> list[Path]:
    """Copy a budget's three cache entries into the shipped backbones (``dest``, default ``data/backbones``) and
    remove every other entry there, so that what ships is exactly the current code's. The maintainers' step after
    a change to pretraining (``tools/ship_backbones.py``); fails, changing nothing, if an entry is not cached."""
    world_config, b, _ = _resolve(world_config, budget)
    dest = Path(dest) if dest is not None else cache.shipped_root()
    if dest is None:
        raise ValueError(f"{cache.SHIPPED_ENV}=0 disables the shipped backbones; pass dest or unset it")
    keys = _keys(world_config, b)
    found = {k: cache.lookup(k, keys[k], root) for k in KINDS}
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise FileNotFoundError(f"not cached for budget {b.name!r}: {missing}; run `vlmlab pretrain --budget "
                                f"{b.name}` first")
    dest.mkdir(parents=True, exist_ok=True)
    keep = {p.name for p in found.values()}
    for old in dest.iterdir():
        if old.is_dir() and old.name.split("-")[0] in KINDS and old.name not in keep:
            shutil.rmtree(old)
    out = []
    for path in found.values():
        target = dest / path.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(path, target)
        out.append(target)
    return out


def _load_encoders(paths: dict, world: World, b: Budget) -> tuple:
    """The CL encoder, the MIM encoder and its decoder from their entries (None where not in ``paths``)."""
    cl = mim = dec = None
    if "cl" in paths:
        cl = new_vision_encoder(world, b).eval()
        cl.load_state_dict(load_file(paths["cl"] / "vit.safetensors"))
    if "mim" in paths:
        mim = new_vision_encoder(world, b, b.mim_patch).eval()
        mim.load_state_dict(load_file(paths["mim"] / "vit.safetensors"))
        dec = new_mae_decoder(b, mim.grid ** 2).eval()
        dec.load_state_dict(load_file(paths["mim"] / "decoder.safetensors"))
    return cl, mim, dec


def load_encoders(world_config: WorldConfig | None = None, budget: Budget | None = None, *, kinds=("cl", "mim"),
                  **kw) -> dict:
    """The budget's pretrained vision encoders alone (no LM), e.g. for probes: {"cl": ..., "mim": ...,
    "mim_decoder": ..., "paths": {kind: entry}}; built first where missing, as :func:`ensure_backbones`."""
    if "lm" in kinds:
        raise ValueError("load_encoders loads vision encoders only; load_backbones loads the LM")
    world_config, b, world = _resolve(world_config, budget)
    paths, _ = ensure_backbones(world_config, b, kinds=kinds, **kw)
    cl, mim, dec = _load_encoders(paths, world, b)
    return {"cl": cl, "mim": mim, "mim_decoder": dec, "paths": {k: str(v) for k, v in paths.items()}}


def load_backbones(world_config: WorldConfig | None = None, budget: Budget | None = None, *, device="cpu",
                   build: bool = True, progress: bool = True, root: Path | None = None, kinds=KINDS,
                   rebuild: bool = False, shipped: Path | None = None) -> Backbones:
    """The budget's pretrained backbones, from the cache or the shipped ones, built first where missing (see
    :func:`ensure_backbones`). ``kinds`` must include ``"lm"``; a kind left out is not built, and its field is
    None (``mim`` and ``mim_decoder`` for the MIM encoder)."""
    kinds = _check_kinds(kinds)
    if "lm" not in kinds:
        raise ValueError(f"kinds={list(kinds)!r}: every model reads the LM; include 'lm'")
    world_config, b, world = _resolve(world_config, budget)
    device = torch.device(device)
    paths, losses = ensure_backbones(world_config, b, device=device, build=build, progress=progress, root=root,
                                     kinds=kinds, rebuild=rebuild, shipped=shipped)

    lm = LlamaForCausalLM.from_pretrained(paths["lm"] / "lm").to(device).eval()
    cl, mim, dec = _load_encoders(paths, world, b)
    bb = Backbones(world.tokenizer, lm, cl, mim, dec, b.mim_patch, b.mim_mask_ratio,
                   {k: str(v) for k, v in paths.items()}, losses, b.mae_norm_pix)
    return bb.to(device)


__all__ = ["Backbones", "ensure_backbones", "load_backbones", "load_encoders", "make_lm", "ship_backbones"]
