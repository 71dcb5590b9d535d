"""X-Former: a Q-Former whose queries are fused with MAE features by dual cross-attention and trained, besides
BLIP-2's image-text objectives, to reconstruct masked patches through a frozen MAE decoder.

Paper: "X-Former: Unifying Contrastive and Reconstruction Learning for MLLMs", S. Swetha, J. Yang, T. Neiman,
M. N. Rizve, S. Tran, B. Yao, T. Chilimbi, M. Shah (ECCV 2024, arXiv 2407.13851).

Idea. A contrastively trained ViT (CLIP) captures global semantics but misses local detail; a masked
autoencoder (MAE) ViT captures local detail. X-Former keeps both frozen. A BLIP-2 Q-Former (learnable queries
that cross-attend to the CLIP tokens C) produces query outputs Z_q; then a *dual cross-attention* fuses them
with the MAE encoder's tokens M of a randomly masked copy of the image: CA-1 (query M, key/value Z_q) gives
M' = M + CA-1, which the frozen MAE decoder must turn back into the masked patches (L_rec), so the queries are
pushed to carry local detail; CA-2 (query Z_q, key/value M') gives Z' = Z_q + CA-2, the fused queries.
Stage 1 trains queries, Q-Former and dual cross-attention with BLIP-2's ITC + ITM + ITG on image-caption pairs
plus L_rec (weights 1:1:1:1); stage 2 maps Z' through one FC layer to ``n_queries`` soft prefix tokens of the
frozen LLM and trains with the language-modelling loss (no L_rec: the paper's ablation shows it hurts there).

Forward (``features="both"``, ``fusion="dual_ca"``; B batch, N = grid² patches, d ViT width, w Q-Former width):
  C  = CL ViT(unmasked image), raw output of the penultimate block, CLS dropped   [B, N, d]
  M  = MIM ViT encoder(visible patches), CLS included, final norm                  [B, 1 + N(1-r), d]
  Z_q = Q-Former(queries; text per objective mask; cross-attention to LN(C))      [B, n_queries, w]
  M' = M + CA-1(M <- Z_q)      (zero-initialised output projection)               [B, 1 + N(1-r), d]
  Z' = Z_q + CA-2(Z_q <- M')   (zero-initialised output projection)               [B, n_queries, w]
  stage 1: ITC / ITM on Z', ITG from the Q-Former's text stream, L_rec = masked MSE(decoder(M'), target)
  stage 2: prefix = FC(Z')                                                         [B, n_queries, d_lm]

Tiny-world substitutes and decisions (each also noted where it happens):
- Sizes: the paper's 32 queries x 768 over 257 CLIP tokens (X-Former Sec. 4, after BLIP-2's Q-Former), 12
  BERT-base layers, become ``n_queries`` = 16 queries over the 16 patch tokens. The paper's queries are a
  bottleneck (32 for 257 tokens); at 16 patches a bottleneck of 8 cost 6.5 points over three paired seeds
  against 16 (docs/lab-notes/recipes.md), so the queries match the patches here. ``qformer_layers`` =
  2 layers with cross-attention in every layer (``cross_attention_every`` = 1; the paper's "every 2nd layer"
  would leave a single cross-attention layer). The Q-Former width is the ViT width (the MAE width, so CA-1 and
  CA-2 work without extra projections); heads = the ViT's heads. Pre-LN layers (BERT is post-LN) because the
  Q-Former starts from random weights here: there is no pretrained BERT to initialise it from.
- Q-Former layer = self-attention over [queries; text] with the objective's mask, cross-attention from the
  queries to C (text never cross-attends, as in BLIP-2), then *separate* FFNs for queries and text. The text
  stream has its own token embeddings over the world vocabulary, learned positions, and three learned "mode"
  tokens standing in for BERT's [CLS] (ITC), [ENC] (ITM) and [DEC] (ITG).
- C is (B, N, d) with the CLS token dropped: the shared ``VisionEncoder`` returns block outputs without CLS,
  and the tiny CL ViT is pretrained with mean pooling, so its CLS carries nothing the patches do not.
- Captions are the world's coarse alt-text ("caption" task: sizes, colours, shapes; no texture, no position).
  ITC uses the in-batch captions as negatives; identical captions inside a batch (frequent in a small world)
  count as positives for ITC and are never drawn as ITM hard negatives (ALBEF/BLIP-2's image-id trick).
- L_rec is computed once per step, on the ITC pass (queries without text, = the ITG pass's query states);
  the target is ``mae_target`` of the prepared pixels (per-patch normalised pixels, what the tiny MAE decoder
  was trained on). The MAE stream is masked at ``mae_mask_ratio`` (paper 0.5; the tiny MAE was pretrained at
  0.75) while stage 1 trains, and at inference only with ``mask_at_inference`` (unverified in the paper;
  default off). Stage 2 trains on the input it is evaluated on (unmasked by default); ``mask_stage2`` masks it
  while training, as L_rec in stage 2 (``rec_stage2``, the paper's ablation) needs.
- Stage 2 data: the world's VQA prompts ("qa"), optionally preceded by a "describe" stage (full scene text:
  the world's dense image-text pairs). The paper trains stage 2 on image-text pairs and evaluates zero-shot;
  a tiny LLM cannot answer zero-shot in a prompt format it never saw, so stage 2 trains on the evaluated
  format. ``tune_llm`` (default False = paper) unfreezes the LLM in the qa stage, since a tiny frozen LLM may
  read soft prefixes poorly. The stage split (``stage1_share`` = 0.4) replaces the paper's 9:1 epoch ratio,
  because here stage 2 must also teach the answer format.
- Not implemented: the "interleaved" dual cross-attention placement and "early cross-attention" ablations;
  the dual cross-attention sits after the Q-Former stack (the spec's default).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.vision import mae_target, masked_mse, patchify
from ..train import Stage
from .base import VLM, Knobs, batch_knob, eval_mode, frozen_copy, knob, steps_knob

FEATURES = ("both", "cl", "mim")
FUSIONS = ("dual_ca", "concat", "none")
MODES = ("itc", "itm", "itg")  # index of each objective's mode token ([CLS], [ENC], [DEC])


@dataclass
class XFormerKnobs(Knobs):
    features: str = knob("both", choices=FEATURES,
                         doc="visual streams: both = X-Former (CL tokens C for the Q-Former + MAE tokens M); "
                             "cl = BLIP-2 (no MAE stream); mim = the MAE encoder replaces C")
    fusion: str = knob("dual_ca", choices=FUSIONS,
                       doc="how MAE features meet the queries: dual_ca = X-Former's CA-1/CA-2 after the Q-Former; "
                           "concat = CL and MAE tokens concatenated into the Q-Former's cross-attention input; "
                           "none = no MAE fusion")
    rec_stage1: bool = knob(True, doc="L_rec (masked-patch reconstruction through the frozen MAE decoder) in stage 1")
    rec_stage2: bool = knob(False, doc="L_rec also in stage 2 (the paper's ablation: it hurts)")
    n_queries: int = knob(16, check=(lambda v: 1 <= v <= 256, "between 1 and 256"),
                          doc="learnable queries = soft prefix tokens given to the LLM (paper 32 for 257 tokens; "
                              "16 = one per patch here)")
    qformer_layers: int = knob(2, check=(lambda v: 1 <= v <= 12, "between 1 and 12"),
                               doc="Q-Former layers (paper 12, BERT-base)")
    cross_attention_every: int = knob(1, check=(lambda v: v >= 1, ">= 1"),
                                      doc="queries cross-attend to C in every k-th layer (paper 2 with 12 layers)")
    mae_mask_ratio: float = knob(0.5, check=(lambda v: 0.0 < v < 1.0, "strictly between 0 and 1"),
                                 doc="fraction of patches hidden from the MAE encoder (paper 0.5)")
    mask_at_inference: bool = knob(False, doc="mask the MAE input at inference too (unverified in the paper)")
    mask_stage2: bool = knob(False, doc="mask the MAE input while training stage 2 too (default: stage 2 trains "
                                        "unmasked, as it is evaluated; rec_stage2 needs it)")
    feature_layer: int = knob(-2, doc="block of the CL ViT read as C (Python index; -2 = penultimate, as BLIP-2)")
    tune_llm: bool = knob(False, doc="unfreeze the LLM in the stage-2 qa stage (paper: frozen)")
    stage1_share: float = knob(0.4, check=(lambda v: 0.0 < v < 1.0, "strictly between 0 and 1"),
                               doc="fraction of the VLM steps spent in stage 1 (ITC+ITM+ITG+L_rec on captions)")
    stage1_steps: int = steps_knob("stage 1", "e.g. fewer, larger batches; its share is 'stage1_share'")
    stage1_batch: int = batch_knob("stage 1", "BLIP-2: ~2,000, so ITC sees many negatives")
    describe_share: float = knob(0.0, check=(lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
                                 doc="fraction of the steps for a stage-2 LM stage on 'describe' data before 'qa' "
                                     "(0 = none)")

    def validate(self, arch: str) -> None:
        f, fu = self.features, self.fusion
        allowed = {"both": ("dual_ca", "concat"), "cl": ("none",), "mim": ("dual_ca", "none")}[f]
        if fu not in allowed:
            raise ValueError(f"knob 'fusion'={fu!r} is impossible with features={f!r} for arch={arch!r}; "
                             f"allowed fusion values with features={f!r}: {list(allowed)}")
        for name in ("rec_stage1", "rec_stage2"):
            if getattr(self, name) and fu != "dual_ca":
                raise ValueError(f"knob {name!r}=True needs fusion='dual_ca' (L_rec trains through CA-1); got "
                                 f"features={f!r}, fusion={fu!r} for arch={arch!r}: set {name}=False")
        for name in ("mask_at_inference", "mask_stage2"):
            if getattr(self, name) and f == "cl":
                raise ValueError(f"knob {name!r}=True needs an MAE stream (features 'both' or 'mim'); "
                                 f"got features='cl' for arch={arch!r}")
        if self.rec_stage2 and not self.mask_stage2:
            raise ValueError(f"knob 'rec_stage2'=True needs a masked stage-2 MAE input (L_rec is computed on the "
                             f"masked patches) for arch={arch!r}: set mask_stage2=True")
        if self.stage1_share + self.describe_share >= 1.0:
            raise ValueError(f"knobs 'stage1_share' + 'describe_share' must be < 1 (the qa stage needs steps); "
                             f"got {self.stage1_share} + {self.describe_share} for arch={arch!r}")


# ---------------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head attention; queries from ``x`` [B, Lq, dim], keys/values from ``kv`` [B, Lk, kv_dim].
    ``allowed``: bool [B, Lq, Lk] (True = may attend) or None. ``zero_out`` zero-initialises the output
    projection (CA-1/CA-2: the block starts as the identity under its residual)."""

    def __init__(self, dim: int, kv_dim: int, heads: int, zero_out: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(kv_dim, dim), nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, dim)
        if zero_out:
            nn.init.zeros_(self.o.weight)
            nn.init.zeros_(self.o.bias)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        B, Lq, D = x.shape
        h = self.heads
        q = self.q(x).view(B, Lq, h, D // h).transpose(1, 2)  # [B, h, Lq, D/h]
        k = self.k(kv).view(B, kv.shape[1], h, D // h).transpose(1, 2)  # [B, h, Lk, D/h]
        v = self.v(kv).view(B, kv.shape[1], h, D // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if allowed is None else allowed[:, None])
        return self.o(out.transpose(1, 2).reshape(B, Lq, D))  # [B, Lq, D]


def ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class QueryPath(nn.Module):
    """Everything of the Q-Former that only the queries use: the queries, the feature norms, cross-attention
    layers, the query FFNs and the final norm (stage 2 trains this and ``SharedPath``)."""

    def __init__(self, n_queries: int, width: int, heads: int, feat_dim: int, n_layers: int, ca_every: int,
                 concat: bool):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(n_queries, width) * 0.02)  # [n_q, w]
        self.ln_feats = nn.LayerNorm(feat_dim)  # BLIP-2's ln_vision on C
        self.ln_mae = nn.LayerNorm(feat_dim) if concat else None  # the MAE stream's own norm (fusion=concat)
        self.ca_layers = [i for i in range(n_layers) if i % ca_every == 0]
        self.ca_ln = nn.ModuleDict({str(i): nn.LayerNorm(width) for i in self.ca_layers})
        self.ca = nn.ModuleDict({str(i): Attention(width, feat_dim, heads) for i in self.ca_layers})
        self.ffn_ln = nn.ModuleList([nn.LayerNorm(width) for _ in range(n_layers)])
        self.ffn = nn.ModuleList([ffn(width) for _ in range(n_layers)])
        self.final_ln = nn.LayerNorm(width)


class TextPath(nn.Module):
    """The Q-Former's text side: own token embeddings over the world vocabulary, learned positions, the three
    mode tokens ([CLS] for ITC, [ENC] for ITM, [DEC] for ITG), the text FFNs and the final norm."""

    def __init__(self, vocab: int, max_len: int, width: int, n_layers: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        self.mode = nn.Parameter(torch.randn(len(MODES), width) * 0.02)
        self.ffn_ln = nn.ModuleList([nn.LayerNorm(width) for _ in range(n_layers)])
        self.ffn = nn.ModuleList([ffn(width) for _ in range(n_layers)])
        self.final_ln = nn.LayerNorm(width)


class SharedPath(nn.Module):
    """The self-attention over [queries; text] (shared weights, objective-specific mask)."""

    def __init__(self, width: int, heads: int, n_layers: int):
        super().__init__()
        self.sa_ln = nn.ModuleList([nn.LayerNorm(width) for _ in range(n_layers)])
        self.sa = nn.ModuleList([Attention(width, width, heads) for _ in range(n_layers)])


def qformer_mask(n_q: int, text_valid: torch.Tensor, mode: str) -> torch.Tensor:
    """Self-attention mask over [queries; text] for one objective (rows attend to columns): bool [B, L, L].

    ITC: Q->Q, T->T (bidirectional); ITM: everything; ITG: Q->Q, T->Q, T->T causal. Padded text keys are off.
    """
    B, T = text_valid.shape
    L = n_q + T
    dev = text_valid.device
    key_ok = torch.cat([torch.ones(B, n_q, dtype=torch.bool, device=dev), text_valid.bool()], 1)  # [B, L]
    allowed = key_ok[:, None, :].expand(B, L, L).clone()
    is_q = torch.arange(L, device=dev) < n_q  # [L]
    q_rows, t_cols = is_q[:, None], ~is_q[None, :]
    if mode in ("itc", "itg"):
        allowed &= ~(q_rows & t_cols)  # queries never see text
    if mode == "itc":
        allowed &= ~(~q_rows & ~t_cols)  # text never sees queries
    if mode == "itg":
        idx = torch.arange(L, device=dev)
        allowed &= ~(~q_rows & t_cols & (idx[None, :] > idx[:, None]))  # text is causal among text
    return allowed


class QFormer(nn.Module):
    """BLIP-2's Q-Former, tiny and pre-LN. ``forward`` returns (query outputs [B, n_q, w], text outputs or None)."""

    def __init__(self, n_queries, width, heads, feat_dim, n_layers, ca_every, vocab, max_len, concat):
        super().__init__()
        self.n_layers = n_layers
        self.query = QueryPath(n_queries, width, heads, feat_dim, n_layers, ca_every, concat)
        self.shared = SharedPath(width, heads, n_layers)
        self.text = TextPath(vocab, max_len, width, n_layers)

    @property
    def n_queries(self) -> int:
        return self.query.tokens.shape[0]

    def encode_features(self, c: torch.Tensor, mae: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-attention input: LN(C) [B, N, d], or [LN(C); LN'(M)] [B, N + 1 + keep, d] for fusion=concat."""
        feats = self.query.ln_feats(c)
        if self.query.ln_mae is not None:
            feats = torch.cat([feats, self.query.ln_mae(mae)], dim=1)
        return feats

    def forward(self, feats: torch.Tensor, text_ids: torch.Tensor | None = None,
                text_valid: torch.Tensor | None = None, mode: str | None = None):
        B = feats.shape[0]
        qp, tp = self.query, self.text
        q = qp.tokens[None].expand(B, -1, -1)  # [B, n_q, w]
        t, allowed = None, None
        if text_ids is not None:
            T = text_ids.shape[1] + 1  # mode token + text
            if T > tp.pos.shape[0]:
                raise ValueError(f"text of {T} tokens exceeds the Q-Former's {tp.pos.shape[0]} positions")
            mode_tok = tp.mode[MODES.index(mode)].expand(B, 1, -1)
            t = torch.cat([mode_tok, tp.tok(text_ids)], 1) + tp.pos[:T]  # [B, T, w]
            valid = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=feats.device), text_valid.bool()], 1)
            allowed = qformer_mask(self.n_queries, valid, mode)  # [B, n_q+T, n_q+T]
        n_q = q.shape[1]
        for i in range(self.n_layers):
            x = q if t is None else torch.cat([q, t], 1)  # [B, n_q(+T), w]
            x = x + self.shared.sa[i](self.shared.sa_ln[i](x), self.shared.sa_ln[i](x), allowed)
            q, t = (x, None) if t is None else (x[:, :n_q], x[:, n_q:])
            if str(i) in qp.ca:  # only the queries cross-attend to the image features
                q = q + qp.ca[str(i)](qp.ca_ln[str(i)](q), feats)
            q = q + qp.ffn[i](qp.ffn_ln[i](q))  # separate FFNs for queries and text
            if t is not None:
                t = t + tp.ffn[i](tp.ffn_ln[i](t))
        return qp.final_ln(q), (tp.final_ln(t) if t is not None else None)


class DualCrossAttention(nn.Module):
    """X-Former's block after the Q-Former: CA-1 (M <- Z_q) then CA-2 (Z_q <- M'), both residual with
    zero-initialised output projections, so at step 0 M' = M and Z' = Z_q (the model is BLIP-2)."""

    def __init__(self, width: int, mae_dim: int, heads: int, mae_heads: int):
        super().__init__()
        self.ln_m1, self.ln_z1 = nn.LayerNorm(mae_dim), nn.LayerNorm(width)
        self.ca1 = Attention(mae_dim, width, mae_heads, zero_out=True)
        self.ln_z2, self.ln_m2 = nn.LayerNorm(width), nn.LayerNorm(mae_dim)
        self.ca2 = Attention(width, mae_dim, heads, zero_out=True)

    def forward(self, z_q: torch.Tensor, m: torch.Tensor):
        m_fused = m + self.ca1(self.ln_m1(m), self.ln_z1(z_q))  # [B, 1+keep, d]: global semantics into M
        z = z_q + self.ca2(self.ln_z2(z_q), self.ln_m2(m_fused))  # [B, n_q, w]: local detail into the queries
        return z, m_fused


class ObjectiveHeads(nn.Module):
    """Stage-1 heads: ITC projections + temperature, the ITM 2-way head, the ITG LM head."""

    def __init__(self, width: int, embed_dim: int, vocab: int):
        super().__init__()
        self.vision_proj = nn.Linear(width, embed_dim)
        self.text_proj = nn.Linear(width, embed_dim)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.itm = nn.Linear(width, 2)
        self.itg_ln = nn.LayerNorm(width)
        self.itg = nn.Linear(width, vocab)


def unpatchify(x: torch.Tensor, patch: int, channels: int = 3) -> torch.Tensor:
    """[B, N, p*p*C] (raster order, as ``patchify``) -> [B, C, H, W]."""
    B, N, _ = x.shape
    g = int(round(N ** 0.5))
    x = x.reshape(B, g, g, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, channels, g * patch, g * patch)


# ---------------------------------------------------------------------------------------------------------------
# the architecture
# ---------------------------------------------------------------------------------------------------------------
class XFormer(VLM):
    arch = "xformer"
    KnobsClass = XFormerKnobs

    @classmethod
    def backbones_needed(cls, knobs: XFormerKnobs):
        return ("lm",) + (("cl",) if knobs.features != "mim" else ()) + (("mim",) if knobs.features != "cl" else ())

    def __init__(self, backbones, knobs: XFormerKnobs, budget):
        super().__init__(backbones, knobs, budget)
        k = knobs
        self.uses_mae = k.features in ("both", "mim")
        # frozen encoders: C from CL (or MIM for features="mim"); M from the MIM encoder + frozen MAE decoder
        self.cl = frozen_copy(backbones.cl) if k.features != "mim" else None
        self.mim = frozen_copy(backbones.mim) if self.uses_mae else None
        self.decoder = frozen_copy(backbones.mim_decoder) if self.uses_mae else None
        self.patch = self.mim.patch if self.mim is not None else None  # the MAE target's patch size
        self.norm_pix = getattr(backbones, "mae_norm_pix", False)  # the MAE decoder's target (per-patch normalised?)
        c_enc = self.c_encoder
        if not -c_enc.depth <= k.feature_layer < c_enc.depth:
            raise ValueError(f"knob 'feature_layer' of arch='xformer' got {k.feature_layer}; the ViT has "
                             f"{c_enc.depth} blocks: allowed values {-c_enc.depth}..{c_enc.depth - 1}")
        d = c_enc.dim
        self.width = d  # Q-Former width = ViT width (= MAE width: CA-1/CA-2 need no extra projections)
        heads = c_enc.vit.blocks[0].attn.num_heads
        vocab = len(self.tokenizer)
        self.qformer = QFormer(k.n_queries, self.width, heads, d, k.qformer_layers, k.cross_attention_every,
                               vocab, self.lm.config.max_position_embeddings, concat=k.fusion == "concat")
        if k.fusion == "dual_ca":
            m_heads = self.mim.vit.blocks[0].attn.num_heads
            self.fusion = DualCrossAttention(self.width, self.mim.dim, heads, m_heads)
        else:
            self.fusion = None
        self.heads = ObjectiveHeads(self.width, budget.clip_embed_dim, vocab)
        self.fc = nn.Linear(self.width, self.d_lm)  # stage 2: Z' -> soft prefix tokens
        self.stage1_log: list[dict] = []  # per-step components of the stage-1 loss (diagnostics)

    @property
    def c_encoder(self):
        return self.cl if self.cl is not None else self.mim

    # ---- visual streams ------------------------------------------------------------------------------------
    def clip_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """C: the unmasked image through the frozen CL ViT (MIM ViT for features='mim'), CLS dropped: [B, N, d]."""
        with torch.no_grad():
            return self.c_encoder(pixel_values, layers=[self.knobs.feature_layer])[0]

    def mae_tokens(self, pixel_values: torch.Tensor, mask: bool, generator=None):
        """M through the frozen MAE encoder: (tokens [B, 1+keep, d] with CLS, ids_restore [B, N], mask [B, N]).
        Unmasked (mask=False): all N patches in raster order, ids_restore = identity, mask all zero."""
        enc = self.mim
        with torch.no_grad():
            if mask:
                return enc.encode_masked(pixel_values, self.knobs.mae_mask_ratio, generator=generator)
            x = enc.vit.norm_pre(enc.with_prefix(enc.embed_patches(pixel_values)))  # [B, 1+N, d]
            for blk in enc.vit.blocks:
                x = blk(x)
            B, N = x.shape[0], x.shape[1] - 1
            ids = torch.arange(N, device=x.device).expand(B, N)
            return enc.vit.norm(x), ids, torch.zeros(B, N, device=x.device)

    def streams(self, pixel_values: torch.Tensor, generator=None, masked: bool | None = None) -> dict:
        """Frozen features for one batch: C, and (with an MAE stream) M, ids_restore, mask; plus the Q-Former's
        cross-attention input ``feats``. The MAE input is masked when ``masked``; None: stage 1's rule, masked
        while training (L_rec needs hidden patches) and at inference with ``mask_at_inference``."""
        out = {"c": self.clip_tokens(pixel_values), "m": None}
        if self.uses_mae:
            if masked is None:
                masked = self.training or self.knobs.mask_at_inference
            out["m"], out["ids_restore"], out["mask"] = self.mae_tokens(pixel_values, masked, generator)
        out["feats"] = self.qformer.encode_features(out["c"], out["m"])
        return out

    def fuse(self, z_q: torch.Tensor, m: torch.Tensor | None):
        """Dual cross-attention (or identity without fusion='dual_ca', or when no M is given: the ITG pass, whose
        query states are the ITC pass's and feed no loss): (Z' [B, n_q, w], M' or None)."""
        if self.fusion is None or m is None:
            return z_q, None
        return self.fusion(z_q, m)

    def qformer_pass(self, feats, m=None, text_ids=None, text_valid=None, mode=None) -> dict:
        """One Q-Former pass with an objective's mask, followed by the dual cross-attention."""
        z_q, t = self.qformer(feats, text_ids, text_valid, mode)
        z, m_fused = self.fuse(z_q, m)
        return {"z_q": z_q, "z": z, "m_fused": m_fused, "text": t}

    # ---- reconstruction --------------------------------------------------------------------------------------
    def rec_target(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The MAE decoder's target for the image as the MAE encoder sees it (per-patch normalised pixels when the
        MAE was pretrained so): [B, N, p*p*3]."""
        return mae_target(self.mim.prepare(pixel_values), self.patch, self.norm_pix)

    def rec_loss(self, m_fused: torch.Tensor, ids_restore: torch.Tensor, mask: torch.Tensor,
                 target_pixels: torch.Tensor) -> torch.Tensor:
        """L_rec: MSE between decoder(M') and the target, over masked patches only."""
        pred = self.decoder(m_fused, ids_restore)  # [B, N, p*p*3]
        return masked_mse(pred, self.rec_target(target_pixels), mask)

    # ---- the LLM side (stage 2) --------------------------------------------------------------------------------
    def visual_tokens(self, pixel_values: torch.Tensor):
        # stage 2 trains on the MAE input it is evaluated on, unless mask_stage2
        k = self.knobs
        s = self.streams(pixel_values, masked=k.mask_stage2 if self.training else k.mask_at_inference)
        out = self.qformer_pass(s["feats"], s["m"])  # queries only: no text in the LLM-alignment stage
        prefix = self.fc(out["z"])  # [B, n_q, d_lm]
        extras = {"z_q": out["z_q"], "z": out["z"], "m_fused": out["m_fused"]}
        if self.uses_mae:
            extras.update(m=s["m"], ids_restore=s["ids_restore"], mask=s["mask"], pixel_values=pixel_values)
        return prefix, extras

    def loss_stage2(self, batch: dict) -> torch.Tensor:
        out = self.forward(batch)
        loss = self.next_token_loss(out["logits"], out["labels"])
        if self.knobs.rec_stage2:
            e = out["extras"]
            loss = loss + self.rec_loss(e["m_fused"], e["ids_restore"], e["mask"], e["pixel_values"])
        return loss

    # ---- stage 1: ITC + ITM + ITG (+ L_rec) on captions -------------------------------------------------------
    def caption_text(self, batch: dict):
        """The caption tokens (+ eos) of a 'caption' batch, left-aligned: ids [B, T], valid [B, T]."""
        labels = batch["labels"]
        keep = labels != -100
        T = int(keep.sum(1).max())
        ids = torch.full((labels.shape[0], T), self.tokenizer.pad_token_id, dtype=torch.long)
        valid = torch.zeros(labels.shape[0], T, dtype=torch.bool)
        for b in range(labels.shape[0]):
            row = labels[b][keep[b]]
            ids[b, : len(row)] = row
            valid[b, : len(row)] = True
        return ids.to(self.device), valid.to(self.device)

    def itc_similarity(self, z: torch.Tensor, text_cls: torch.Tensor):
        """ITC scores: for image i and text j, the max over queries of the normalised query-text dot product,
        divided by the temperature. Returns (sim_i2t [B, B], image feats [B, n_q, e], text feats [B, e])."""
        img = F.normalize(self.heads.vision_proj(z), dim=-1)  # [B, n_q, e]
        txt = F.normalize(self.heads.text_proj(text_cls), dim=-1)  # [B, e]
        per_query = torch.einsum("iqe,je->ijq", img, txt)  # [B_img, B_txt, n_q]
        temp = self.heads.temp.clamp(0.001, 0.5)
        return per_query.max(dim=-1).values / temp, img, txt

    def stage1_terms(self, batch: dict, generator=None) -> dict:
        dev = self.device
        pixels = batch["pixel_values"].to(dev)
        ids, valid = self.caption_text(batch)
        B = ids.shape[0]
        s = self.streams(pixels, generator)
        # same-caption matrix: identical captions are positives for ITC and never ITM negatives
        same = (ids[:, None, :] == ids[None, :, :]).all(-1)  # [B, B]

        # ITC: unimodal mask; Z' from the queries, [CLS] output of the text
        itc = self.qformer_pass(s["feats"], s["m"], ids, valid, "itc")
        sim_i2t, _, _ = self.itc_similarity(itc["z"], itc["text"][:, 0])  # [B, B]
        tgt = same.float() / same.float().sum(1, keepdim=True)
        l_itc = 0.5 * (F.cross_entropy(sim_i2t.float(), tgt) + F.cross_entropy(sim_i2t.t().float(), tgt))

        # ITM: bidirectional mask; hard negatives drawn in proportion to the ITC similarity
        with torch.no_grad():
            w_i2t = F.softmax(sim_i2t.float(), dim=1).masked_fill(same, 0) + 1e-8 * (~same)
            w_t2i = F.softmax(sim_i2t.t().float(), dim=1).masked_fill(same, 0) + 1e-8 * (~same)
            has_neg = (~same).any(1)
            neg_txt = torch.where(has_neg, torch.multinomial(w_i2t + (~has_neg[:, None]).float(), 1)[:, 0],
                                  torch.arange(B, device=dev))
            neg_img = torch.where(has_neg, torch.multinomial(w_t2i + (~has_neg[:, None]).float(), 1)[:, 0],
                                  torch.arange(B, device=dev))
        img_idx = torch.cat([torch.arange(B, device=dev), neg_img, torch.arange(B, device=dev)])  # [3B]
        txt_idx = torch.cat([torch.arange(B, device=dev), torch.arange(B, device=dev), neg_txt])
        itm_labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(dev)
        itm_labels[B:] = torch.where(same[img_idx[B:], txt_idx[B:]], 1, 0)  # a "negative" with the same caption
        itm = self.qformer_pass(s["feats"][img_idx], None if s["m"] is None else s["m"][img_idx],
                                ids[txt_idx], valid[txt_idx], "itm")
        itm_logits = self.heads.itm(itm["z"]).mean(dim=1)  # [3B, 2]: logits averaged over queries
        l_itm = F.cross_entropy(itm_logits.float(), itm_labels)

        # ITG: multimodal-causal mask; [DEC] + caption, next-token loss on the caption (+ eos)
        itg = self.qformer_pass(s["feats"], None, ids, valid, "itg")  # query states as in the ITC pass
        logits = self.heads.itg(self.heads.itg_ln(itg["text"][:, :-1]))  # [B, T, V]: position k predicts ids[k]
        l_itg = F.cross_entropy(logits.flatten(0, 1).float(), ids.masked_fill(~valid, -100).flatten(),
                                ignore_index=-100)

        terms = {"itc": l_itc, "itm": l_itm, "itg": l_itg}
        if self.knobs.rec_stage1:  # on the ITC pass (text-free queries; identical to the ITG pass's)
            terms["rec"] = self.rec_loss(itc["m_fused"], s["ids_restore"], s["mask"], pixels)
        with torch.no_grad():
            hit = same[torch.arange(B, device=dev), sim_i2t.argmax(1)].float().mean()
            terms["_itc_acc"] = hit
            terms["_itm_acc"] = (itm_logits.argmax(1) == itm_labels).float().mean()
        terms["_sim_i2t"] = sim_i2t
        return terms

    def loss_stage1(self, batch: dict) -> torch.Tensor:
        terms = self.stage1_terms(batch)
        loss = sum(v for k, v in terms.items() if not k.startswith("_"))  # equal weights (1:1:1:1)
        self.stage1_log.append({k: float(v.detach()) for k, v in terms.items() if k != "_sim_i2t"})
        return loss

    # ---- stages ---------------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        k, b = self.knobs, self.budget
        fusion = ("fusion",) if self.fusion is not None else ()
        s2 = ("qformer.query", "qformer.shared") + fusion + ("fc",)
        stages = [Stage("stage1", ("qformer",) + fusion + ("heads",), loss="stage1", task="caption",
                        share=k.stage1_share, steps=k.stage1_steps or None,
                        batch=k.stage1_batch or None)]
        if k.describe_share > 0:
            stages.append(Stage("describe", s2, loss="stage2", task="describe", share=k.describe_share))
        qa_share = 1.0 - k.stage1_share - k.describe_share
        if k.tune_llm:
            stages.append(Stage("stage2", s2 + ("lm",), loss="stage2", task="qa", share=qa_share,
                                lr={"lm": b.llm_lr}))
        else:
            stages.append(Stage("stage2", s2, loss="stage2", task="qa", share=qa_share))
        return stages

    # ---- diagnostics and visualisation ----------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, pixel_values: torch.Tensor, seed: int = 0):
        """(masked input, reconstruction, target) as images [B, 3, H, W] in [0, 1] at the ViT's resolution.

        The MAE input is masked at ``mae_mask_ratio`` (fixed seed); the reconstruction is decoder(M') (decoder(M)
        without dual cross-attention) (un-normalised per patch with the target patch's mean and std when the MAE
        predicts normalised pixels), with the visible patches pasted from the input (as MAE's figures show them)."""
        if not self.uses_mae:
            raise ValueError("reconstruct() needs an MAE stream: knob features='both' or 'mim' (got 'cl')")
        dev = self.device
        pixels = pixel_values.to(dev)
        gen = torch.Generator(device=dev).manual_seed(seed)
        s_m, ids_restore, mask = self.mae_tokens(pixels, True, gen)
        if self.fusion is not None:
            z_q, _ = self.qformer(self.qformer.encode_features(self.clip_tokens(pixels), s_m))
            _, s_m = self.fusion(z_q, s_m)
        pred = self.decoder(s_m, ids_restore)  # [B, N, p*p*3] in the target's space
        enc = self.mim
        raw = patchify(enc.prepare(pixels), self.patch)  # [B, N, p*p*3], ViT-normalised pixels
        if self.norm_pix:
            mean, var = raw.mean(-1, keepdim=True), raw.var(-1, keepdim=True)
            pred_raw = pred * (var + 1e-6).sqrt() + mean
        else:
            pred_raw = pred
        m = mask[..., None]  # [B, N, 1], 1 = masked
        to_img = lambda x: (unpatchify(x, self.patch) * enc.std + enc.mean).clamp(0, 1)  # noqa: E731
        image = to_img(raw)  # [B, 3, H, W]
        hidden = unpatchify(m.expand_as(raw), self.patch)  # [B, 3, H, W], 1 on masked patches
        masked_input = image * (1 - hidden) + 0.5 * hidden  # masked patches shown grey
        return masked_input, to_img(pred_raw * m + raw * (1 - m)), image

    @torch.no_grad()
    def reconstruction_error(self, pixel_values: torch.Tensor, seed: int = 0) -> dict:
        """Masked MSE of decoder(M') and, for reference, of the plain frozen MAE (decoder(M)) on the same masks."""
        dev = self.device
        pixels = pixel_values.to(dev)
        gen = torch.Generator(device=dev).manual_seed(seed)
        m, ids_restore, mask = self.mae_tokens(pixels, True, gen)
        target = self.rec_target(pixels)
        out = {"rec_mse_mae_only": float(masked_mse(self.decoder(m, ids_restore), target, mask))}
        if self.fusion is not None:
            z_q, _ = self.qformer(self.qformer.encode_features(self.clip_tokens(pixels), m))
            _, m_fused = self.fusion(z_q, m)
            out["rec_mse"] = float(masked_mse(self.decoder(m_fused, ids_restore), target, mask))
        return out

    @torch.no_grad()
    def itc_matrix(self, caption_batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """ITC similarity of every image to every caption of a 'caption' batch ([B, B], max over queries /
        temperature, eval mode) and the same-caption matrix (identical captions are positives)."""
        with eval_mode(self):
            ids, valid = self.caption_text(caption_batch)
            s = self.streams(caption_batch["pixel_values"].to(self.device))
            itc = self.qformer_pass(s["feats"], s["m"], ids, valid, "itc")
            sim, _, _ = self.itc_similarity(itc["z"], itc["text"][:, 0])
        return sim, (ids[:, None, :] == ids[None, :, :]).all(-1)

    @torch.no_grad()
    def itc_accuracy(self, caption_batch: dict) -> float:
        """In-batch image->text ITC retrieval accuracy on a 'caption' batch (identical captions count as hits)."""
        sim, same = self.itc_matrix(caption_batch)
        return float(same[torch.arange(len(sim), device=sim.device), sim.argmax(1)].float().mean())

    @torch.no_grad()
    def diagnostics(self, batch: dict) -> dict:
        out = super().diagnostics(batch)
        out["n_prefix_tokens"] = self.knobs.n_queries
        if self.uses_mae:
            out.update(self.reconstruction_error(batch["pixel_values"]))
        log = self.stage1_log
        if log:
            tail = log[-max(1, len(log) // 10):]  # the last 10% of stage-1 steps
            head = log[: max(1, len(log) // 10)]
            mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
            out["itc_accuracy_train"] = mean(tail, "_itc_acc")
            out["itm_accuracy_train"] = mean(tail, "_itm_acc")
            out["stage1_losses"] = {key: [mean(head, key), mean(tail, key)]
                                    for key in log[0] if not key.startswith("_")}
        return out
