"""Attention-mask builders shared by the architectures.

Rows are queries, columns keys. ``allowed(i, j) = key_valid[j] and (j <= i or same_image(i, j))`` where
``same_image`` holds when both positions belong to the same image span (``image_ids > 0`` and equal). With
``bidirectional=False`` this is the plain causal mask. Image spans never see each other or later text, so
next-token training stays valid with several images (our rule: the LLaViT paper evaluates single images).
"""
from __future__ import annotations

import torch

ATTENTION_TYPES = ("causal", "bidirectional")


def allowed_mask(attention_mask: torch.Tensor, image_ids: torch.Tensor | None, bidirectional: bool) -> torch.Tensor:
    """Boolean [B, L, L]: True where query i may attend to key j."""
    B, L = attention_mask.shape
    idx = torch.arange(L, device=attention_mask.device)
    allowed = (idx[None, :] <= idx[:, None]).expand(B, L, L)  # causal
    if bidirectional and image_ids is not None:
        same = (image_ids[:, :, None] == image_ids[:, None, :]) & (image_ids[:, :, None] > 0)
        allowed = allowed | same
    return allowed & attention_mask[:, None, :].bool()


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean [B, L, L] -> additive float mask [B, 1, L, L] (0 allowed, dtype-min elsewhere), as transformers'
    eager and SDPA attention take it."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[:, None]


def image_span_ids(visual_mask: torch.Tensor) -> torch.Tensor:
    """Number the contiguous visual spans of each row 1, 2, ... (0 = text): [B, L] bool -> [B, L] long."""
    v = visual_mask.long()
    starts = (v - torch.nn.functional.pad(v, (1, 0))[:, :-1]).clamp(min=0)
    return torch.cumsum(starts, dim=1) * v
