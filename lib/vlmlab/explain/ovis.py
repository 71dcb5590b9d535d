"""Ovis's mechanism on real tensors: each patch's probability distribution over the visual embedding table (VTE),
how concentrated it is, which table entries the image uses, and the probabilistic token it yields.

Every tensor comes from the model's own methods (``features``, ``head``, ``probabilities``, ``pad_and_wrap``,
``embed``: :func:`ovis_steps`); the statistics are computed from them:

- per patch (:func:`patch_stats`): entropy H of p, the effective number of entries exp(H), the number of entries
  that carry a given share of the mass (``mass``, e.g. 90 %), the largest probability;
- per table (:func:`table_usage`): how often each entry is a patch's argmax and its mean probability;
- what an entry stands for (:func:`entry_contents`, :func:`entry_purity`): the scene-graph content of the
  patches whose argmax it is, and how pure the entries are against a shuffled baseline;
- the probabilistic token as a mix of table rows (:func:`reconstruction_curve`): how far the token is from the
  sum of its m most probable rows, as m grows.

Figures: :func:`distribution_plot` (one patch's bars over all K entries, indicators marked), :func:`patch_card`
(the scene with the patch framed, beside its distribution: the widget's figure, :func:`patch_browser`),
:func:`patch_grid` (several patches of one scene: the static figure), :func:`usage_plot`.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.patches import Rectangle

from ..archs.ovis import N_IND
from ..widgets import draw_scene, figure_panel, interactive_view
from .llava import token_grid, token_objects


@torch.no_grad()
def ovis_steps(model, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every intermediate tensor of Ovis's visual tokenizer for a batch of images, through the model's methods:

    features [B, n, hs^2 d] (raw last ViT block, space-to-depth) -> logits [B, n, K-2] (head: Linear + LayerNorm)
    -> p [B, n, K-2] (what the VTE receives: softmax, or its hard / top-k version) and p_soft (the dense softmax)
    -> full [B, n+2, K] (zero indicator columns, begin/end one-hot rows) -> visual [B, n+2, d_lm] (full @ VTE)."""
    pix = pixel_values.to(model.device)
    feats = model.features(pix)
    logits = model.head(feats)
    p, soft = model.probabilities(logits)
    full = model.pad_and_wrap(p)
    return {"features": feats, "logits": logits, "p": p, "p_soft": soft, "full": full, "visual": model.embed(full)}


def entries_for_mass(p: torch.Tensor, mass: float = 0.9) -> torch.Tensor:
    """The smallest number of entries whose probabilities add up to at least ``mass``: p [..., K] -> [...]."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass={mass}; allowed values: 0 < mass <= 1")
    srt = p.float().sort(dim=-1, descending=True).values
    below = (srt.cumsum(-1) < mass - 1e-6).sum(-1)
    return (below + 1).clamp(max=p.shape[-1])


def patch_stats(p: torch.Tensor, mass: float = 0.9) -> pd.DataFrame:
    """One row per (image, patch): entropy (nats), effective entries exp(H), entries carrying ``mass`` of the
    probability, the largest probability and its entry. p [B, n, K'] (rows summing to 1)."""
    p = p.float().cpu()
    ent = -(p * p.clamp_min(1e-30).log()).sum(-1)  # [B, n]
    top = p.max(-1)
    k = entries_for_mass(p, mass)
    B, n = ent.shape
    return pd.DataFrame({
        "image": np.repeat(np.arange(B), n), "patch": np.tile(np.arange(n), B),
        "entropy": ent.flatten().numpy(), "effective entries": ent.exp().flatten().numpy(),
        f"entries for {100 * mass:.0f}% mass": k.flatten().numpy(),
        "max p": top.values.flatten().numpy(), "argmax": top.indices.flatten().numpy()})


def table_usage(p: torch.Tensor) -> pd.DataFrame:
    """Per table entry (patch entries only, K-2 of them): how many patches have it as their argmax, and its mean
    probability over all patches; sorted by argmax count (rank 0 = most used)."""
    p = p.float().cpu().flatten(0, -2)  # [patches, K']
    counts = torch.bincount(p.argmax(-1), minlength=p.shape[-1])
    df = pd.DataFrame({"entry": np.arange(p.shape[-1]), "argmax count": counts.numpy(),
                       "mean p": p.mean(0).numpy()})
    df = df.sort_values(["argmax count", "mean p"], ascending=False, ignore_index=True)
    df["rank"] = np.arange(len(df))
    return df


def usage_plot(stats: pd.DataFrame, usage: pd.DataFrame, mass: float = 0.9, title: str = ""):
    """Three panels: histogram of effective entries per patch, of entries carrying ``mass``, and the table's
    entries ranked by how many patches pick them as argmax (with their mean probability)."""
    col = f"entries for {100 * mass:.0f}% mass"
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4), constrained_layout=True)
    sns.histplot(stats["effective entries"], bins=30, ax=axes[0])
    axes[0].set(title="effective entries exp(H) per patch", xlabel="exp(entropy)", ylabel="patches")
    sns.histplot(stats[col], discrete=stats[col].max() < 60, bins=30, ax=axes[1])
    axes[1].set(title=f"entries carrying {100 * mass:.0f}% of a patch's mass", xlabel="entries", ylabel="patches")
    used = usage[usage["argmax count"] > 0]
    ax = axes[2]
    ax.bar(used["rank"], used["argmax count"], color=sns.color_palette("deep")[0], width=1.0)
    ax.set(title=f"table usage: {len(used)} of {len(usage)} entries are some patch's argmax",
           xlabel="entry, ranked by use", ylabel="patches with it as argmax")
    ax2 = ax.twinx()
    ax2.plot(usage["rank"], usage["mean p"], color=sns.color_palette("deep")[1], lw=1)
    ax2.set_ylabel("mean p over patches", color=sns.color_palette("deep")[1])
    ax2.set_yscale("log")
    fig.suptitle(title or f"how Ovis's patches use the visual table ({int(stats.shape[0])} patches)", fontsize=11)
    return fig


