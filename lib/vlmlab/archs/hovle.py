"""HoVLE (Tao et al., "HoVLE: Unleashing the Power of Monolithic Vision-Language Models with Holistic
Vision-Language Embedding", arXiv 2412.16158, CVPR 2025).

The idea: a *monolithic* VLM has no separate vision encoder. A small *holistic embedding module* takes raw
image patches and text token ids into one shared space: its own patch embedding (+ absolute position
embedding, 2x2 pixel shuffle, MLP) and its own text embedding table feed a few causal Transformer layers of the
*same block definition as the LLM*; the module's output at *every* position, text and image alike, becomes the
LLM's ``inputs_embeds`` (the LLM's own input table is bypassed). At inference the model is one causal decoder
whose first layers also embed pixels and words. Training makes this work without paired data first:
Stage I *distils* the module on unpaired images and text: image outputs towards a pretrained vision encoder +
projector whose outputs live in the LLM's input space (z_I), text outputs towards the frozen LLM's input
embedding row of the same token id (z_T, context-free), with a negative-cosine loss; Stage II aligns it
(module trains, LLM frozen, next-token CE on image-text data); Stage III tunes everything on instructions.

Forward ("pre", the standard HoVLE)::

    pixels [B,3,H,W] -> normalise -> Conv2d(k=s=p) [B, g*g, d] (+ learnable abs. pos. [1, g*g, d])
      -> pixel shuffle 2x2 [B, (g/2)^2, 4d] -> Linear(4d,d), GELU, Linear(d,d) [B, n_img, d]
    ids [B, L] -> own text table [B, L, d]; ``<img>`` stays as a begin-of-image marker, followed by the n_img
      image slots: module sequence [B, L + n_img, d]
    -> n_embed_layers LlamaDecoderLayers (the LLM's config, 1-D RoPE ids arange(L'), causal), no final norm
      [B, L', d] -> (optional per-token L2 normalisation) -> LLM inputs_embeds -> LLM (causal) -> logits.

``pixel_shuffle="post"`` (HoVLE-HD): the module sees the un-shuffled g*g patches (module sequence
L + g*g) and the shuffle + MLP run after its layers; the LLM still gets n_img tokens per image, so the two
stacks have different lengths and position ids.

Substitutes for the tiny world (what the paper reports: docs/papers.md):

- Patch size p = half the backbone ViT patch (8 px on 64 px images -> an 8x8 grid, 64 patch embeddings);
  the 2x2 shuffle gives 16 image tokens, each exactly one 16-px cell = one ViT patch token of the teacher,
  in raster order (token-aligned with it, as the paper requires of its 14-px / 448-px tiles). No tiling and
  no thumbnail (the world has one fixed 64x64 image), so no position-embedding interpolation either.
- The teacher (z_I): the paper uses a pretrained encoder + projector already in the LLM's input space
  (InternViT + MLP of InternVL2 for the same LLM). We have none, so the first stage "teacher" trains one
  exactly as LLaVA's alignment stage does: frozen CL ViT, penultimate block -> ``mlp2x_gelu`` connector,
  LLM frozen, next-token CE on "describe". The teacher is frozen after its stage and never used at inference.
- Unpaired distillation data: the paper distils on random images and random text. Ours: batches of the LM's
  own text corpus ("scene_lm": scene text, question and answer, so every word the model will read is
  distilled) with the images rolled by one sample (each text comes with another sample's image), laid out as
  at inference: "<bos> scene : <img> [16 image slots] scene : ... question : ... answer : ..." (the exact
  layout is a gap in the sources). The ``<img>`` marker (the LLM's row for it was never trained) is excluded from
  the loss, as HoVLE's ``get_ignore_mask`` excludes ``<img>``/``</img>``; the world's vocabulary has no
  ``</img>``, so an image span is ``<img>`` followed by its 16 slots.
- n_embed_layers defaults to 2 for the 4-layer tiny LLM (the paper: 8 for a 24-layer LLM, i.e. 1/3 of its depth,
  which would be 1.3 layers here; we round up to 2).
- Initialisation (the sources are silent, [I]): ``text_init="copy"`` starts the module's text table as a copy of
  the LLM's input embeddings (a head start the tiny budget needs; "random" = N(0, initializer_range));
  ``layer_init="random"`` (LLM-style N(0, initializer_range)) or "copy" of the LLM's first layers.
- The teacher stage costs steps the paper does not spend (its teacher is given): shares of
  ``budget.vlm_steps`` are teacher 0.15, distill 0.1, align 0.15, instruct 0.6 (with the earlier default
  schedule of 600 steps of 64, distillation converged within ~50 steps and the teacher's describe loss
  plateaued by ~80). When a distillation target is switched off the unused stage's share goes to the next
  module-only stage (teacher -> distill -> align), so instruction tuning gets the same steps in every ablation.
- Incremental decoding keeps two KV caches (module and LLM) as HoVLE does (``prefill`` / ``decode_step``);
  it requires unpadded rows (batch of one, or equal lengths).
- ``embed_attention="bidirectional"`` (within each image span, inside the module only) is *not* in the paper
  (HoVLE is causal everywhere); it is the workbook's attention-type ablation. The LLM always stays causal.

Diagnostics (besides answer-to-image attention): distillation cosines on the batch (module image tokens vs the
teacher's, module text outputs vs the LLM's embedding rows), and mean per-token norms of the module's outputs
(image, text) next to the teacher's and the LLM's embedding norms: cosine distillation leaves norms free, so
Stage II/III must fix the scale, and these numbers show whether they did. Parameter counts include the frozen
teacher ViT and connector (training only; not used at inference).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from ..attention import ATTENTION_TYPES, additive_mask, allowed_mask, image_span_ids
from ..train import Stage
from ..world import IMAGE_PROMPT
from .base import VLM, Knobs, batch_knob, knob, splice, steps_knob
from .llava import mlp_connector

DISTILL = ("both", "image", "text", "none")
DISTILL_LOSSES = ("neg_cosine", "mse", "smooth_l1")
# stage shares of budget.vlm_steps (see the docstring); dropped stages hand their share to the next one
SHARES = {"teacher": 0.15, "distill": 0.1, "align": 0.15, "instruct": 0.6}
TEACHER_LAYER = -2  # the teacher reads the CL ViT's penultimate block, as LLaVA-1.5 does


@dataclass
class HoVLEKnobs(Knobs):
    n_embed_layers: int = knob(2, check=(lambda v: 0 <= v <= 16, "between 0 and 16"),
                               doc="decoder layers in the holistic embedding module (paper: 8 for a 24-layer LLM; "
                                   "2 for our 4-layer LLM); 0 = embeddings only")
    embed_attention: str = knob("causal", choices=ATTENTION_TYPES,
                                doc="attention inside the module: causal (HoVLE) or bidirectional within each "
                                    "image span (not in the paper); the LLM always stays causal")
    distill: str = knob("both", choices=DISTILL,
                        doc="Stage I distillation targets: image (teacher connector outputs), text (LLM input "
                            "embedding rows), both (paper), none (no Stage I)")
    distill_loss: str = knob("neg_cosine", choices=DISTILL_LOSSES,
                             doc="distillation loss: negative cosine (paper, scale-free), MSE or smooth-L1")
    normalize_output: bool = knob(False, doc="L2-normalise each module output token before the LLM "
                                             "(normalize_encoder_output; config-class default False)")
    text_init: str = knob("copy", choices=("copy", "random"),
                          doc="module text table init: copy of the LLM's input embeddings, or random")
    layer_init: str = knob("random", choices=("random", "copy"),
                           doc="module layers init: random (LLM-style normal) or a copy of the LLM's first layers")
    pixel_shuffle: str = knob("pre", choices=("pre", "post"),
                              doc="2x2 pixel shuffle + MLP before the module's layers (HoVLE) or after them "
                                  "(HoVLE-HD: the module sees 4x more image tokens)")
    teacher_steps: int = steps_knob("the teacher stage", "e.g. LLaVA's 720 alignment steps: the paper's teacher "
                                                         "is given")
    distill_steps: int = steps_knob("Stage I", "e.g. the CL ViT's 800: the paper distils at pretraining scale")
    distill_batch: int = batch_knob("Stage I", "e.g. 128, the CL ViT's")

    def validate(self, arch: str) -> None:
        if self.embed_attention == "bidirectional" and self.n_embed_layers == 0:
            raise ValueError(f"knob 'embed_attention'='bidirectional' of arch={arch!r} needs knob "
                             f"'n_embed_layers' >= 1 (with 0 layers the module has no attention); use "
                             f"embed_attention='causal' or n_embed_layers in 1..16")
        if self.pixel_shuffle == "post" and self.n_embed_layers == 0:
            raise ValueError(f"knob 'pixel_shuffle'='post' of arch={arch!r} needs knob 'n_embed_layers' >= 1 "
                             f"(with 0 layers 'pre' and 'post' are the same model); use pixel_shuffle='pre'")


def pixel_shuffle(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Concatenate each 2x2 neighbourhood: [B, g*g, d] (raster order) -> [B, (g/2)^2, 4d].

    Output token k = (g/2)*r + c holds patches (2r+dy, 2c+dx) for (dy, dx) in (0,0), (0,1), (1,0), (1,1), in
    that order along the channels; output tokens are in raster order of the (g/2)x(g/2) grid.
    """
    B, N, d = x.shape
    h = grid // 2
    x = x.reshape(B, h, 2, h, 2, d).permute(0, 1, 3, 2, 4, 5)  # [B, r, c, dy, dx, d]
    return x.reshape(B, h * h, 4 * d)


