"""Ovis (Lu et al., "Ovis: Structural Embedding Alignment for Multimodal Large Language Model", arXiv 2405.20797).

The idea: text reaches an LLM as *rows of an embedding table* looked up by discrete ids, while a LLaVA-style
connector hands it unstructured continuous vectors. Ovis gives images the same structure. A learnable
*visual embedding table* (VTE, K rows, separate from and untied to the LLM's own embeddings) plays the role
of a visual vocabulary; a visual head turns each ViT patch feature into a probability distribution p over
the table (softmax of a bias-free Linear followed by a LayerNorm over the logits), and the patch's visual
token is the expected table row under p, ``p @ VTE.weight`` (paper Eq. 3): a "probabilistic token" that is a
dense mix of table rows, exactly like a one-hot text id when p is one-hot. The last ``N_IND = 2`` table rows
are reserved indicators: each image is wrapped in one-hot rows K-2 (begin) and K-1 (end), patches put exact
zeros there. Only the LLM's next-token cross-entropy trains everything (no auxiliary loss).

Forward (v1.0): ViT last block, raw (before the final norm), CLS dropped ``[B, N, d]`` -> optional
space-to-depth (``hidden_stride``) ``[B, N/hs^2, hs^2 d]`` -> Linear(no bias) -> LayerNorm(K - 2) -> softmax
``[B, n, K-2]`` -> pad 2 zero columns, wrap with the indicator one-hots ``[B, n+2, K]`` -> ``@ VTE``
``[B, n+2, d_lm]``.

Stages (paper S1/S2/S3, scaled): S1 head + VTE on description data ("describe": image -> full scene text;
the paper uses captions); S2 the visual tokenizer + VTE on the same data (the paper's description data); S3
head, VTE and the LLM on VQA. The paper also trains the ViT (its last block in S1, all of it in S2 and S3);
here the ViT stays frozen by default (``vit``), see the learning-rate note below.

Substitutes for the tiny world (what the paper reports: docs/papers.md):

- Table size K defaults to 256 (the paper's 131,072 is sized to a 150k-token LLM vocabulary; our LLM has 64
  words, and a cell holds one of 145 contents at the default world: 4 shapes x 6 colours x 2 sizes x 3
  textures, or nothing). Works from 16 to 4096+; the workbook sweeps it.
- With ``vit="trained"`` the last ViT block is trained but *not* re-initialised in S1 by default (the v1.5
  scripts' choice): the tiny budget cannot re-learn a block from scratch. ``reinit_last_block=True`` (with
  ``vit="trained"``) gives v1.0's recipe.
- Learning rates: new modules (head, VTE, a re-initialised block) use ``budget.vlm_lr``; pretrained modules
  (the ViT, the LLM) use ``budget.llm_lr``. The official v1 scripts (``scripts/v1/Ovis-Clip-Qwen1.5-7B-S1.sh``
  to ``-S3.sh`` in the Ovis GitHub repository) train the ViT gently: 1e-4 in S1 (re-initialised layers, head,
  VTE) and S2 (visual tokenizer, VTE), 2e-5 in S3, at a global batch of 1,024 by gradient accumulation. At this
  budget's batch the pretrained tiny ViT loses more than it gains when fine-tuned at ``llm_lr``: frozen it
  scores 6.4 points higher over three paired seeds, so ``vit="frozen"`` is the default and ``vit="trained"``
  keeps the paper's schedule (docs/lab-notes/recipes.md).
- Stage shares (the paper's S1-S3 run on datasets of their own sizes): S3 gets LLaVA's instruction share of the
  VLM steps (``qa_share=0.7``), which scored 2.4 points above an even split (0.5) over five paired seeds.
- Gumbel mode is the official code's ``F.gumbel_softmax(logits, tau, hard=True)`` (the Ovis GitHub repo's
  ``modeling_ovis.py``): softmax((z + g) / tau), the noise added before the temperature, so the forward one-hot
  is distributed as softmax(z) whatever tau. Its temperature is a fixed knob (the code anneals it 5 -> 0.05); at
  evaluation (``model.eval()``) Gumbel noise is dropped and the argmax is used.
- ``st``: straight-through argmax computed on the *softmax* (as the HF transformers port does); the official
  code passes the raw logits through the estimator.
- ``indexings`` (top-k of p, renormalised; an extension knob the paper's App. E motivates, where only ~288 of
  131k entries exceed 1e-4) uses a straight-through gradient: the forward pass is the sparse renormalised p,
  the backward pass is the dense p's (so k=1 with softmax equals ``st``, and the head still learns).
- ``vte_init``: the paper's N(0, 1) (default) or ``wte`` (the code's ``vte_re_init``: the LLM embedding's mean
  and std, here std ~0.05); the paper's N(0, 1) is the default, since ``wte`` did no better in one measurement.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..train import Stage
from .base import VLM, Knobs, knob

N_IND = 2  # reserved indicator rows (v1.0): K-2 = image begin, K-1 = image end


@dataclass
class OvisKnobs(Knobs):
    table_size: int = knob(256, check=(lambda v: 4 <= v <= 1 << 20, "an int between 4 and 1048576"),
                           doc="visual vocabulary size K (rows of the VTE, incl. 2 indicator rows; paper: 131072 "
                               "for a 150k-word LLM, scaled to 256 for the 64-word world)")
    indexings: int = knob(0, check=(lambda v: v >= 0, ">= 0 (0 = dense)"),
                          doc="table entries kept per patch: top-k of p, renormalised (1 = a hard index); "
                              "0 = all (dense, the paper)")
    tokenize: str = knob("softmax", choices=("softmax", "gumbel", "st"),
                         doc="softmax (paper), gumbel (hard Gumbel-softmax), st (straight-through argmax on the "
                             "softmax, as the HF port)")
    # bounded so that the logits divided by it stay finite in fp32 (the official code anneals 5 -> 0.05)
    temperature: float = knob(1.0, check=(lambda v: 0.01 <= v <= 100, "> 0, between 0.01 and 100"),
                              doc="divides the (normalised) logits before softmax; in gumbel mode the noisy logits, "
                                  "softmax((z + g) / tau) as F.gumbel_softmax")
    head_norm: bool = knob(True, doc="LayerNorm(K-2) over the head's logits (a learned per-entry temperature)")
    vte_init: str = knob("normal", choices=("normal", "wte"),
                         doc="VTE init: normal = N(0,1) (paper; measured at least as good here), wte = the LLM "
                             "embedding's mean/std (the code's vte_re_init)")
    hidden_stride: int = knob(1, check=(lambda v: 1 <= v <= 4, "between 1 and 4"),
                              doc="space-to-depth stride: hs x hs patches -> one token (1 = v1.0; 2 = v2.5)")
    reinit_last_block: bool = knob(False, doc="re-initialise the last ViT block before S1 (v1.0) or only "
                                              "unfreeze it (v1.5, default)")
    vit: str = knob("frozen", choices=("trained", "frozen"),
                    doc="the vision tower: frozen throughout (default: only the head and the VTE learn the image "
                        "side) or trained (last block in S1, all of it in S2 and S3, as the paper)")
    qa_share: float = knob(0.7, check=(lambda v: 0.1 <= v <= 0.9, "between 0.1 and 0.9"),
                           doc="share of the VLM steps in S3 (VQA); S1 and S2 split the rest 3:2 (default: "
                               "LLaVA's instruction share)")

    def validate(self, arch: str) -> None:
        if self.vit == "frozen" and self.reinit_last_block:
            raise ValueError(f"knob 'reinit_last_block'=True of arch={arch!r} needs knob 'vit'='trained' (a "
                             f"re-initialised block must train); use reinit_last_block=False or vit='trained'")
        entries = self.table_size - N_IND  # the rows a patch can index: the last N_IND are the image indicators
        if self.indexings > entries:
            raise ValueError(
                f"knob 'indexings' of arch={arch!r} is {self.indexings}: top-k larger than the table's {entries} "
                f"entries (knob 'table_size' = {self.table_size}, of which {N_IND} are indicator rows); allowed "
                f"values: 0 (dense) or 1..{entries}")


def space_to_depth(x: torch.Tensor, hs: int) -> torch.Tensor:
    """[B, S*S, d] -> [B, ceil(S/hs)^2, hs*hs*d]: zero-pad the grid's bottom/right to a multiple of hs, group
    hs x hs blocks in row-major order; each block's vector is ordered (row in block, column in block, channel)."""
    if hs == 1:
        return x
    B, N, d = x.shape
    S = int(round(math.sqrt(N)))
    g = x.reshape(B, S, S, d)
    pad = (-S) % hs
    g = F.pad(g, (0, 0, 0, pad, 0, pad))  # [B, S+pad, S+pad, d]
    T = (S + pad) // hs
    g = g.reshape(B, T, hs, T, hs, d).permute(0, 1, 3, 2, 4, 5)  # [B, T, T, hs(row), hs(col), d]
    return g.reshape(B, T * T, hs * hs * d)


