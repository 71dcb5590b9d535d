"""Real pretrained backbones: a transformers causal LM and timm ViTs, loaded offline from local checkpoints.

Architectures only consume a :class:`~vlmlab.backbones.store.Backbones` object, so real checkpoints plug in by
building one: ``load_real_backbones(lm=..., cl=..., mim=..., mae_decoder=...)``. Nothing here needs network
access when every argument is a local path; a hub name works only where the hub (or its local cache) is
reachable. Remote code is never executed (``trust_remote_code=False`` everywhere).

How each argument is read
-------------------------
``lm``
    A directory written by ``save_pretrained`` (model + tokenizer), or a Hugging Face model id. Loaded with
    ``AutoModelForCausalLM`` / ``AutoTokenizer`` (``trust_remote_code=False``), cast to ``dtype`` (fp32 by
    default). The tokenizer is adapted to the world's prompts: the ``<img>`` placeholder is added as a special
    token when it is not already a single unsplittable token, a ``<pad>`` token is added when there is none,
    and when there is no BOS token the EOS token stands in for it (GPT-2's convention; ``World.encode`` starts
    every sequence with ``bos_token_id``). The LM's embeddings are resized when the tokenizer outgrows them.
    The architectures that patch decoder layers (LLaViT, HoVLE) expect the Llama-family layout
    ``lm.model.layers`` (Llama, Mistral, Qwen2, Gemma, ...).
``cl`` / ``mim``
    One of

    * a timm model name, e.g. ``"vit_base_patch16_clip_224.openai"`` or ``"vit_base_patch16_224.mae"`` (or
      ``"hf-hub:org/name"``): weights come from the hub or its local cache;
    * a local directory in timm's hub layout (``config.json`` with ``architecture``/``model_args``/
      ``pretrained_cfg`` next to ``model.safetensors``, as written by ``timm.models.save_for_hf``): loaded as
      ``timm.create_model("local-dir:<dir>", pretrained=True, num_classes=0)``;
    * ``"<timm name>@<local file or directory>"``: the name gives the architecture, the file
      (``.safetensors``/``.pth``/``.bin``/``.npz``) the weights, e.g.
      ``"vit_base_patch16_224.mae@/ckpt/mae_pretrain_vit_base.pth"``. Loaded with
      ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(...), num_classes=0)``: the file
      is read with timm's own ``load_state_dict`` and handed over in memory (``state_dict=``; ``file=`` for
      ``.npz``), so timm's checkpoint filter still converts OpenAI-CLIP/OpenCLIP/MAE layouts and resamples
      position embeddings. An official MAE checkpoint that also holds the decoder (``mae_visualize_*.pth``)
      has its decoder keys dropped here (timm would otherwise mistake its ``mask_token`` for DINOv2's).

    ``cl_args`` / ``mim_args`` are extra ``timm.create_model`` keyword arguments, e.g. ``dict(img_size=64)`` to
    resample the position embeddings to the world's 64-px canvas (then a patch-16 ViT sees one cell per
    patch, as the tiny backbones do); by default a ViT keeps its native input size and ``VisionEncoder``
    resizes the world's images up to it. Pixel normalisation uses the checkpoint's ``pretrained_cfg``
    ``mean``/``std``. A checkpoint that misses any weight of the architecture is refused (timm loads
    non-strictly when it drops a classifier, so this module checks what timm reports). ``mim`` may be None:
    then ``Backbones.mim`` is None and only architectures that do not read the MIM encoder can be built.
``mae_decoder``
    timm MAE checkpoints carry no decoder, so the MIM reconstruction decoder comes separately: a
    ``.safetensors`` file with a :class:`MAEDecoder` state dict plus a ``.json`` of its dimensions beside it
    (same stem; or a directory holding ``decoder.safetensors`` + ``decoder.json``), as written by
    :func:`save_mae_decoder`; or an official MAE checkpoint with ``decoder_*`` keys (``mae_visualize_*.pth``),
    converted here (its heads, which weights cannot tell, are read from a ``.json`` beside it or default to
    MAE's 16; its position table is resampled to the MIM encoder's grid). When absent, ``mim_decoder`` is None
    and X-Former's reconstruction objective (which needs the MAE decoder) cannot run.

The world's own tokenizer is word-level; with a real LM the world's text must go through the real tokenizer:
build ``World(tokenizer=backbones.tokenizer)``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ..world import IMG
from .store import Backbones
from .vision import MAEDecoder, VisionEncoder

PAD_TOKEN = "<pad>"
VIT_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".npz")
MAE_DECODER_HEADS = 16  # the official MAE decoders (ViT-B/L/H) all use 16 heads
TINY_VIT_ARCH = "vit_tiny_patch16_224"


RealBackbones = Backbones  # the same container; its optional parts (mim, mim_decoder) may be None

# ---- argument parsing --------------------------------------------------------------------------------------
def _looks_like_path(spec: str) -> bool:
    """A local path (absolute, ./, ../, ~, a Windows drive, or anything that exists) rather than a hub id."""
    s = str(spec)
    return (os.path.isabs(s) or s.startswith(("./", "../", "~", ".\\", "..\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", s))
            or os.path.exists(os.path.expanduser(s)))


def _local(arg: str, spec: str, path: str) -> Path:
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise FileNotFoundError(f"{arg}={spec!r}: no such file or directory: {p}")
    return p


# ---- language model ----------------------------------------------------------------------------------------
def _special_tokens_key(tok) -> tuple[str, dict]:
    """transformers >= 5 calls additional special tokens 'extra_special_tokens'; 4.x 'additional_special_tokens'."""
    import inspect

    params = inspect.signature(tok.add_special_tokens).parameters
    if "replace_extra_special_tokens" in params:
        return "extra_special_tokens", {"replace_extra_special_tokens": False}
    return "additional_special_tokens", {"replace_additional_special_tokens": False}


def _is_single_token(tok, text: str) -> bool:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return len(ids) == 1 and ids[0] == tok.convert_tokens_to_ids(text) and ids[0] != tok.unk_token_id


def adapt_tokenizer(tok, lm):
    """Give a real tokenizer what the world's prompts need (``<img>``, pad, bos) and resize the LM to match.

    Returns the number of tokens added.
    """
    from tokenizers import AddedToken

    if tok.eos_token is None:
        raise ValueError("lm: the tokenizer has no EOS token; the world's sequences end with eos_token_id")
    added = 0
    if not _is_single_token(tok, IMG):
        key, kw = _special_tokens_key(tok)
        added += tok.add_special_tokens({key: [AddedToken(IMG, special=True, normalized=False)]}, **kw)
    if tok.pad_token is None:
        added += tok.add_special_tokens({"pad_token": PAD_TOKEN})
    if tok.bos_token is None:  # World.encode starts every sequence with bos_token_id (GPT-2 / Qwen style: eos)
        tok.bos_token = tok.eos_token
    tok.padding_side = "right"
    emb = lm.get_input_embeddings()
    if len(tok) > emb.num_embeddings:
        lm.resize_token_embeddings(len(tok))
    lm.config.pad_token_id = tok.pad_token_id
    if getattr(lm, "generation_config", None) is not None:
        lm.generation_config.pad_token_id = tok.pad_token_id
    return added


def load_lm(lm: str, dtype=torch.float32):
    """(tokenizer, causal LM) from a ``save_pretrained`` directory or a hub id; no remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = str(lm)
    if _looks_like_path(src):
        p = _local("lm", src, src)
        if not p.is_dir():
            raise ValueError(f"lm={src!r}: expected a directory written by save_pretrained (config.json, weights, "
                             f"tokenizer files), got a file")
        src = str(p)
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(src, trust_remote_code=False)
    except OSError as e:
        raise OSError(f"lm={lm!r}: could not load a causal LM and its tokenizer (a local directory written by "
                      f"save_pretrained, or a hub id reachable from here / in the local cache): {e}") from e
    except ValueError as e:
        raise ValueError(f"lm={lm!r}: {e}") from e
    model = model.to(dtype).eval()
    adapt_tokenizer(tok, model)
    if not hasattr(getattr(model, "model", None), "layers"):
        warnings.warn(f"lm={lm!r}: {type(model).__name__} has no `.model.layers`; architectures that patch the "
                      f"LLM's decoder layers (LLaViT, HoVLE) need the Llama-family layout", stacklevel=3)
    return tok, model