def distill_loss_fn(kind: str, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean per-token distillation loss between student x [T, d] and target z [T, d].

    neg_cosine is the paper's -cos (so -1 when x = z, and invariant to positive rescaling of x); mse and
    smooth_l1 are 0 when x = z and depend on the scale.
    """
    if x.shape[0] == 0:
        return x.sum() * 0.0
    if kind == "neg_cosine":
        return -F.cosine_similarity(x.float(), z.float(), dim=-1).mean()
    if kind == "mse":
        return F.mse_loss(x.float(), z.float())
    if kind == "smooth_l1":
        return F.smooth_l1_loss(x.float(), z.float())
    raise ValueError(f"distill_loss={kind!r}; allowed values: {list(DISTILL_LOSSES)}")


class HolisticEmbedding(nn.Module):
    """Patch embedding + pixel-shuffle MLP + own text table + LLM-style causal decoder layers (no final norm)."""

    def __init__(self, lm_config, n_layers: int, vocab: int, image_size: int, patch: int, mean, std):
        super().__init__()
        cfg = copy.deepcopy(lm_config)
        cfg.num_hidden_layers = n_layers
        self.config = cfg
        d = cfg.hidden_size
        self.image_size, self.patch = image_size, patch
        self.grid = image_size // patch  # module patch grid g (8 in the default world)
        std_init = getattr(cfg, "initializer_range", 0.02)
        self.patch_embed = nn.Conv2d(3, d, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid ** 2, d) * std_init)
        self.shuffle_mlp = nn.Sequential(nn.Linear(4 * d, d), nn.GELU(), nn.Linear(d, d))
        self.text = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg, layer_idx=i) for i in range(n_layers)])
        self.rotary = LlamaRotaryEmbedding(cfg)
        self.register_buffer("mean", torch.as_tensor(mean).reshape(1, 3, 1, 1).clone(), persistent=False)
        self.register_buffer("std", torch.as_tensor(std).reshape(1, 3, 1, 1).clone(), persistent=False)
        for m in [self.text, *self.layers.modules()]:  # LLM-style init of the embedding table and the layers
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std_init)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, LlamaRMSNorm):
                nn.init.ones_(m.weight)

    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> patch embeddings + absolute position embeddings [B, g*g, d]."""
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        x = self.patch_embed((pixels - self.mean) / self.std)  # [B, d, g, g]
        return x.flatten(2).transpose(1, 2) + self.pos_embed  # [B, g*g, d]

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """[B, g*g, d] -> 2x2 pixel shuffle -> MLP -> [B, (g/2)^2, d]."""
        return self.shuffle_mlp(pixel_shuffle(x, self.grid))

    def run_layers(self, x: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache=None):
        """x [B, L, d], additive mask [B, 1, L, L_keys], position ids [B or 1, L] -> [B, L, d] (no final norm)."""
        if not len(self.layers):
            return x
        pe = self.rotary(x, position_ids)
        for layer in self.layers:
            x = layer(x, attention_mask=mask.to(x.dtype), position_ids=position_ids, position_embeddings=pe,
                      past_key_values=cache, use_cache=cache is not None)
        return x


class HoVLE(VLM):
    arch = "hovle"
    KnobsClass = HoVLEKnobs

    def __init__(self, backbones, knobs: HoVLEKnobs, budget):
        super().__init__(backbones, knobs, budget)
        vit = backbones.cl
        if vit.patch % 2:
            raise ValueError(f"HoVLE needs an even ViT patch size (the module uses half of it); got {vit.patch}")
        # teacher (training only): frozen CL ViT -> LLaVA mlp2x_gelu connector, trained in stage "teacher"
        self.teacher_vision = copy.deepcopy(vit)
        self.teacher_vision.requires_grad_(False)
        self.teacher = mlp_connector(vit.dim, self.d_lm, 2)
        self.n_image_tokens = vit.grid ** 2  # 16: one per 16-px cell, token-aligned with the teacher
        n_lm = self.lm.config.num_hidden_layers
        if knobs.layer_init == "copy" and knobs.n_embed_layers > n_lm:
            raise ValueError(f"knob 'layer_init'='copy' of arch='hovle' copies the LLM's first layers, but knob "
                             f"'n_embed_layers'={knobs.n_embed_layers} > the LLM's {n_lm} layers; use "
                             f"n_embed_layers in 0..{n_lm} or layer_init='random'")
        self.embed = HolisticEmbedding(self.lm.config, knobs.n_embed_layers, self.lm.config.vocab_size,
                                       vit.img_size, vit.patch // 2, vit.mean.flatten().tolist(),
                                       vit.std.flatten().tolist())
        assert self.embed.grid == 2 * vit.grid
        with torch.no_grad():
            if knobs.text_init == "copy":
                self.embed.text.weight.copy_(self.lm.get_input_embeddings().weight)
            if knobs.layer_init == "copy":
                for i, layer in enumerate(self.embed.layers):
                    layer.load_state_dict(self.lm.model.layers[i].state_dict())

    # ---- the holistic module ---------------------------------------------------------------------------
    def visual_tokens(self, pixel_values):
        """The module's image *inputs*: [B, 16, d] after shuffle+MLP ("pre") or [B, 64, d] patches ("post")."""
        x = self.embed.patches(pixel_values)  # [B, g*g, d]
        return (self.embed.shuffle(x) if self.knobs.pixel_shuffle == "pre" else x), {}

    def text_embeds(self, input_ids: torch.Tensor) -> torch.Tensor:
        """What the LLM receives for a text-only sequence: the holistic module's output (not the LLM's table)."""
        return self.build_inputs({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})[
            "inputs_embeds"]

    def _module_mask(self, attention_mask, visual_mask, dtype):
        bidir = self.knobs.embed_attention == "bidirectional"
        allowed = allowed_mask(attention_mask, image_span_ids(visual_mask) if bidir else None, bidir)
        return additive_mask(allowed, dtype)  # [B, 1, L, L]

    def _span(self, ids, n: int, dev):
        """Masks for the image span ``<img>`` + n slots spliced at the placeholder: helpers of build_inputs."""
        B = ids.shape[0]
        marker = torch.zeros(B, n + 1, dtype=torch.bool, device=dev)
        marker[:, 0] = True
        sp = lambda t, v: splice(t, ids, self.image_token_id, v)  # noqa: E731
        return {"visual_mask": sp(torch.zeros_like(ids, dtype=torch.bool), ~marker),
                "marker_mask": sp(torch.zeros_like(ids, dtype=torch.bool), marker),
                "splice": sp}

    def build_inputs(self, batch: dict, module_cache=None) -> dict:
        """Run the holistic module over text + image; its outputs are the LLM's inputs_embeds at every position.

        The ``<img>`` placeholder is kept as a begin-of-image marker followed by 16 image slots, so every later
        position shifts by 16. Returns the base keys plus ``marker_mask`` and ``module`` (module-side tensors).
        """
        dev = self.device
        ids = batch["input_ids"].to(dev)  # [B, L]
        B, L = ids.shape
        attn = batch["attention_mask"].to(dev)
        labels = batch["labels"].to(dev) if "labels" in batch else torch.full_like(ids, -100)
        answer_pos = batch["answer_pos"].to(dev) if "answer_pos" in batch else torch.zeros(B, dtype=torch.long,
                                                                                             device=dev)
        x = self.embed.text(ids)  # [B, L, d]
        has_img = self.uses_images and "pixel_values" in batch
        if not has_img:
            mask = self._module_mask(attn, torch.zeros_like(ids, dtype=torch.bool), x.dtype)
            y = self.embed.run_layers(x, mask, torch.arange(L, device=dev)[None], cache=module_cache)
            if self.knobs.normalize_output:
                y = F.normalize(y, dim=-1)
            z = torch.zeros_like(ids, dtype=torch.bool)
            return {"inputs_embeds": y, "attention_mask": attn, "labels": labels, "answer_pos": answer_pos,
                    "visual_mask": z, "marker_mask": z, "input_ids": ids, "extras": {},
                    "module": {"inputs": x, "outputs": y, "attention_mask": attn, "visual_mask": z}}

        img_in, extras = self.visual_tokens(batch["pixel_values"].to(dev))  # [B, n_in, d]
        n_in, n = img_in.shape[1], self.n_image_tokens
        p = (ids == self.image_token_id).float().argmax(dim=1)  # [B] placeholder (= marker) position
        marker_x = x[torch.arange(B, device=dev), p][:, None]  # [B, 1, d] the module's own `<img>` row
        span_m = self._span(ids, n_in, dev)
        xm = span_m["splice"](x, torch.cat([marker_x, img_in], 1))  # [B, L + n_in, d] module sequence
        attn_m = span_m["splice"](attn, torch.ones(B, n_in + 1, dtype=attn.dtype, device=dev))
        Lm = xm.shape[1]
        ym = self.embed.run_layers(xm, self._module_mask(attn_m, span_m["visual_mask"], xm.dtype),
                                   torch.arange(Lm, device=dev)[None], cache=module_cache)  # [B, L + n_in, d]
        if self.knobs.pixel_shuffle == "pre":
            y = ym  # [B, L + 16, d]
            span = span_m
        else:  # "post": shuffle + MLP after the layers; the LLM sequence is shorter than the module's
            img_out = ym[span_m["visual_mask"]].view(B, n_in, -1)  # [B, 64, d]
            img_tok = self.embed.shuffle(img_out)  # [B, 16, d]
            j = torch.arange(L, device=dev)[None]
            src = torch.where(j <= p[:, None], j, j + n_in)  # text (and marker) positions in the module sequence
            y_text = ym.gather(1, src[..., None].expand(-1, -1, ym.shape[-1]))  # [B, L, d]
            y_marker = ym[torch.arange(B, device=dev), p][:, None]  # [B, 1, d]
            span = self._span(ids, n, dev)
            y = span["splice"](y_text, torch.cat([y_marker, img_tok], 1))  # [B, L + 16, d]
        if self.knobs.normalize_output:
            y = F.normalize(y, dim=-1)
        sp = span["splice"]
        return {
            "inputs_embeds": y,
            "attention_mask": sp(attn, torch.ones(B, n + 1, dtype=attn.dtype, device=dev)),
            "labels": sp(labels, torch.full((B, n + 1), -100, dtype=torch.long, device=dev)),
            "visual_mask": span["visual_mask"],
            "marker_mask": span["marker_mask"],
            "answer_pos": answer_pos + n,
            "input_ids": sp(ids, torch.full((B, n + 1), self.image_token_id, dtype=torch.long, device=dev)),
            "extras": extras,
            "module": {"inputs": xm, "outputs": ym, "attention_mask": attn_m, "visual_mask": span_m["visual_mask"]},
        }

    # ---- teacher ---------------------------------------------------------------------------------------
    def teacher_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """z_I: CL ViT penultimate block -> connector: [B, 16, d_lm] in raster order of the 4x4 cells."""
        feats = self.teacher_vision(pixel_values.to(self.device), layers=[TEACHER_LAYER])[0]  # [B, 16, d_vit]
        return self.teacher(feats)  # [B, 16, d_lm]

    def loss_teacher(self, batch: dict) -> torch.Tensor:
        """LLaVA alignment of the teacher connector: LLM's own text table + teacher tokens at ``<img>``."""
        dev = self.device
        ids = batch["input_ids"].to(dev)
        vis = self.teacher_tokens(batch["pixel_values"])  # [B, 16, d]
        emb = splice(self.lm.get_input_embeddings()(ids), ids, self.image_token_id, vis)
        ones = torch.ones(vis.shape[:2], dtype=torch.long, device=dev)
        attn = splice(batch["attention_mask"].to(dev), ids, self.image_token_id, ones)
        labels = splice(batch["labels"].to(dev), ids, self.image_token_id, torch.full_like(ones, -100))
        logits = self.lm(inputs_embeds=emb, attention_mask=attn, use_cache=False).logits
        return self.next_token_loss(logits, labels)

    # ---- Stage I: distillation -------------------------------------------------------------------------
    def with_image_prefix(self, batch: dict) -> dict:
        """Rows without ``<img>`` (text-only corpus, e.g. "scene_lm") get the prompt's "scene : <img>" after <bos>,
        so image tokens sit where they do at inference: [B, L] -> [B, L + 3]."""
        ids = batch["input_ids"]
        if bool((ids == self.image_token_id).any(dim=1).all()):
            return batch
        pre = torch.tensor(self.tokenizer(IMAGE_PROMPT, add_special_tokens=False)["input_ids"], dtype=ids.dtype)
        pre = pre[None].expand(ids.shape[0], -1)  # [B, 3]
        out = dict(batch)
        out["input_ids"] = torch.cat([ids[:, :1], pre, ids[:, 1:]], 1)
        out["attention_mask"] = torch.cat([batch["attention_mask"][:, :1], torch.ones_like(pre),
                                           batch["attention_mask"][:, 1:]], 1)
        for k in ("labels", "answer_pos"):
            out.pop(k, None)  # distillation has no next-token targets
        return out

    def distill_parts(self, batch: dict, unpaired: bool = True) -> dict:
        """Student outputs, targets and masks of the distillation loss (images rolled by one when unpaired).

        Stage I feeds the LM's text corpus ("scene_lm": scene text, question and answer, so every word of the
        vocabulary is distilled) with another sample's image in the prompt layout "<bos> scene : <img> [16]".
        Image terms: the 16 image positions vs z_I; text terms: valid text positions (padding and the ``<img>``
        marker excluded) vs the LLM's input-embedding row of the same id.
        """
        batch = self.with_image_prefix(batch)
        pix = batch["pixel_values"]
        if unpaired:
            pix = pix.roll(1, dims=0)  # each text now comes with another sample's image
        inp = self.build_inputs(dict(batch, pixel_values=pix))
        x = inp["inputs_embeds"]  # [B, L', d]
        B = x.shape[0]
        text_mask = inp["attention_mask"].bool() & ~inp["visual_mask"] & ~inp["marker_mask"]  # [B, L']
        with torch.no_grad():
            z_img = self.teacher_tokens(pix)  # [B, 16, d]
            z_txt = self.lm.get_input_embeddings()(inp["input_ids"][text_mask])  # [T, d]
        x_img = x[inp["visual_mask"]].view(B, self.n_image_tokens, -1)  # [B, 16, d]
        return {"inputs": inp, "x": x, "x_img": x_img, "z_img": z_img, "x_txt": x[text_mask], "z_txt": z_txt,
                "text_mask": text_mask}

    def loss_distill(self, batch: dict) -> torch.Tensor:
        parts = self.distill_parts(batch)
        kind, which = self.knobs.distill_loss, self.knobs.distill
        loss = parts["x"].sum() * 0.0
        if which in ("both", "image"):
            loss = loss + distill_loss_fn(kind, parts["x_img"].flatten(0, 1), parts["z_img"].flatten(0, 1))
        if which in ("both", "text"):
            loss = loss + distill_loss_fn(kind, parts["x_txt"], parts["z_txt"])
        return loss

    # ---- stages ----------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        b = self.budget
        which = self.knobs.distill
        share = dict(SHARES)
        if which not in ("both", "image"):  # no image target: no teacher to train
            share["distill"] += share.pop("teacher")
        if which == "none":
            share["align"] += share.pop("distill")
        llm = ("lm.model.layers", "lm.model.norm", "lm.lm_head")  # the LLM minus its (bypassed) input table
        out = []
        k = self.knobs
        if "teacher" in share:
            out.append(Stage("teacher", ("teacher",), loss="teacher", task="describe", share=share["teacher"],
                             steps=k.teacher_steps or None))
        if "distill" in share:
            out.append(Stage("distill", ("embed",), loss="distill", task="scene_lm", share=share["distill"],
                             steps=k.distill_steps or None, batch=k.distill_batch or None))
        out.append(Stage("align", ("embed",), task="describe", share=share["align"]))
        out.append(Stage("instruct", ("embed",) + llm, task="qa", share=share["instruct"],
                         lr={k: b.llm_lr for k in llm}))
        return out

    # ---- incremental decoding with two KV caches --------------------------------------------------------
    @torch.no_grad()
    def prefill(self, batch: dict):
        """Full pass over unpadded prompts filling both caches: (logits [B, L', V], state for decode_step)."""
        if not bool(batch["attention_mask"].bool().all()):
            raise ValueError("prefill needs unpadded rows (a batch of one, or prompts of equal length)")
        cache_m = DynamicCache()
        inp = self.build_inputs(batch, module_cache=cache_m)
        Lm = inp["module"]["inputs"].shape[1]
        cache_lm = DynamicCache()
        out = self.lm(inputs_embeds=inp["inputs_embeds"], attention_mask=inp["attention_mask"],
                      past_key_values=cache_lm, use_cache=True)
        return out.logits, {"cache_m": cache_m, "cache_lm": cache_lm, "len_m": Lm,
                            "len_lm": inp["inputs_embeds"].shape[1]}

    @torch.no_grad()
    def decode_step(self, token_ids: torch.Tensor, state: dict) -> torch.Tensor:
        """One new text token per row through both stacks with their caches: [B, 1] -> logits [B, V]."""
        dev = self.device
        token_ids = token_ids.to(dev)
        B = token_ids.shape[0]
        x = self.embed.text(token_ids)  # [B, 1, d]
        mask = torch.zeros(B, 1, 1, state["len_m"] + 1, dtype=x.dtype, device=dev)  # a new token sees all
        y = self.embed.run_layers(x, mask, torch.full((1, 1), state["len_m"], device=dev), cache=state["cache_m"])
        if self.knobs.normalize_output:
            y = F.normalize(y, dim=-1)
        attn = torch.ones(B, state["len_lm"] + 1, dtype=torch.long, device=dev)
        out = self.lm(inputs_embeds=y, attention_mask=attn, past_key_values=state["cache_lm"], use_cache=True)
        state["len_m"] += 1
        state["len_lm"] += 1
        return out.logits[:, -1]

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 8) -> torch.Tensor:
        """Greedy decoding from unpadded prompts with both caches: [B, max_new_tokens] token ids."""
        logits, state = self.prefill(batch)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = [nxt]
        for _ in range(max_new_tokens - 1):
            nxt = self.decode_step(nxt, state).argmax(-1, keepdim=True)
            out.append(nxt)
        return torch.cat(out, 1)

    # ---- diagnostics -----------------------------------------------------------------------------------
    @torch.no_grad()
    def diagnostics(self, batch: dict) -> dict:
        out = super().diagnostics(batch)
        parts = self.distill_parts(batch, unpaired=False)
        cos_img = F.cosine_similarity(parts["x_img"], parts["z_img"], dim=-1)  # [B, 16]
        cos_txt = F.cosine_similarity(parts["x_txt"], parts["z_txt"], dim=-1)  # [T]
        vocab = self.lm.get_input_embeddings().weight
        keep = torch.ones(vocab.shape[0], dtype=torch.bool, device=vocab.device)
        keep[[self.image_token_id, self.tokenizer.pad_token_id]] = False  # rows the LLM never trained
        out.update({
            "distill_cos_image": float(cos_img.mean()),
            "distill_cos_image_map": cos_img.mean(0).tolist(),
            "distill_cos_text": float(cos_txt.mean()),
            "module_norm_image": float(parts["x_img"].norm(dim=-1).mean()),
            "module_norm_text": float(parts["x_txt"].norm(dim=-1).mean()),
            "teacher_norm_image": float(parts["z_img"].norm(dim=-1).mean()),
            "lm_embed_norm_text": float(parts["z_txt"].norm(dim=-1).mean()),
            "lm_embed_norm_vocab": float(vocab[keep].norm(dim=-1).mean()),
            "teacher_trained": self.knobs.distill in ("both", "image"),
        })
        return out
