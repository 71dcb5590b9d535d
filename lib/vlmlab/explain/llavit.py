"""LLaViT explained on real tensors (notebook 15): the ViT blocks concatenated on channels, visual tokens routed
to their own Q/K/V projections inside every LLM layer, and bidirectional attention within the image.

Everything calls the model's own modules (``features``, ``connector``, ``build_inputs``, ``allowed``, the LLM's
``ModalityLinear`` projections and their visual twins ``visual_qkv``); forward pre-hooks only *read* the hidden
states entering each layer's projections. See :mod:`vlmlab.archs.llavit` for the paper.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F

from ..archs.base import eval_mode
from . import steps_table


@torch.no_grad()
def walkthrough(model, batch: dict) -> tuple[pd.DataFrame, dict]:
    """LLaViT's forward pass on a real batch: (table of the steps with shapes, the tensors)."""
    with eval_mode(model):
        dev = model.device
        pix = batch["pixel_values"].to(dev)
        blocks = model.vision(pix, layers=model.blocks)  # |L| x [B, N, d_vit]
        feats = model.features(pix)  # [B, N, |L| d_vit]
        vis = model.connector(feats)  # [B, N, d_lm]
        inp = model.build_inputs(batch)
        allowed = model.allowed(inp)
        out = model.forward(batch)
    v = model.vision
    steps = [("pixels", pix, "the image, RGB in [0, 1]")]
    for b, f in zip(model.blocks, blocks):
        steps.append((f"ViT block {b}", f, f"{v.grid}x{v.grid} patch tokens of the frozen CL ViT (CLS dropped)"))
    steps += [
        ("concatenated on channels", feats, f"{len(model.blocks)} blocks side by side per patch: same token count"),
        ("projector (mlp)", vis, f"{model.knobs.connector_depth}-layer MLP into the LLM's width"),
        ("LLM inputs_embeds", inp["inputs_embeds"], "visual tokens spliced at <img>"),
        ("modality mask", inp["visual_mask"], "True at visual tokens: routes them to W_Q/W_K/W_V^vis"
         if model.knobs.visual_qkv == "separate" else "(shared QKV: not used for routing)"),
        ("attention mask", allowed, f"{model.knobs.attention} within the image; text causal"),
        ("LLM logits", out["logits"], "next-token scores"),
    ]
    table = steps_table(steps)
    return table, {n: t for n, t, _ in steps} | {"inputs": inp, "blocks": blocks}


@torch.no_grad()
def projector_block_weights(model) -> pd.DataFrame:
    """How much the trained projector reads from each ViT block: the Frobenius norm of the first Linear's
    columns belonging to each block's slice of the concatenated channels, and its share of the total."""
    w = model.connector[0].weight.float()  # [d_lm, |L| * d_vit]
    d = model.vision.dim
    norms = [float(w[:, i * d:(i + 1) * d].norm()) for i in range(len(model.blocks))]
    tot = sum(n ** 2 for n in norms)
    return pd.DataFrame({"ViT block": model.blocks, "weight norm": norms,
                         "share of squared norm": [n ** 2 / tot for n in norms]})


@torch.no_grad()
def block_similarity(model, pixel_values: torch.Tensor) -> pd.DataFrame:
    """Mean cosine similarity between the same patch's features at every pair of read ViT blocks (how much the
    local and global blocks differ)."""
    feats = model.vision(pixel_values.to(model.device), layers=model.blocks)
    n = len(feats)
    m = [[float(F.cosine_similarity(feats[i], feats[j], dim=-1).mean()) for j in range(n)] for i in range(n)]
    return pd.DataFrame(m, index=[f"block {b}" for b in model.blocks], columns=[f"block {b}" for b in model.blocks])


@torch.no_grad()
def qkv_divergence(model, batch: dict) -> pd.DataFrame:
    """Per LLM layer and projection (q, k, v): on the visual tokens' real hidden states x entering that layer,
    ||W^vis x - W^text x|| / ||W^text x|| (mean over visual tokens) — what separate QKV change for the tokens
    that use them. Text tokens always take W^text. Empty with shared QKV."""
    if model.knobs.visual_qkv != "separate":
        return pd.DataFrame(columns=["layer", "projection", "relative difference"])
    seen: dict[int, torch.Tensor] = {}
    hooks = [layer.self_attn.q_proj.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0]))
             for i, layer in enumerate(model.lm.model.layers)]
    try:
        with eval_mode(model):
            out = model.forward(batch)
    finally:
        for h in hooks:
            h.remove()
    vm = out["visual_mask"]
    rows = []
    for i, layer in enumerate(model.lm.model.layers):
        x = seen[i][vm]  # [n_visual_total, d]: hidden states of the visual tokens (after the layer's input norm)
        for key in ("q", "k", "v"):
            lin = getattr(layer.self_attn, f"{key}_proj")
            text = F.linear(x, lin.weight, lin.bias).float()
            vis = model.visual_qkv[i][key](x).float()
            rel = ((vis - text).norm(dim=-1) / text.norm(dim=-1).clamp(min=1e-8)).mean()
            rows.append({"layer": i, "projection": key, "relative difference": float(rel)})
    return pd.DataFrame(rows)


def qkv_figure(div: pd.DataFrame, drift: dict | None = None):
    """Bars of :func:`qkv_divergence` per layer and projection (and the weight drift from the record, if given)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if len(div):
        sns.barplot(data=div, x="layer", y="relative difference", hue="projection", ax=ax)
    ax.set_xlabel("LLM layer")
    ax.set_ylabel("|W_vis x - W_text x| / |W_text x|")
    title = "visual vs text projections of the visual tokens' hidden states"
    if drift:
        title += "\nweight drift |W_vis - W_text|/|W_text|: " + ", ".join(f"{k} {v:.3f}" for k, v in drift.items())
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def attention_effect_table(records: dict[str, dict], split: str = "test") -> pd.DataFrame:
    """Accuracy per category of runs that differ in one knob (e.g. attention causal vs bidirectional), one column
    per run label, plus the blind floor and the text-oracle ceiling from the first record."""
    from ..results import accuracy_table

    cols = {}
    first = None
    for label, rec in records.items():
        t = accuracy_table(rec, split)
        cols[label] = t["model"]
        first = t if first is None else first
    out = pd.DataFrame(cols)
    for c in ("floor (blind)", "ceiling (text oracle)"):
        if c in first:
            out[c] = first[c]
    return out


__all__ = ["walkthrough", "projector_block_weights", "block_similarity", "qkv_divergence", "qkv_figure",
           "attention_effect_table"]