# ---- vision encoders ---------------------------------------------------------------------------------------
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextmanager
def _timm_load_messages():
    """Collect what timm's weight loader logs (it reports missing/unexpected keys there when loading non-strictly)."""
    logger = logging.getLogger("timm.models._builder")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _keys_in(messages: list[str], what: str) -> list[str]:
    out = []
    for m in messages:
        hit = re.search(rf"{what} keys \((.*)\) (?:discovered|found)", m, flags=re.S)
        if hit:
            out += [k.strip() for k in hit.group(1).split(",") if k.strip()]
    return out


def _read_vit_weights(arg: str, spec: str, path: Path) -> dict:
    """A ViT state dict from a checkpoint file or a weights directory (timm's readers), MAE decoder keys dropped."""
    from timm.models import load_state_dict

    if path.is_dir():
        from timm.models._hub import load_state_dict_from_path

        try:
            sd = load_state_dict_from_path(path)
        except RuntimeError as e:
            raise FileNotFoundError(f"{arg}={spec!r}: no checkpoint file in {path}: {e}") from e
    else:
        if path.suffix not in VIT_WEIGHT_SUFFIXES:
            raise ValueError(f"{arg}={spec!r}: {path.name} is not a checkpoint ({', '.join(VIT_WEIGHT_SUFFIXES)})")
        sd = load_state_dict(str(path))
    if any(k.startswith("decoder_") for k in sd):  # official MAE checkpoint with its decoder: encoder keys only
        sd = {k: v for k, v in sd.items() if not k.startswith("decoder_") and k != "mask_token"}
    return sd