def distribution_plot(p_row: torch.Tensor, ax=None, top: int = 5, title: str = "", logy: bool = False):
    """One patch's probabilities over every table entry (K, indicator columns last and shaded), its ``top``
    entries labelled. p_row [K] or [K-2]."""
    p = p_row.float().cpu()
    K = p.shape[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 2.8))
    ax.vlines(np.arange(K), 0, p.numpy(), color=sns.color_palette("deep")[0], lw=max(0.4, min(3.0, 300 / K)))
    ax.axvspan(K - N_IND - 0.5, K - 0.5, color="grey", alpha=0.25, lw=0, label="indicator rows (p = 0)")
    vals, idx = p.topk(min(top, K))
    for v, i in zip(vals.tolist(), idx.tolist()):
        if v > 0:
            ax.annotate(f"{i}: {v:.2f}", (i, v), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    ax.set_xlim(-0.5, K - 0.5)
    if logy:
        ax.set_yscale("log")
        ax.set_ylim(max(1e-6, float(p[p > 0].min()) if (p > 0).any() else 1e-6), 1.5)
    else:
        ax.set_ylim(0, max(0.05, float(p.max()) * 1.18))
    ax.set_xlabel("visual table entry")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return ax


def _frame_token(ax, t: int, T: int, token_px: float, colour="white", lw=2.0):
    r, k = divmod(t, T)
    ax.add_patch(Rectangle((k * token_px - 0.5, r * token_px - 0.5), token_px, token_px, fill=False, ec=colour, lw=lw))


def _patch_title(sample, t, T, token_px, p_row, mass):
    objs = token_objects(sample, T, token_px)[t]
    what = " + ".join(f"{o.size} {o.color} {o.texture} {o.shape}" for o in objs) or "empty"
    pr = p_row.float()
    ent = float(-(pr * pr.clamp_min(1e-30).log()).sum())
    k = int(entries_for_mass(pr[None], mass)[0])
    return (f"patch {t} (r{t // T} c{t % T}): {what}\nentropy {ent:.2f} nats, exp(H) = {math.exp(ent):.1f}, "
            f"{k} entries carry {100 * mass:.0f}%, max p {float(pr.max()):.2f} at entry {int(pr.argmax())}")


def patch_card(sample, p_full: torch.Tensor, t: int, T: int, token_px: float, mass: float = 0.9,
               logy: bool = False):
    """The scene with patch ``t`` framed, beside its distribution over the table. p_full [n, K] of this scene
    (``model.patch_distribution``). The figure of :func:`patch_browser`."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 3.3), gridspec_kw={"width_ratios": [1, 3.2]})
    draw_scene(sample, ax)
    _frame_token(ax, t, T, token_px)
    ax.set_title(f"{sample.split} #{sample.index}", fontsize=9)
    distribution_plot(p_full[t], bx, title=_patch_title(sample, t, T, token_px, p_full[t], mass), logy=logy)
    fig.tight_layout()
    return fig


def patch_grid(sample, p_full: torch.Tensor, patches, T: int, token_px: float, mass: float = 0.9,
               logy: bool = False):
    """Several patches of one scene: the scene with them framed and numbered, then each patch's distribution.
    The static figure of :func:`patch_browser`."""
    patches = list(patches)
    n = len(patches)
    fig = plt.figure(figsize=(13, 2.6 * n + 0.4))
    gs = fig.add_gridspec(n, 2, width_ratios=[1, 3.2])
    ax = fig.add_subplot(gs[:, 0])
    draw_scene(sample, ax)
    palette = sns.color_palette("bright", n)
    for j, t in enumerate(patches):
        _frame_token(ax, t, T, token_px, colour=palette[j])
        r, k = divmod(t, T)
        ax.text(k * token_px + 1, r * token_px + 1, str(t), color="white", fontsize=8, va="top",
                bbox={"fc": palette[j], "alpha": 0.8, "pad": 1, "lw": 0})
    ax.set_title(f"{sample.split} #{sample.index}", fontsize=9)
    for j, t in enumerate(patches):
        bx = fig.add_subplot(gs[j, 1])
        distribution_plot(p_full[t], bx, title=_patch_title(sample, t, T, token_px, p_full[t], mass), logy=logy)
        for s in bx.spines.values():
            s.set_edgecolor(palette[j])
            s.set_linewidth(1.5)
        if j < n - 1:
            bx.set_xlabel("")
    fig.suptitle("each patch's distribution over the visual table", fontsize=11)
    fig.tight_layout()
    return fig


@interactive_view
def patch_browser(model, samples, pixel_values: torch.Tensor, mass: float = 0.9):
    """Pick a scene and a patch: :func:`patch_card` for it (distributions computed once for all scenes)."""
    import ipywidgets as W

    p_full = model.patch_distribution(pixel_values).cpu()  # [S, n, K]
    T, tp = token_grid(model, samples[0].world.image_size)
    scene_w = W.IntSlider(value=0, min=0, max=len(samples) - 1, description="scene", continuous_update=False)
    patch_w = W.IntSlider(value=0, min=0, max=T * T - 1, description="patch", continuous_update=False)
    log_w = W.Checkbox(value=False, description="log scale")

    def figure():
        s = scene_w.value
        return patch_card(samples[s], p_full[s], patch_w.value, T, tp, mass, logy=log_w.value)

    return figure_panel([scene_w, patch_w, log_w], figure)


def entry_contents(p: torch.Tensor, samples, T: int, token_px: float) -> pd.DataFrame:
    """One row per (scene, patch): its argmax entry and the content under it from the scene graph (color,
    shape, "empty" when no object; tokens over several objects list them all)."""
    arg = p.argmax(-1).cpu()  # [S, n]
    rows = []
    for s, smp in enumerate(samples):
        for t, objs in enumerate(token_objects(smp, T, token_px)):
            rows.append({"scene": s, "patch": t, "entry": int(arg[s, t]),
                         "color": "+".join(sorted({o.color for o in objs})) or "empty",
                         "shape": "+".join(sorted({o.shape for o in objs})) or "empty",
                         "content": " + ".join(f"{o.color} {o.shape}" for o in objs) or "empty"})
    return pd.DataFrame(rows)


def _purity(entries: np.ndarray, labels: np.ndarray) -> float:
    """Share of patches whose label is the majority label of their argmax entry."""
    df = pd.DataFrame({"e": entries, "y": labels})
    return float(df.groupby("e")["y"].agg(lambda y: y.value_counts().iloc[0]).sum() / len(df))


def entry_purity(contents: pd.DataFrame, attributes=("content", "color", "shape"), shuffles: int = 200,
                 seed: int = 0) -> pd.DataFrame:
    """How pure the argmax entries are: the share of patches whose content (or color, shape) is the majority
    one among the patches sharing their entry, beside the same with the labels shuffled across patches (entries'
    sizes kept, their link to the content broken). 100 % = every entry stands for one content."""
    rng = np.random.default_rng(seed)
    e = contents["entry"].to_numpy()
    rows = []
    for a in attributes:
        y = contents[a].to_numpy()
        base = [_purity(e, rng.permutation(y)) for _ in range(shuffles)]
        rows.append({"attribute": a, "purity (%)": 100 * _purity(e, y),
                     "shuffled baseline (%)": 100 * float(np.mean(base)),
                     "distinct values": int(len(set(y))), "entries used": int(len(set(e)))})
    return pd.DataFrame(rows).set_index("attribute")


@torch.no_grad()
def reconstruction_curve(p: torch.Tensor, table: torch.Tensor, ms=(1, 2, 4, 8, 16, 32, 64)) -> pd.DataFrame:
    """How many table rows make a probabilistic token: for each patch and m, the relative error
    ``|| sum_{m most probable k} p_k e_k - p @ E || / || p @ E ||``. p [..., K'] over the first K' rows of
    ``table`` [K, d]."""
    p = p.float().flatten(0, -2)  # [P, K']
    E = table[: p.shape[-1]].float().to(p.device)
    full = p @ E  # [P, d]
    srt = p.sort(-1, descending=True)
    rows = []
    for m in ms:
        if m > p.shape[-1]:
            continue
        part = torch.zeros_like(p).scatter(-1, srt.indices[:, :m], srt.values[:, :m]) @ E
        err = (part - full).norm(dim=-1) / full.norm(dim=-1).clamp_min(1e-12)
        rows += [{"m": m, "patch": i, "relative error": float(v)} for i, v in enumerate(err.cpu())]
    return pd.DataFrame(rows)


__all__ = ["ovis_steps", "entries_for_mass", "patch_stats", "table_usage", "usage_plot", "distribution_plot",
           "patch_card", "patch_grid", "patch_browser", "entry_contents", "entry_purity", "reconstruction_curve"]
