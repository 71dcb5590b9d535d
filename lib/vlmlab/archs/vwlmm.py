"""VW-LMM: multi-modal auto-regressive modeling via visual words.

Peng, Li, Zhao, Xie, Shi, Zhou and Zhang, "Multi-modal Auto-regressive Modeling via Visual Words",
arXiv 2403.07720 (2024).

LLaVA-style LMMs train only on text targets, so the image positions of the sequence get no supervision. VW-LMM
gives them a target in the LLM's own vocabulary: a "visual-modality" (VM) head maps each projected patch
feature z_j to a distribution q_j = softmax(VMhead(z_j)) over the LLM vocabulary, its "visual words". The LLM
is then trained to predict the next patch's visual words with its ordinary LM head: for each position t whose
successor t+1 is an image patch, L_vm = KL(q_{t+1} || softmax(lm_head(h_t))), averaged over those positions
(the first patch is predicted from the last text token before the image; the last patch's output is unused).
The total loss is L_lm + lambda_vm * L_vm. As in the official code the target q is not detached, so the VM head
and the projector learn through both sides of the KL. The LLM still reads the continuous features z_j; the PIF
variant instead feeds the pseudo-image feature q_j @ E_txt, a mix of the LLM's own input-embedding rows.

What we reproduce and what we had to choose (what the paper reports: docs/papers.md):
- Vision and projector are LLaVA-1.5's (frozen CL ViT, penultimate block, CLS dropped; ``mlp2x_gelu``
  connector), here the tiny world's CL ViT (16 patches of 16 px, one per grid cell) and the 64-word LLM.
- The VM head is ``Linear(d_lm -> V, bias=False)`` with V = the LLM's vocabulary (64 words here instead of
  32,000) and is initialised like a transformers ``post_init`` linear (normal, std = the LLM's
  ``initializer_range``) [I: the official checkpoints load it, its initialisation is not published].
- Training stages are not given in the material we had; we use LLaVA's two stages with the VM head
  trained wherever the connector is [I]: align (connector + VM head, describe data), instruct (connector +
  VM head + LLM, VQA data), both with L_lm + lambda_vm * L_vm.
- With no supervised position (no image in the batch) L_vm is 0, where the official ``batchmean`` gives NaN.
- The VM head is evaluated only at image positions: q is a [B, N, V] tensor, never [B, L, V].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..train import Stage
from ..world import WorldConfig
from .base import VLM, Knobs, knob, frozen_copy
from .llava import mlp_connector

FEATURE_LAYER = -2  # LLaVA-1.5's mm_vision_select_layer: the penultimate ViT block
CONNECTOR_DEPTH = 2  # LLaVA-1.5's mlp2x_gelu
N_DIAG_IMAGES = 4  # images whose per-patch visual words the diagnostics list


@dataclass
class VWLMMKnobs(Knobs):
    # bounded so that lambda_vm * L_vm stays finite in fp32 at step 0 (L_vm is a KL of a few nats there)
    lambda_vm: float = knob(1.0, check=(lambda v: math.isfinite(v) and 0 <= v <= 100,
                                        "a finite number >= 0 and <= 100"),
                            doc="weight of the visual-word KL loss L_vm (paper/code: 1; 0 = the LLaVA loss)")
    detach_target: bool = knob(False, doc="stop the gradient through the target q (code: False, the VM head and "
                                          "projector learn through q; True: a fixed-target distillation reading)")
    vm_head: str = knob("linear", choices=("linear", "embedding"),
                        doc="the VM head: a free Linear (paper) or anchored to the LLM's input-embedding rows, "
                            "q_j = softmax(z_j E_txt^T) with E_txt held fixed in L_vm (no parameters of its own)")
    pif: bool = knob(False, doc="pseudo-image features: the LLM reads q_j @ E_txt (its own input-embedding "
                                "table) at image positions instead of the continuous z_j (VW-LMM-Vicuna-pif)")


def vm_targets(visual_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which LM outputs L_vm supervises, and by which patch.

    visual_mask [B, L] (True at image-patch positions). Visual positions are enumerated in row-major order
    (that is the order of q.flatten(0, 1) after splicing). Returns (rows [M], pred_pos [M], patch_index [M]):
    the LM output at (rows, pred_pos) = t predicts the patch at t + 1, which is visual item ``patch_index`` of
    the flattened q. Patches at position 0 have no predictor and are skipped.
    """
    rows, pos = visual_mask.nonzero(as_tuple=True)  # [n_visual_total] each, row-major
    idx = torch.arange(rows.numel(), device=visual_mask.device)
    keep = pos >= 1
    return rows[keep], pos[keep] - 1, idx[keep]


def vm_loss(lm_logits: torch.Tensor, visual_mask: torch.Tensor, q_logits: torch.Tensor,
            detach_target: bool = False) -> torch.Tensor:
    """L_vm = mean over supervised positions t of KL(q_{t+1} || p_t), summed over the vocabulary.

    lm_logits [B, L, V] (the LLM's own head), visual_mask [B, L], q_logits [n_visual_total, V]: the VM-head
    logits of every visual position in row-major order. ``batchmean`` as the official ``KLDivLoss``; 0 (not
    NaN) when nothing is supervised.
    """
    rows, pred_pos, patch = vm_targets(visual_mask)
    if rows.numel() == 0:
        return lm_logits.new_zeros((), dtype=torch.float32)
    log_p = F.log_softmax(lm_logits[rows, pred_pos].float(), dim=-1)  # [M, V]
    log_q = F.log_softmax(q_logits[patch].float(), dim=-1)  # [M, V]
    if detach_target:
        log_q = log_q.detach()
    return F.kl_div(log_p, log_q, reduction="sum", log_target=True) / rows.numel()