def _check_vit(vit, arg: str, spec: str):
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"{arg}={spec!r}: {type(vit).__name__} is not a timm VisionTransformer; VisionEncoder reads "
                         f"its patch_embed/pos_embed/blocks")
    n_cls = 0 if vit.cls_token is None else 1
    problems = []
    if vit.num_prefix_tokens != n_cls:
        problems.append(f"{vit.num_prefix_tokens - n_cls} register tokens")
    if getattr(vit, "no_embed_class", False) and n_cls:
        problems.append("position embeddings without the class token (no_embed_class)")
    if vit.pos_embed is None:
        problems.append("no absolute position embedding")
    if getattr(vit, "dynamic_img_size", False):
        problems.append("dynamic_img_size")
    gh, gw = vit.patch_embed.grid_size
    if gh != gw:
        problems.append(f"a non-square patch grid {gh}x{gw}")
    if problems:
        raise ValueError(f"{arg}={spec!r}: VisionEncoder supports ViTs with at most a class token and absolute "
                         f"position embeddings over it; this one has {', '.join(problems)}")


def vit_source(spec: str, arg: str = "cl") -> tuple[str, str, Path | None]:
    """Parse a ``cl``/``mim`` argument without loading anything: (name for timm.create_model, a description of
    the source, the local weights path of the ``"<timm name>@<path>"`` form or None). Raises on missing paths
    and unknown architecture names, naming the argument."""
    import timm

    spec = str(spec)
    name, _, where = spec.partition("@")
    if where and not _looks_like_path(name) and "/" not in name and "\\" not in name:
        if not timm.is_model(name):
            raise ValueError(f"{arg}={spec!r}: {name!r} is not a timm model name (e.g. 'vit_base_patch16_224.mae')")
        path = _local(arg, spec, where)
        return name, f"{name}@{path}", path
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, spec, None
    if _looks_like_path(spec):
        path = _local(arg, spec, spec)
        if path.is_file():
            raise ValueError(f"{arg}={spec!r} is a weights file without an architecture: write it as "
                             f"'<timm model name>@{spec}' (e.g. 'vit_base_patch16_224.mae@{spec}')")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{arg}={spec!r}: the directory has no timm config.json; write it as "
                                    f"'<timm model name>@{spec}' to name the architecture")
        return f"local-dir:{path}", str(path), None
    if not timm.is_model(spec):
        raise ValueError(f"{arg}={spec!r} is neither a timm model name nor an existing local path")
    return spec, spec, None


