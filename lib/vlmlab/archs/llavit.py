"""LLaViT: the LLM as an extended vision transformer.

Kim, Ranjan, Nagata, Dhua, K C, "Rethinking Visual Information Processing in Multimodal LLMs"
(LLaViT: Large Language Models as extended Vision Transformers), arXiv 2511.10301.

The paper argues that a LLaVA-style LLM spends its early layers "translating" visual tokens it was never
trained to read, and that attention among visual tokens matters. It keeps LLaVA (CLIP ViT -> 2-layer GELU MLP
-> LLM) and makes the LLM act on visual tokens like a ViT, with three changes:

1. **Global + local features.** Patch features of several ViT blocks (an early, a middle and the penultimate one)
   are concatenated on *channels*: the projector reads |L| * d_vit per patch and the visual token count is
   LLaVA's.
2. **Modality-specific QKV.** In every LLM layer a visual token's query, key and value come from separate
   visual projections W_Q^vis, W_K^vis, W_V^vis (copy-initialised from the text ones, biases included); text
   tokens keep the LLM's own. The output projection, MLP, norms and RoPE stay shared. Tokens are routed by a
   per-sample modality mask (``ModalityRouter``), never by absolute position.
3. **Bidirectional attention within each image**: an image's tokens see each other; text stays causal, and an
   image never sees another image or later text (``vlmlab.attention.allowed_mask``), so next-token training
   stays valid with interleaved images.

Training (LLaVA's two stages): pre-training trains the projector and the visual QKV on image descriptions;
instruction tuning trains the LLM (visual QKV included) and the projector on VQA.

Substitutes in the tiny world:

- Feature blocks. The paper reads blocks 5, 15, 23 of a 24-block ViT-L (HF ``hidden_states`` numbering, i.e.
  the outputs of 0-indexed blocks 4, 14, 22; 23 = LLaVA's penultimate layer). We scale the early and middle
  blocks by depth fraction, ``round(k / 24 * depth) - 1`` for k = 5, 15, and take the penultimate block
  (``depth - 2``) as the global one: the default 4-block ViT reads blocks 0, 1, 2; the ``full`` budget's 8-block
  ViT reads 1, 4, 6; a 24-block ViT reads 4, 14, 22 (the paper's). Duplicates are dropped, so the smoke
  budget's 2-block ViT reads block 0 only whatever the layer set.
- Pre-training data: the paper uses PixMo-Cap dense captions; we use the world's full scene text ("describe").
- The visual QKV learn at the LLM learning rate in both stages (they are LLM weights, copy-initialised); the
  paper does not say (our choice).
- The world has one image per sample; the per-image bidirectional block and the routing are written for any
  number of images per sequence and tested with two hand-built image spans.

Checkpointing note: the visual Linears are registered once, on the VLM (``visual_qkv``); the routing wrappers
inside the LLM keep the text weights under the LLM's own parameter names and only *reference* the visual
Linears, so ``state_dict`` holds no shared tensors (safetensors can save it) and the LLM's names match LLaVA's.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import ATTENTION_TYPES, additive_mask, allowed_mask, image_span_ids
from ..train import Stage
from .base import VLM, Knobs, knob, frozen_copy
from .llava import mlp_connector

LAYER_SETS = ("global", "local", "both")
PAPER_BLOCKS, PAPER_DEPTH = (5, 15, 23), 24  # paper's feature blocks (hidden_states numbering) of a 24-block ViT


def _valid_layers(v: str) -> bool:
    if v in LAYER_SETS:
        return True
    try:
        return len([int(s) for s in v.split(",")]) > 0
    except ValueError:
        return False


def feature_blocks(layers: str, depth: int) -> list[int]:
    """The 0-indexed ViT blocks read for a layer set (see the module docstring for the scaling), ascending."""
    early = max(0, round(PAPER_BLOCKS[0] / PAPER_DEPTH * depth) - 1)
    middle = max(0, round(PAPER_BLOCKS[1] / PAPER_DEPTH * depth) - 1)
    penultimate = max(0, depth - 2)
    if layers == "global":
        want = [penultimate]
    elif layers == "local":
        want = [early]
    elif layers == "both":
        want = [early, middle, penultimate]
    else:
        want = [int(s) for s in layers.split(",")]
        bad = [b for b in want if not -depth <= b < depth]
        if bad:
            raise ValueError(f"knob 'layers' of arch='llavit' got {layers!r}; the ViT has {depth} blocks: block "
                             f"indices must lie in {-depth}..{depth - 1}")
        want = [b % depth for b in want]
    return sorted(set(want))


@dataclass
class LLaViTKnobs(Knobs):
    layers: str = knob("both", check=(_valid_layers, "'global', 'local', 'both' or comma-separated ViT block "
                                                      "indices such as '0,2'"),
                       doc="ViT blocks concatenated on channels: global = penultimate, local = an early block, both "
                           "= early + middle + penultimate (the paper's 5/15/23 of 24, scaled to the ViT depth)")
    connector_depth: int = knob(2, check=(lambda v: 1 <= v <= 4, "between 1 and 4"),
                                doc="projector MLP depth: 2 = mlp2x_gelu (LLaVA-1.5, as the paper)")
    attention: str = knob("bidirectional", choices=ATTENTION_TYPES,
                          doc="LLM attention among an image's tokens: bidirectional within each image (LLaViT) or "
                              "causal (LLaVA)")
    visual_qkv: str = knob("separate", choices=("separate", "shared"),
                           doc="separate W_Q/W_K/W_V for visual tokens in every LLM layer (LLaViT), or shared with "
                               "text (LLaVA)")
    visual_qkv_init: str = knob("copy", choices=("copy", "random"),
                                doc="visual QKV initialised as a copy of the text QKV (LLaViT) or at random")
    visual_qkv_stages: str = knob("align+instruct", choices=("align+instruct", "instruct"),
                                  doc="stages in which the visual QKV train: pre-training and instruction tuning "
                                      "(LLaViT) or instruction tuning only")

    def validate(self, arch: str) -> None:
        if self.visual_qkv == "shared":
            if self.visual_qkv_init != "copy":
                raise ValueError(f"knob 'visual_qkv_init' of arch={arch!r} applies only with visual_qkv='separate' "
                                 f"(got visual_qkv='shared', visual_qkv_init={self.visual_qkv_init!r}); with "
                                 f"visual_qkv='shared' the allowed value is 'copy'")
            if self.visual_qkv_stages != "align+instruct":
                raise ValueError(f"knob 'visual_qkv_stages' of arch={arch!r} applies only with "
                                 f"visual_qkv='separate' (got visual_qkv='shared', "
                                 f"visual_qkv_stages={self.visual_qkv_stages!r}); with visual_qkv='shared' the "
                                 f"allowed value is 'align+instruct'")


class ModalityRouter:
    """Holds the modality mask of the LLM call in progress: [B, L] bool, True at visual tokens, and the flat
    indices of its visual tokens (computed once per call, shared by every routed projection)."""

    def __init__(self):
        self.mask: torch.Tensor | None = None
        self.visual_index: torch.Tensor | None = None

    def set(self, mask: torch.Tensor | None):
        self.mask = None if mask is None else mask.bool()
        self.visual_index = None if mask is None else self.mask.flatten().nonzero().flatten()  # [n_visual_total]


class ModalityLinear(nn.Linear):
    """A text Linear (the LLM's own q/k/v_proj, same Parameters, same names) plus a reference to its visual twin.

    Each token takes the visual projection where the router's mask is True, the text one elsewhere. The visual
    Linear is registered on the VLM (``visual_qkv``), not here, so no parameter is registered twice.
    """

    def __init__(self, text: nn.Linear, visual: nn.Linear, router: ModalityRouter):
        nn.Module.__init__(self)
        self.in_features, self.out_features = text.in_features, text.out_features
        self.weight = text.weight
        self.bias = text.bias  # None when the LLM has no QKV bias (Llama); Qwen2.5-style biases are kept
        self.router = router
        self._visual = (visual,)  # a tuple: referenced, not registered

    @property
    def visual(self) -> nn.Linear:
        return self._visual[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, L, d] -> [B, L, d_out]
        mask = self.router.mask
        if mask is None:
            raise RuntimeError("LLaViT's LLM needs the modality mask of its input: call it inside "
                               "`model.modality(visual_mask)` (VLM.run_lm does this)")
        if mask.shape != x.shape[:2]:
            raise RuntimeError(f"modality mask {tuple(mask.shape)} does not match the LLM input {tuple(x.shape[:2])}")
        B, L = mask.shape
        idx = self.router.visual_index  # flat positions of the visual tokens
        out = F.linear(x, self.weight, self.bias).flatten(0, 1)  # [B*L, d_out], text projection everywhere
        vis = self.visual(x.flatten(0, 1).index_select(0, idx))  # [n_visual_total, d_out]
        # overwrite the visual rows (cheaper than computing both projections everywhere and selecting with
        # torch.where). A text-only input still runs the visual Linear on zero rows, so its weights get an exact
        # zero gradient (not None): the "zero-contribution term" DDP needs for unused parameters
        return out.index_copy(0, idx, vis.to(out.dtype)).view(B, L, -1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, routed: text | visual"


class LLaViT(VLM):
    arch = "llavit"
    KnobsClass = LLaViTKnobs

    def __init__(self, backbones, knobs: LLaViTKnobs, budget):
        super().__init__(backbones, knobs, budget)
        self.vision = frozen_copy(backbones.cl)
        self.blocks = feature_blocks(knobs.layers, self.vision.depth)
        self.connector = mlp_connector(len(self.blocks) * self.vision.dim, self.d_lm, knobs.connector_depth)
        self.router = ModalityRouter()
        if knobs.visual_qkv == "separate":
            self.visual_qkv = nn.ModuleList()
            for layer in self.lm.model.layers:
                attn = layer.self_attn
                twins = nn.ModuleDict()
                for key in ("q", "k", "v"):
                    text = getattr(attn, f"{key}_proj")
                    vis = copy.deepcopy(text)  # weights and bias copied
                    if knobs.visual_qkv_init == "random":
                        std = getattr(self.lm.config, "initializer_range", 0.02)
                        nn.init.normal_(vis.weight, std=std)
                        if vis.bias is not None:
                            nn.init.zeros_(vis.bias)
                    vis.requires_grad_(False)
                    twins[key] = vis
                    setattr(attn, f"{key}_proj", ModalityLinear(text, vis, self.router))
                self.visual_qkv.append(twins)

    # ---- visual input -----------------------------------------------------------------------------------
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.vision(pixel_values, layers=self.blocks)  # |L| x [B, N, d_vit]
        return torch.cat(feats, dim=-1)  # [B, N, |L| * d_vit]: channels, not tokens

    def visual_tokens(self, pixel_values):
        return self.connector(self.features(pixel_values)), {}  # [B, N, d_lm]

    # ---- LLM call with routing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def modality(self, visual_mask: torch.Tensor):
        """Route the LLM's q/k/v per token for the calls inside: visual_mask [B, L] (True = visual token)."""
        old = self.router.mask
        self.router.set(visual_mask)
        try:
            yield
        finally:
            self.router.set(old)

    def run_lm(self, inputs: dict, output_attentions: bool = False):
        with self.modality(inputs["visual_mask"]):
            return super().run_lm(inputs, output_attentions)

    def allowed(self, inputs: dict) -> torch.Tensor:
        """Boolean [B, L, L] mask the LLM uses (bidirectional within each image span, or causal)."""
        return allowed_mask(inputs["attention_mask"], image_span_ids(inputs["visual_mask"]),
                            bidirectional=self.attention == "bidirectional")

    @torch.no_grad()
    def cached_logits(self, inputs: dict, chunks: list[int] | None = None) -> torch.Tensor:
        """Logits [B, L, V] computed with the transformers KV cache, feeding ``inputs`` in chunks.

        ``chunks`` are the chunk lengths (default: everything up to the end of the last image in one prefill
        chunk, then one token at a time). Each chunk gets its rows of the full mask and its slice of the modality
        mask, so visual K/V enter the cache computed with the visual weights. An image must lie inside one chunk:
        feeding its tokens one by one would silently make them causal (tested).
        """
        from transformers import DynamicCache

        emb, vm = inputs["inputs_embeds"], inputs["visual_mask"]
        L = emb.shape[1]
        if chunks is None:
            has = vm.any(0).nonzero()
            end = int(has.max()) + 1 if len(has) else 1
            chunks = [end] + [1] * (L - end)
        if sum(chunks) != L:
            raise ValueError(f"chunks {chunks} must sum to the sequence length {L}")
        allowed = self.allowed(inputs)  # [B, L, L]
        cache, out, s = DynamicCache(), [], 0
        for n in chunks:
            e = s + n
            mask = additive_mask(allowed[:, s:e, :e], emb.dtype)  # [B, 1, n, e]
            with self.modality(vm[:, s:e]):
                o = self.lm(inputs_embeds=emb[:, s:e], attention_mask=mask, past_key_values=cache, use_cache=True,
                            position_ids=torch.arange(s, e, device=emb.device)[None].expand(emb.shape[0], -1))
            cache = o.past_key_values
            out.append(o.logits)
            s = e
        return torch.cat(out, dim=1)

    # ---- training ---------------------------------------------------------------------------------------
    def stages(self):
        b = self.budget
        separate = self.knobs.visual_qkv == "separate"
        vis = ("visual_qkv",) if separate else ()
        align_vis = vis if self.knobs.visual_qkv_stages == "align+instruct" else ()
        return [
            Stage("align", ("connector",) + align_vis, task="describe", share=0.3,
                  lr={"visual_qkv": b.llm_lr} if align_vis else {}),
            Stage("instruct", ("connector", "lm") + vis, task="qa", share=0.7,
                  lr={"lm": b.llm_lr, **({"visual_qkv": b.llm_lr} if separate else {})}),
        ]

    # ---- diagnostics ------------------------------------------------------------------------------------
    def visual_qkv_drift(self) -> dict:
        """||W_vis - W_text|| / ||W_text|| per projection (weights and biases together), mean over LLM layers."""
        if self.knobs.visual_qkv != "separate":
            return {}
        out = {}
        for key in ("q", "k", "v"):
            vals = []
            for layer, twins in zip(self.lm.model.layers, self.visual_qkv):
                text, vis = getattr(layer.self_attn, f"{key}_proj"), twins[key]
                t = torch.cat([text.weight.flatten()] + ([text.bias] if text.bias is not None else []))
                v = torch.cat([vis.weight.flatten()] + ([vis.bias] if vis.bias is not None else []))
                vals.append(float((v - t).norm() / t.norm().clamp(min=1e-12)))
            out[key] = sum(vals) / len(vals)
        return out

    @torch.no_grad()
    def visual_to_later_visual_attention(self, batch: dict) -> float:
        """Mean attention mass a visual query puts on later visual keys of its image (over layers, heads, queries,
        samples): zero under causal attention, the bidirectional part of the block otherwise."""
        out = self.forward_with_attentions(batch)
        att = torch.stack(out["attentions"]).mean(dim=(0, 2)).float()  # [B, L, L]
        ids = image_span_ids(out["visual_mask"])  # [B, L]
        L = att.shape[-1]
        later = torch.ones(L, L, dtype=torch.bool, device=att.device).triu(1)  # key after query
        same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, :, None] > 0)  # [B, L, L]
        mass = (att * (same & later)).sum(-1)  # [B, L]
        vm = out["visual_mask"]
        return float(mass[vm].mean()) if vm.any() else 0.0

    @torch.no_grad()
    def diagnostics(self, batch: dict) -> dict:
        d = super().diagnostics(batch)
        d["visual_to_later_visual_attention_mass"] = self.visual_to_later_visual_attention(batch)
        drift = self.visual_qkv_drift()
        if drift:
            d["visual_qkv_relative_diff"] = drift
            d["visual_qkv_relative_diff_mean"] = sum(drift.values()) / len(drift)
        d["feature_blocks"] = list(self.blocks)
        return d