class VWLMM(VLM):
    arch = "vwlmm"
    KnobsClass = VWLMMKnobs

    def __init__(self, backbones, knobs: VWLMMKnobs, budget):
        super().__init__(backbones, knobs, budget)
        self.vision = frozen_copy(backbones.cl)
        self.connector = mlp_connector(self.vision.dim, self.d_lm, CONNECTOR_DEPTH)
        self.vocab_size = self.lm.get_output_embeddings().out_features
        self.vm_head = nn.Linear(self.d_lm, self.vocab_size, bias=False)
        nn.init.normal_(self.vm_head.weight, std=getattr(self.lm.config, "initializer_range", 0.02))

    # ---- forward -------------------------------------------------------------------------------------------
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values, layers=[FEATURE_LAYER])[0]  # [B, N, d_vit]

    def pseudo_features(self, q: torch.Tensor) -> torch.Tensor:
        """PIF: q [..., V] -> q @ E_txt [..., d_lm], E_txt the LLM's input-embedding matrix [V, d_lm]."""
        E = self.lm.get_input_embeddings().weight  # [V, d_lm]
        return q.to(E.dtype) @ E

    def vm_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The VM head: z [..., d_lm] -> visual-word logits [..., V]."""
        if self.knobs.vm_head == "embedding":  # anchored: a patch's visual word is the row its z points to
            return z @ self.lm.get_input_embeddings().weight.detach().t()
        return self.vm_head(z)

    def visual_tokens(self, pixel_values):
        z = self.connector(self.features(pixel_values))  # [B, N, d_lm]
        q_logits = self.vm_logits(z)  # [B, N, V]: only at image positions
        if self.knobs.pif:
            vis = self.pseudo_features(F.softmax(q_logits.float(), dim=-1))  # [B, N, d_lm]
        else:
            vis = z
        return vis, {"z": z, "q_logits": q_logits}

    def losses(self, batch: dict) -> dict:
        """{"lm": L_lm, "vm": L_vm, "total": L_lm + lambda_vm * L_vm} on one batch."""
        out = self.forward(batch)
        lm = self.next_token_loss(out["logits"], out["labels"])
        q_logits = out["extras"].get("q_logits")
        if q_logits is None:  # no image in the batch
            vm = lm.new_zeros(())
        else:
            vm = vm_loss(out["logits"], out["visual_mask"], q_logits.flatten(0, 1), self.knobs.detach_target)
        lam = self.knobs.lambda_vm
        total = lm if lam == 0 else lm + lam * vm  # lambda 0 is the LLaVA loss, bit for bit
        return {"lm": lm, "vm": vm, "total": total}

    def loss_vw(self, batch: dict) -> torch.Tensor:
        return self.losses(batch)["total"]

    def stages(self):
        b = self.budget
        head = ("vm_head",) if self.knobs.vm_head == "linear" else ()  # the anchored head has no parameters
        return [
            Stage("align", ("connector",) + head, loss="vw", task="describe", share=0.3),
            Stage("instruct", ("connector",) + head + ("lm",), loss="vw", task="qa", share=0.7,
                  lr={"lm": b.llm_lr}),
        ]

    # ---- visual words --------------------------------------------------------------------------------------
    @torch.no_grad()
    def visual_words(self, pixel_values: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k visual words of each patch: (token ids [B, N, k], probabilities [B, N, k])."""
        if not 1 <= k <= self.vocab_size:
            raise ValueError(f"k={k}; allowed values: 1..{self.vocab_size} (the LLM vocabulary)")
        _, extras = self.visual_tokens(pixel_values.to(self.device))
        q = F.softmax(extras["q_logits"].float(), dim=-1)  # [B, N, V]
        probs, ids = q.topk(k, dim=-1)
        return ids, probs

    @torch.no_grad()
    def diagnostics(self, batch: dict) -> dict:
        out = super().diagnostics(batch)
        pix = batch["pixel_values"].to(self.device)
        _, extras = self.visual_tokens(pix)
        q = F.softmax(extras["q_logits"].float(), dim=-1)  # [B, N, V]
        entropy = -(q * q.clamp_min(1e-30).log()).sum(-1)  # [B, N]
        top = q.argmax(-1)  # [B, N]
        tok = self.tokenizer
        probs3, ids3 = q.topk(min(3, self.vocab_size), dim=-1)  # [B, N, 3] each
        out["visual_words_top3"] = [
            [tok.convert_ids_to_tokens(ids3[b, j].tolist()) for j in range(q.shape[1])]
            for b in range(min(N_DIAG_IMAGES, q.shape[0]))]
        out["visual_words_top3_prob"] = probs3[:N_DIAG_IMAGES].tolist()
        wc = WorldConfig()
        for name, words in (("color", wc.colors), ("shape", wc.shapes), ("texture", wc.textures),
                            ("size", wc.sizes)):
            ids = torch.tensor([i for i in tok.convert_tokens_to_ids(list(words)) if i != tok.unk_token_id],
                               device=top.device)
            out[f"top_visual_word_{name}_fraction"] = float(torch.isin(top, ids).float().mean())
        out["visual_word_entropy"] = float(entropy.mean())
        out["visual_word_entropy_max"] = math.log(self.vocab_size)
        losses = self.losses(batch)
        out["loss_lm"] = float(losses["lm"])
        out["loss_vm"] = float(losses["vm"])
        return out