def load_vit(spec: str, arg: str = "cl", create_args: dict | None = None) -> tuple[VisionEncoder, str]:
    """A :class:`VisionEncoder` for a timm name, a timm hub-layout directory, or ``"<timm name>@<path>"``.

    Returns (encoder in eval mode, a description of where the weights came from).
    """
    import timm

    spec = str(spec)
    name, source, path = vit_source(spec, arg)
    kwargs = dict(create_args or {})
    kwargs["num_classes"] = 0
    if path is not None:
        if path.suffix == ".npz":  # big_vision weights: timm's own npz reader
            kwargs["pretrained_cfg_overlay"] = dict(file=str(path), custom_load=True)
        else:
            kwargs["pretrained_cfg_overlay"] = dict(state_dict=_read_vit_weights(arg, spec, path))
    try:
        with _timm_load_messages() as messages:
            vit = timm.create_model(name, pretrained=True, **kwargs)
    except (RuntimeError, ValueError, KeyError, AssertionError) as e:
        raise ValueError(f"{arg}={spec!r}: timm could not build the model or load its weights: {e}") from e
    except OSError as e:
        raise OSError(f"{arg}={spec!r}: could not fetch the weights (a hub name needs the hub or its local cache; "
                      f"prefer '<timm name>@<local file>' or a local directory): {e}") from e
    missing = _keys_in(messages, "Missing")
    if missing:
        raise ValueError(f"{arg}={spec!r}: the checkpoint lacks weights of the architecture: {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''} (wrong architecture name or {arg}_args?)")
    unexpected = _keys_in(messages, "Unexpected")
    if unexpected:
        warnings.warn(f"{arg}={spec!r}: checkpoint keys the architecture does not use were ignored: "
                      f"{unexpected[:8]}", stacklevel=3)
    _check_vit(vit, arg, spec)
    (vit.pretrained_cfg or {}).pop("state_dict", None)  # the in-memory checkpoint handed to timm: do not keep it
    enc = VisionEncoder(vit, **vit_preprocessing(vit))
    return enc.eval(), source