def _reinit_block(block: nn.Module) -> None:
    """The ViT's own init (timm): truncated normal(0.02) for Linear weights, zero biases, LayerNorm reset."""
    for m in block.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            m.reset_parameters()


class Ovis(VLM):
    arch = "ovis"
    KnobsClass = OvisKnobs

    def __init__(self, backbones, knobs: OvisKnobs, budget):
        super().__init__(backbones, knobs, budget)
        self.vision = copy.deepcopy(backbones.cl)
        # Ovis reads the raw last block; the encoder's pooled-path norms are unused: drop them so that every
        # parameter of the visual tokenizer takes part in the forward pass
        self.vision.vit.norm = nn.Identity()
        self.vision.vit.fc_norm = nn.Identity()
        self.vision.requires_grad_(False)
        self.last_block = f"vision.vit.blocks.{self.vision.depth - 1}"
        if knobs.reinit_last_block:
            _reinit_block(self.get_submodule(self.last_block))
        K, hs = knobs.table_size, knobs.hidden_stride
        self.K = K
        self.head = nn.Sequential(
            nn.Linear(hs * hs * self.vision.dim, K - N_IND, bias=False),  # [.., hs^2 d] -> [.., K-2] logits
            nn.LayerNorm(K - N_IND) if knobs.head_norm else nn.Identity())
        self.vte = nn.Embedding(K, self.d_lm)  # the visual embedding table, untied to the LLM's
        wte = self.lm.get_input_embeddings().weight
        with torch.no_grad():
            if knobs.vte_init == "normal":
                nn.init.normal_(self.vte.weight, 0.0, 1.0)
            else:
                nn.init.normal_(self.vte.weight, float(wte.mean()), float(wte.std()))

    # ---- the visual tokenizer -------------------------------------------------------------------------
    @property
    def n_patch_tokens(self) -> int:
        return math.ceil(self.vision.grid / self.knobs.hidden_stride) ** 2

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.vision(pixel_values, layers=[-1])[0]  # [B, N, d] raw last block, CLS dropped
        return space_to_depth(x, self.knobs.hidden_stride)  # [B, n, hs^2 d]

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))  # [B, n, K-2] (LayerNormed)

    def probabilities(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Head output [B, n, K-2] -> (p fed to the VTE, dense softmax p) each [B, n, K-2], rows summing to 1."""
        kn = self.knobs
        z = logits.float()  # the softmax in fp32, as v2.5
        soft = (z / kn.temperature).softmax(-1)
        if kn.tokenize == "softmax":
            p = soft
        else:
            if kn.tokenize == "gumbel" and self.training:
                # F.gumbel_softmax's sample (official code): g ~ Gumbel(0, 1) from the global (seeded) generator,
                # drawn as -log Exp(1) like torch's; the noise is added before dividing by tau
                g = -torch.empty_like(z).exponential_().clamp_(min=torch.finfo(z.dtype).tiny).log()
                y = ((z + g) / kn.temperature).softmax(-1)
            else:  # st, or gumbel at evaluation (no noise)
                y = soft
            hard = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
            p = hard + (y - y.detach())  # exact one-hot forward, soft gradient backward
        k = kn.indexings
        if 0 < k < p.shape[-1]:
            top = p.detach().topk(k, dim=-1)
            sparse = torch.zeros_like(p).scatter(-1, top.indices, top.values)
            sparse = sparse / sparse.sum(-1, keepdim=True)  # renormalised top-k
            p = sparse + (p - p.detach())  # straight-through: sparse forward, dense gradient
        return p, soft

    def pad_and_wrap(self, p: torch.Tensor) -> torch.Tensor:
        """[B, n, K-2] -> [B, n+2, K]: zero indicator columns, then one-hot rows K-2 (begin) / K-1 (end)."""
        B, n, _ = p.shape
        p = F.pad(p, (0, N_IND))  # [B, n, K]
        begin = F.one_hot(torch.full((B, 1), self.K - 2, device=p.device), self.K).to(p.dtype)
        end = F.one_hot(torch.full((B, 1), self.K - 1, device=p.device), self.K).to(p.dtype)
        return torch.cat([begin, p, end], dim=1)  # [B, n+2, K]

    def embed(self, p: torch.Tensor) -> torch.Tensor:
        """Probabilistic tokens [.., K] (float) -> p @ VTE [.., d_lm]; integer ids [..] -> row lookup."""
        if not p.is_floating_point():
            return self.vte(p)
        return p.to(self.vte.weight.dtype) @ self.vte.weight

    def visual_tokens(self, pixel_values):
        p, soft = self.probabilities(self.logits(pixel_values))  # [B, n, K-2]
        full = self.pad_and_wrap(p)  # [B, n+2, K]
        return self.embed(full), {"p": p, "p_soft": soft}  # [B, n+2, d_lm]

    @torch.no_grad()
    def patch_distribution(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Each patch's distribution over the whole table (indicator columns 0): [B, n, K]. For notebooks."""
        p, _ = self.probabilities(self.logits(pixel_values.to(self.device)))
        return F.pad(p, (0, N_IND))

    # ---- training --------------------------------------------------------------------------------------
    def stages(self):
        b, k = self.budget, self.knobs
        block_lr = b.vlm_lr if k.reinit_last_block else b.llm_lr
        rest = 1.0 - k.qa_share
        block, vision = ((self.last_block,), ("vision",)) if k.vit == "trained" else ((), ())
        return [
            Stage("s1_vte", block + ("head", "vte"), task="describe", share=0.6 * rest,
                  lr={self.last_block: block_lr}),
            Stage("s2_tokenizer", vision + ("head", "vte"), task="describe", share=0.4 * rest,
                  lr={"vision": b.llm_lr}),
            Stage("s3_instruct", vision + ("head", "vte", "lm"), task="qa", share=k.qa_share,
                  lr={"vision": b.llm_lr, "lm": b.llm_lr}),
        ]

    # ---- diagnostics -----------------------------------------------------------------------------------
    @torch.no_grad()
    def diagnostics(self, batch: dict) -> dict:
        out = super().diagnostics(batch)
        logits = self.logits(batch["pixel_values"].to(self.device))
        p, soft = self.probabilities(logits)  # [B, n, K-2]
        ent = -(p * p.clamp_min(1e-30).log()).sum(-1)  # [B, n]
        ent_soft = -(soft * soft.clamp_min(1e-30).log()).sum(-1)
        used = torch.unique(p.argmax(-1)).numel()
        out.update({
            "ovis_table_size": self.K,
            "ovis_patch_entropy": float(ent.mean()),
            "ovis_effective_entries": float(ent.exp().mean()),
            "ovis_frac_entries_gt_1e-4": float((p > 1e-4).float().mean()),
            "ovis_entries_gt_1e-4": float((p > 1e-4).float().sum(-1).mean()),
            "ovis_table_usage": used / (self.K - N_IND),
            "ovis_softmax_entropy": float(ent_soft.mean()),
            "ovis_visual_token_norm": float(self.embed(F.pad(p, (0, N_IND))).norm(dim=-1).mean()),
            "ovis_text_embedding_norm": float(self.lm.get_input_embeddings().weight.norm(dim=-1).mean()),
        })
        return out
