"""VW-LMM's mechanism on real tensors: each patch's visual words (a distribution over the LLM's own vocabulary),
and the KL loss that makes the LLM predict the next patch's visual words.

Tensors come from the model's own methods (``features``, ``connector``, ``vm_head``, ``forward``) and from
:func:`vlmlab.archs.vwlmm.vm_targets`, which says which LM output predicts which patch:

- :func:`vwlmm_steps`: features -> z (connector) -> VM-head logits -> q, and what the LLM reads (z, or q @ E_txt
  with PIF);
- :func:`visual_words`: the top-k visual words of each patch as :class:`vlmlab.explain.llava.TokenWords`, to draw
  on the image grid (:func:`vlmlab.explain.llava.word_grid`) and check against the scene graph
  (:func:`vlmlab.explain.llava.naming_table`);
- :func:`kl_per_position`: L_vm broken down by supervised position (its mean is exactly ``vm_loss``), with the
  LM's top word at t beside the top visual word of patch t+1;
- figures: :func:`kl_grid` (the per-patch KL over the image), :func:`kl_pair_plot` (the LM's distribution at t
  against the target q_{t+1}, for one position).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F

from ..archs.vwlmm import vm_targets
from ..widgets import draw_scene
from .llava import TokenWords


@torch.no_grad()
def vwlmm_steps(model, batch: dict) -> dict[str, torch.Tensor]:
    """features [B, N, d_vit] -> z [B, N, d_lm] (connector) -> q_logits [B, N, V] (VM head) -> q (softmax);
    ``llm_input`` [B, N, d_lm] is what the LLM reads at the image positions (z, or q @ E_txt with PIF), taken
    from the spliced ``inputs_embeds`` of ``model.forward``; ``out`` is that forward pass (logits, masks)."""
    pix = batch["pixel_values"].to(model.device)
    feats = model.features(pix)
    z = model.connector(feats)
    q_logits = model.vm_logits(z)
    out = model.forward(batch)
    B = z.shape[0]
    llm_input = out["inputs_embeds"][out["visual_mask"]].view(B, -1, z.shape[-1])
    return {"features": feats, "z": z, "q_logits": q_logits, "q": F.softmax(q_logits.float(), dim=-1),
            "llm_input": llm_input, "out": out}


@torch.no_grad()
def visual_words(model, pixel_values: torch.Tensor, k: int = 3) -> TokenWords:
    """Top-k visual words of each patch with their probabilities (``model.visual_words``)."""
    ids, probs = model.visual_words(pixel_values, k)
    tok = model.tokenizer
    words = [[tok.convert_ids_to_tokens(t) for t in scene] for scene in ids.tolist()]
    return TokenWords(words, probs.cpu().numpy(), "q")


@torch.no_grad()
def kl_per_position(model, batch: dict, steps: dict | None = None) -> pd.DataFrame:
    """One row per position t supervised by L_vm: the sample, t, the patch t+1 it predicts (index in the image),
    what sits at t (a word, or ``v<j>``), KL(q_{t+1} || p_t) summed over the vocabulary, the LM's top word at t and
    the top visual word of patch t+1 (with their probabilities)."""
    steps = steps or vwlmm_steps(model, batch)
    out, q_logits = steps["out"], steps["q_logits"]
    vm = out["visual_mask"]
    rows, pred_pos, patch = vm_targets(vm)
    log_p = F.log_softmax(out["logits"][rows, pred_pos].float(), dim=-1)  # [M, V]
    log_q = F.log_softmax(q_logits.flatten(0, 1)[patch].float(), dim=-1)  # [M, V]
    kl = F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(-1)  # [M]
    n_img = q_logits.shape[1]
    tok = model.tokenizer
    ids = out["input_ids"]
    first = vm.float().argmax(1)  # [B] position of each row's first patch
    df = pd.DataFrame({
        "sample": rows.cpu().numpy(), "t": pred_pos.cpu().numpy(),
        "patch": (patch % n_img).cpu().numpy(), "kl": kl.cpu().numpy(),
        "lm top word": tok.convert_ids_to_tokens(log_p.argmax(-1).tolist()),
        "lm p": log_p.max(-1).values.exp().cpu().numpy(),
        "target top word": tok.convert_ids_to_tokens(log_q.argmax(-1).tolist()),
        "target q": log_q.max(-1).values.exp().cpu().numpy()})
    at = []
    for r, t in zip(rows.tolist(), pred_pos.tolist()):
        at.append(f"v{t - int(first[r])}" if bool(vm[r, t]) else tok.convert_ids_to_tokens(int(ids[r, t])))
    df.insert(2, "token at t", at)
    df["same top word"] = df["lm top word"] == df["target top word"]
    return df


def kl_grid(sample, kl_df: pd.DataFrame, b: int, T: int, token_px: float, ax=None, vmax: float | None = None):
    """Sample ``b``'s per-patch L_vm term (the KL of the position predicting each patch) as a heatmap over the
    image, its value written in each patch."""
    d = kl_df[kl_df["sample"] == b].set_index("patch")["kl"]
    grid = np.full((T, T), np.nan)
    for j, v in d.items():
        grid[j // T, j % T] = v
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    draw_scene(sample, ax, grid=False)
    H = sample.world.image_size
    im = ax.imshow(grid, cmap="magma", alpha=0.55, extent=(-0.5, T * token_px - 0.5, T * token_px - 0.5, -0.5),
                   vmin=0, vmax=vmax if vmax is not None else float(np.nanmax(grid)) if np.isfinite(grid).any() else 1)
    for j, v in d.items():
        r, k = divmod(j, T)
        ax.text(k * token_px + token_px / 2 - 0.5, r * token_px + token_px / 2 - 0.5, f"{v:.2f}", ha="center",
                va="center", fontsize=7, color="white")
    ax.set_xlim(-0.5, H - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    plt.colorbar(im, ax=ax, fraction=0.046, label="KL(q_{t+1} || p_t) (nats)")
    ax.set_title(f"{sample.split} #{sample.index}: L_vm term of each patch", fontsize=9)
    return ax


def kl_pair_plot(model, steps: dict, b: int, patch: int, top: int = 8, ax=None):
    """For the position predicting patch ``patch`` of sample ``b``: the target visual words q_{t+1} beside the
    LM's prediction p_t, over the union of each one's ``top`` words."""
    out, q_logits = steps["out"], steps["q_logits"]
    rows, pred_pos, idx = vm_targets(out["visual_mask"])
    n_img = q_logits.shape[1]
    sel = ((rows == b) & (idx % n_img == patch)).nonzero()
    if sel.numel() == 0:
        raise ValueError(f"patch={patch} of sample {b} has no predicting position (it is first in the sequence)")
    i = int(sel[0, 0])
    p = F.softmax(out["logits"][rows[i], pred_pos[i]].float(), -1).cpu()
    q = F.softmax(q_logits[b, patch].float(), -1).cpu()
    ids = list(dict.fromkeys(q.topk(top).indices.tolist() + p.topk(top).indices.tolist()))
    ids.sort(key=lambda j: -float(q[j]))
    words = model.tokenizer.convert_ids_to_tokens(ids)
    df = pd.concat([pd.DataFrame({"word": words, "probability": q[ids].numpy(), "distribution": "target q_{t+1} (VM head)"}),
                    pd.DataFrame({"word": words, "probability": p[ids].numpy(), "distribution": "LM prediction p_t"})])
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.45 * len(ids) + 2), 3))
    sns.barplot(data=df, x="word", y="probability", hue="distribution", ax=ax, palette="deep")
    kl = float((q * (q.clamp_min(1e-30).log() - p.clamp_min(1e-30).log())).sum())
    ax.set_title(f"sample {b}, patch {patch}: target vs LM prediction (KL {kl:.3f} nats)", fontsize=9)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.legend(fontsize=8, frameon=False)
    return ax


__all__ = ["vwlmm_steps", "visual_words", "kl_per_position", "kl_grid", "kl_pair_plot"]