def vit_preprocessing(vit) -> dict:
    """The image preprocessing a timm ViT was trained with, from its data config (``resolve_model_data_config``):
    pixel mean and std, and the resize interpolation. Its centre crop is left out on purpose: a world scene fills
    its square canvas, and a crop would cut objects at the border out of the questions' reach."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(vit)
    mode = cfg.get("interpolation") if cfg.get("interpolation") in ("bicubic", "bilinear", "nearest") else "bilinear"
    return {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]), "interpolation": mode}


# ---- MAE decoder -------------------------------------------------------------------------------------------
DECODER_DIMS = ("enc_dim", "dim", "depth", "heads", "n_patches", "patch_pixels")


def save_mae_decoder(decoder: MAEDecoder, path) -> Path:
    """Write ``<path>.safetensors`` (state dict) and ``<path>.json`` (dims) for ``mae_decoder=``."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = dict(enc_dim=decoder.embed.in_features, dim=decoder.embed.out_features, depth=len(decoder.blocks),
                heads=decoder.blocks[0].attn.num_heads if len(decoder.blocks) else 1,
                n_patches=decoder.pos.shape[1] - 1, patch_pixels=decoder.head.out_features)
    save_file({k: v.detach().contiguous() for k, v in decoder.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(dims, indent=1))
    return path


def _convert_official_mae_decoder(sd: dict, heads: int) -> tuple[dict, dict]:
    """FAIR MAE names (decoder_embed, decoder_blocks.i, decoder_norm, decoder_pred, mask_token,
    decoder_pos_embed) -> MAEDecoder names, and the dims the weights imply."""
    rename = {"decoder_embed.": "embed.", "decoder_blocks.": "blocks.", "decoder_norm.": "norm.",
              "decoder_pred.": "head."}
    out = {}
    for k, v in sd.items():
        if k == "mask_token":
            out["mask_token"] = v
        elif k == "decoder_pos_embed":
            out["pos"] = v
        else:
            for old, new in rename.items():
                if k.startswith(old):
                    out[new + k[len(old):]] = v
    w = out["embed.weight"]
    depth = len({k.split(".")[1] for k in out if k.startswith("blocks.")})
    dims = dict(enc_dim=w.shape[1], dim=w.shape[0], depth=depth, heads=heads, n_patches=out["pos"].shape[1] - 1,
                patch_pixels=out["head.weight"].shape[0])
    return out, dims


def load_mae_decoder(path, mim: VisionEncoder, spec: str | None = None) -> MAEDecoder:
    """The MAE decoder for ``mim`` from our safetensors+json or an official MAE checkpoint (see module doc)."""
    from safetensors.torch import load_file

    spec = str(path) if spec is None else spec
    p = _local("mae_decoder", spec, str(path))
    if p.is_dir():
        p = p / "decoder.safetensors"
        if not p.is_file():
            raise FileNotFoundError(f"mae_decoder={spec!r}: the directory holds no decoder.safetensors")
    side = p.with_suffix(".json")
    dims = json.loads(side.read_text()) if side.is_file() else None
    if p.suffix == ".safetensors":
        sd = load_file(str(p))
    else:
        from timm.models import load_state_dict

        sd = load_state_dict(str(p))
    if any(k.startswith("decoder_") for k in sd):
        sd, implied = _convert_official_mae_decoder(sd, int((dims or {}).get("heads", MAE_DECODER_HEADS)))
        dims = implied
    elif dims is None:
        raise FileNotFoundError(f"mae_decoder={spec!r}: its dimensions file {side} is missing (write both with "
                                f"save_mae_decoder)")
    miss = [k for k in DECODER_DIMS if k not in dims]
    if miss:
        raise ValueError(f"mae_decoder={spec!r}: {side.name} lacks {miss}")
    n_patches, patch = mim.grid ** 2, mim.vit.patch_embed.patch_size[0]
    if dims["enc_dim"] != mim.dim:
        raise ValueError(f"mae_decoder={spec!r}: it reads {dims['enc_dim']}-d encoder tokens, the MIM ViT makes "
                         f"{mim.dim}-d ones")
    if dims["patch_pixels"] != patch * patch * 3:
        raise ValueError(f"mae_decoder={spec!r}: it predicts {dims['patch_pixels']} values per patch, the MIM ViT's "
                         f"patch {patch} has {patch * patch * 3}")
    if dims["n_patches"] != n_patches:  # e.g. a 224-px decoder for a MIM ViT resampled to the world's 64 px
        from timm.layers import resample_abs_pos_embed

        sd["pos"] = resample_abs_pos_embed(sd["pos"], new_size=(mim.grid, mim.grid), num_prefix_tokens=1)
    dec = MAEDecoder(dims["enc_dim"], dims["dim"], dims["depth"], dims["heads"], n_patches, dims["patch_pixels"])
    try:
        dec.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"mae_decoder={spec!r}: the weights do not fit the dimensions {dims}: {e}") from e
    return dec.eval()


# ---- the entry point ---------------------------------------------------------------------------------------
def load_real_backbones(lm: str, cl: str, mim: str | None = None, mae_decoder: str | None = None, device="cpu",
                        mae_mask_ratio: float = 0.75, *, cl_args: dict | None = None, mim_args: dict | None = None,
                        dtype=torch.float32, mae_norm_pix: bool = False) -> RealBackbones:
    """Backbones from real checkpoints (see the module docstring for the accepted forms of each argument).

    ``lm``: a ``save_pretrained`` directory or a transformers model id (no remote code); the tokenizer gains
    ``<img>`` (and a pad token) and the LM's embeddings grow to match. ``cl``/``mim``: a timm name, a timm
    hub-layout directory, or ``"<timm name>@<local checkpoint>"``; ``cl_args``/``mim_args`` go to
    ``timm.create_model``. ``mae_decoder``: a local MAE decoder checkpoint; without it ``mim_decoder`` is None
    and X-Former's reconstruction objective cannot run. ``mim=None`` leaves ``Backbones.mim`` None.
    ``patch`` is the MIM ViT's patch size (the MAE target's), else the CL ViT's. ``mae_norm_pix``: whether the
    decoder was trained on per-patch normalised pixels (MAE's ``norm_pix_loss``; the official ``mae_visualize_*``
    checkpoints were not).

    Use the returned tokenizer for the world's text: ``world.tokenizer = backbones.tokenizer``.
    """
    # check every argument before loading anything (a wrong ViT path should not wait for a large LM to load)
    if _looks_like_path(str(lm)):
        _local("lm", str(lm), str(lm))
    vit_source(cl, "cl")
    if mim is not None:
        vit_source(mim, "mim")
    if mae_decoder is not None:
        if mim is None:
            raise ValueError("mae_decoder is given but mim is None: the decoder reconstructs from the MIM ViT's tokens")
        _local("mae_decoder", str(mae_decoder), str(mae_decoder))
    tok, model = load_lm(lm, dtype=dtype)
    enc_cl, src_cl = load_vit(cl, "cl", cl_args)
    paths = {"lm": str(lm), "cl": src_cl}
    enc_mim = dec = None
    if mim is not None:
        enc_mim, paths["mim"] = load_vit(mim, "mim", mim_args)
    if mae_decoder is not None:
        dec = load_mae_decoder(mae_decoder, enc_mim)
        paths["mae_decoder"] = str(mae_decoder)
    patch = (enc_mim if enc_mim is not None else enc_cl).vit.patch_embed.patch_size[0]
    bb = RealBackbones(tok, model, enc_cl.to(dtype), enc_mim.to(dtype) if enc_mim is not None else None,
                       dec.to(dtype) if dec is not None else None, patch, mae_mask_ratio, paths, {}, mae_norm_pix)
    return bb.to(torch.device(device))


# ---- tiny checkpoints for tests ----------------------------------------------------------------------------
def _tiny_tokenizer(world, vocab_size: int = 400):
    """A byte-level BPE trained on the world's text, with BOS/EOS but no pad and no ``<img>`` (like a real one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = ["image : scene : caption : question : answer :"]
    for s in world.samples("train", 0, 96):
        texts += [s.scene_text, s.qa.question, s.qa.answer, world.caption(s)]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")


def tiny_vit(img_size: int, patch: int, dim: int = 32, depth: int = 2, heads: int = 2, **overlay):
    """A tiny timm ViT (architecture ``vit_tiny_patch16_224``, resized) with random weights."""
    import timm

    return timm.create_model(TINY_VIT_ARCH, pretrained=False, img_size=img_size, patch_size=patch, embed_dim=dim,
                             depth=depth, num_heads=heads, num_classes=0, pretrained_cfg_overlay=overlay or None)


def save_tiny_checkpoints(directory, seed: int = 0) -> dict:
    """Tiny random checkpoints in the formats real ones come in, for offline tests of the loaders.

    Writes ``lm/`` (a LlamaForCausalLM + a byte-level BPE tokenizer without ``<img>`` or pad, both with
    ``save_pretrained``), ``cl/`` (a tiny ViT in timm's hub layout: config.json + model.safetensors, 32-px input,
    patch 8, CLIP mean/std), ``mim.safetensors`` (a tiny ViT's bare state dict, 64-px input, patch 16: load it
    as ``"vit_tiny_patch16_224@<file>"`` with ``mim_args``) and ``mae_decoder.safetensors`` + ``.json``.

    Returns {"lm", "cl", "mim", "mae_decoder": argument strings for load_real_backbones, "mim_args": dict,
    "mim_file": the bare file}.
    """
    from safetensors.torch import save_file
    from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from timm.models import save_for_hf
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..world import World

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    world = World(seed=seed)
    tok = _tiny_tokenizer(world)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d / "lm", safe_serialization=True)
    tok.save_pretrained(d / "lm")

    cl = tiny_vit(32, 8, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    save_for_hf(cl, str(d / "cl"), safe_serialization=True)

    mim_args = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)
    mim = tiny_vit(64, 16)
    save_file({k: v.contiguous() for k, v in mim.state_dict().items()}, str(d / "mim.safetensors"))
    dec = MAEDecoder(32, 32, 1, 2, mim.patch_embed.num_patches, 16 * 16 * 3)
    save_mae_decoder(dec, d / "mae_decoder.safetensors")
    return {"lm": str(d / "lm"), "cl": str(d / "cl"), "mim": f"{TINY_VIT_ARCH}@{d / 'mim.safetensors'}",
            "mae_decoder": str(d / "mae_decoder.safetensors"), "mim_args": mim_args,
            "mim_file": str(d / "mim.safetensors")}


__all__ = ["RealBackbones", "load_real_backbones", "load_lm", "load_vit", "vit_source", "load_mae_decoder",
           "save_mae_decoder", "adapt_tokenizer", "save_tiny_checkpoints", "tiny_vit"]
