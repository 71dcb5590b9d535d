"""HoVLE explained on real tensors (notebook 13): the holistic embedding module step by step, how close its
outputs are to the distillation targets (per image cell and per text position), and what its attention type
changes.

Everything here calls the model's own functions (``embed.patches``, ``embed.shuffle``, ``build_inputs``,
``distill_parts``, ``teacher_tokens``); nothing re-implements HoVLE. See :mod:`vlmlab.archs.hovle` for the paper.

=====================  ===============================  ===========================================
view (widget)          static fallback                   shows
=====================  ===============================  ===========================================
``distill_browser``    ``distill_card``, ``distill_grid``  cosine of the module's outputs to the teacher
                                                          (image cells) and to the LLM's embedding rows
                                                          (text positions)
=====================  ===============================  ===========================================
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F

from .attention import draw_mask, image_spans, mask_pair
from ..archs.base import eval_mode
from . import steps_table
from ..widgets import figure_panel, interactive_view


# ---- the forward pass step by step -------------------------------------------------------------------------------
@torch.no_grad()
def walkthrough(model, batch: dict) -> tuple[pd.DataFrame, dict]:
    """The holistic module's forward pass on a real batch: (table of steps with shapes, the tensors).

    Steps: pixels -> 8-px patch embeddings + positions -> 2x2 pixel shuffle + MLP (the 16 image inputs) ->
    module text table -> module sequence (text, ``<img>``, image slots) -> module layers -> LLM inputs_embeds
    -> logits. With ``pixel_shuffle="post"`` the shuffle runs after the layers; the table says so.
    """
    with eval_mode(model):
        dev = model.device
        pix = batch["pixel_values"].to(dev)
        patches = model.embed.patches(pix)  # [B, g*g, d]
        shuffled = model.embed.shuffle(patches)  # [B, (g/2)^2, d]
        text = model.embed.text(batch["input_ids"].to(dev))  # [B, L, d]
        out = model.forward(batch)
    mod = out["module"]
    g = model.embed.grid
    pre = model.knobs.pixel_shuffle == "pre"
    steps = [
        ("pixels", pix, "the image, RGB in [0, 1]"),
        ("patch embeddings", patches,
         f"Conv2d k=s={model.embed.patch} px -> a {g}x{g} grid, + learned absolute positions"),
        ("2x2 pixel shuffle + MLP", shuffled,
         f"each 2x2 block of patches concatenated (4d) and mapped back to d: {g // 2}x{g // 2} image tokens, one per "
         f"{2 * model.embed.patch}-px cell" + ("" if pre else " (post mode: applied after the module's layers)")),
        ("module text table", text, "the module's own embedding of the prompt's token ids (not the LLM's table)"),
        ("module sequence", mod["inputs"],
         "text + <img> marker + " + (f"{shuffled.shape[1]} image tokens" if pre else f"{patches.shape[1]} patches")),
        ("module output", mod["outputs"], f"{len(model.embed.layers)} causal LLM-style decoder layers"
         + (" (bidirectional within the image)" if model.knobs.embed_attention == "bidirectional" else "")),
        ("LLM inputs_embeds", out["inputs_embeds"], "the module's output at every position, text and image alike"),
        ("LLM logits", out["logits"], "next-token scores over the vocabulary"),
    ]
    table = steps_table(steps)
    tensors = {s: t for s, t, _ in steps} | {"out": out}
    return table, tensors


# ---- distillation similarity -------------------------------------------------------------------------------------
@dataclass
class DistillSimilarity:
    """Cosines of the module's outputs to the Stage-I targets on one batch (images paired with their own texts).

    ``image_cos`` [B, 16]: module image token k vs the teacher's token k (raster order of the 4x4 cells);
    ``text``: one row per text position (sample, position, word, cos) vs the LLM's input-embedding row of the
    same id; ``norms``: mean per-token norms of module outputs and targets (cosine leaves the scale free).
    """

    image_cos: torch.Tensor
    text: pd.DataFrame
    norms: dict
    grid: int

    def image_map(self, b: int) -> np.ndarray:
        return self.image_cos[b].reshape(self.grid, self.grid).numpy()


@torch.no_grad()
def distill_similarity(model, batch: dict) -> DistillSimilarity:
    """Per image cell and per text position cosine to the distillation targets, from ``model.distill_parts``."""
    with eval_mode(model):
        parts = model.distill_parts(batch, unpaired=False)
    cos_img = F.cosine_similarity(parts["x_img"].float(), parts["z_img"].float(), dim=-1).cpu()  # [B, 16]
    cos_txt = F.cosine_similarity(parts["x_txt"].float(), parts["z_txt"].float(), dim=-1).cpu()  # [T]
    tm = parts["text_mask"].cpu()  # [B, L']
    ids = parts["inputs"]["input_ids"].cpu()
    words = model.tokenizer.convert_ids_to_tokens(ids[tm].tolist())
    sample, pos = tm.nonzero(as_tuple=True)
    text = pd.DataFrame({"sample": sample.numpy(), "position": pos.numpy(), "word": words, "cos": cos_txt.numpy()})
    norms = {"module image": float(parts["x_img"].norm(dim=-1).mean()),
             "teacher image": float(parts["z_img"].norm(dim=-1).mean()),
             "module text": float(parts["x_txt"].norm(dim=-1).mean()),
             "LLM embedding (text)": float(parts["z_txt"].norm(dim=-1).mean())}
    g = int(round(cos_img.shape[1] ** 0.5))
    return DistillSimilarity(cos_img, text, norms, g)


def word_table(sim: DistillSimilarity) -> pd.DataFrame:
    """Mean cosine per word over the batch (with counts), best first."""
    t = sim.text.groupby("word")["cos"].agg(["mean", "count"]).sort_values("mean", ascending=False)
    return t.rename(columns={"mean": "mean cos"})


def draw_cell_cos(sample, cos_map: np.ndarray, ax, title: str = "", colorbar: bool = True):
    """The image with each 16-px cell tinted by its cosine to the teacher (-1 red .. +1 blue), value written in."""
    from ..widgets import draw_scene

    draw_scene(sample, ax)
    size = sample.image.shape[0]
    g = cos_map.shape[0]
    im = ax.imshow(cos_map, cmap="RdBu", vmin=-1, vmax=1, alpha=0.55, extent=(-0.5, size - 0.5, size - 0.5, -0.5),
                   interpolation="nearest")
    c = size / g
    for r in range(g):
        for k in range(g):
            ax.text(k * c + c / 2 - 0.5, r * c + c / 2 - 0.5, f"{cos_map[r, k]:.2f}", ha="center", va="center",
                    fontsize=7, color="black", bbox={"fc": "white", "alpha": 0.6, "pad": 0.5, "lw": 0})
    if colorbar:
        plt.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="cosine").ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    return ax


def distill_card(sample, sim: DistillSimilarity, b: int):
    """One sample: image cells coloured by cosine to the teacher; bars of the cosine at each text position (the
    word under it) to the LLM's embedding row. The static fallback of :func:`distill_browser`."""
    rows = sim.text[sim.text["sample"] == b]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(4.2 + 0.3 * max(len(rows), 10), 3.8),
                                 gridspec_kw={"width_ratios": [1, 0.08 * max(len(rows), 10)]})
    m = sim.image_map(b)
    draw_cell_cos(sample, m, ax, f"image tokens vs teacher\nmean cos {m.mean():.2f}")
    sns.barplot(x=list(range(len(rows))), y=rows["cos"].to_numpy(), ax=bx, color=sns.color_palette()[2])
    bx.set_xticks(range(len(rows)), rows["word"].tolist(), rotation=70, fontsize=8)
    bx.set_ylim(min(-0.05, float(rows["cos"].min()) - 0.05) if len(rows) else -1, 1.0)
    bx.axhline(0, color="grey", lw=0.8)
    bx.set_xlabel("text position (word)")
    bx.set_ylabel("cosine to the LLM's embedding row")
    bx.set_title(f"text outputs vs the LLM's input table: mean cos {rows['cos'].mean():.2f}", fontsize=9)
    fig.suptitle(f"HoVLE distillation similarity: {sample.split} #{sample.index}  {sample.qa.question}", fontsize=10)
    fig.tight_layout()
    return fig


def distill_grid(samples, sim: DistillSimilarity, ncols: int = 4):
    """Several samples' image-cell cosine maps side by side (static multi-sample view)."""
    n = len(samples)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.5 * nrows), squeeze=False)
    for b, (ax, s) in enumerate(zip(axes.flat, samples)):
        m = sim.image_map(b)
        draw_cell_cos(s, m, ax, f"{s.split} #{s.index}: mean cos {m.mean():.2f}", colorbar=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("cosine of HoVLE's image tokens to the teacher's, per 16-px cell", fontsize=11)
    fig.tight_layout()
    return fig


@interactive_view
def distill_browser(model, world, task: str = "qa", split: str = "test", index: int = 0, max_index: int = 199):
    """Pick a sample: :func:`distill_card` for it (computed on demand)."""
    import ipywidgets as W

    index_w = W.IntSlider(value=index, min=0, max=max_index, description="sample", continuous_update=False)

    def figure():
        i = index_w.value
        return distill_card(world.sample(split, i), distill_similarity(model, world.batch(task, split, i, 1)), 0)

    return figure_panel([index_w], figure)


# ---- attention type inside the module ----------------------------------------------------------------------------
@contextlib.contextmanager
def module_attention(model, kind: str):
    """Run the module with another attention mask (same weights) inside the block; restores the knob after."""
    old = model.knobs.embed_attention
    model.knobs.embed_attention = kind
    try:
        yield
    finally:
        model.knobs.embed_attention = old


def module_masks_figure(model, batch: dict, b: int = 0):
    """The module's own mask over its sequence (text, ``<img>``, image slots): causal | bidirectional-in-image."""
    with torch.no_grad():
        inp = model.build_inputs(batch)
    mod = inp["module"]
    am, vm = mod["attention_mask"][b].cpu(), mod["visual_mask"][b].cpu()
    masks = mask_pair(am, vm)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5))
    for ax, kind in zip(axes, ("causal", "bidirectional")):
        used = " (this model)" if kind == model.knobs.embed_attention else ""
        draw_mask(masks[kind], vm, ax, f"module mask: {kind}{used}\n{int(masks[kind].sum())} allowed pairs")
    s, e = image_spans(vm)[0]
    fig.suptitle(f"inside HoVLE's embedding module: image slots at positions {s}..{e - 1} (red frame); "
                 "the LLM after it is always causal", fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def cell_influence(model, batch: dict, delta: float = 0.5) -> dict[str, torch.Tensor]:
    """How far each module image output moves when one 16-px cell of the image changes, under both masks.

    For each cell k (raster order), the pixels of k get ``+delta``; returns, per mask kind, a [16, 16] matrix
    (row: perturbed cell, column: module output image token), the mean over the batch of the relative change
    ||y' - y|| / ||y||. Under the causal mask a token never moves when a *later* cell changes (zero upper
    triangle), the bidirectional mask lets it. Same trained weights for both: the mask alone differs.
    """
    g = model.embed.grid // 2
    cell = model.embed.image_size // g
    pix = batch["pixel_values"]
    out = {}
    with eval_mode(model):
        for kind in ("causal", "bidirectional"):
            with module_attention(model, kind):
                base = model.build_inputs(batch)
                vm = base["visual_mask"]
                y0 = base["inputs_embeds"][vm].view(len(pix), g * g, -1).float()  # [B, 16, d]
                mat = torch.zeros(g * g, g * g)
                for k in range(g * g):
                    r, c = divmod(k, g)
                    p = pix.clone()
                    p[:, :, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] += delta
                    y = model.build_inputs(dict(batch, pixel_values=p))["inputs_embeds"][vm].view_as(y0).float()
                    mat[k] = ((y - y0).norm(dim=-1) / y0.norm(dim=-1).clamp(min=1e-8)).mean(0).cpu()
                out[kind] = mat
    return out


def influence_figure(infl: dict[str, torch.Tensor], trained_with: str):
    """Heatmaps of :func:`cell_influence` for both masks, on one colour scale."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    vmax = max(float(m.max()) for m in infl.values())
    for ax, (kind, m) in zip(axes, infl.items()):
        sns.heatmap(m.numpy(), ax=ax, cmap="viridis", vmin=0, vmax=vmax, cbar_kws={"label": "relative change"})
        tag = " (as trained)" if kind == trained_with else " (same weights, other mask)"
        ax.set_title(f"{kind}{tag}", fontsize=10)
        ax.set_xlabel("module output image token (raster order)")
        ax.set_ylabel("perturbed 16-px cell (raster order)")
    fig.suptitle("which image tokens change when one cell of the image changes", fontsize=11)
    fig.tight_layout()
    return fig


def later_cell_share(mat: torch.Tensor) -> float:
    """Share of a :func:`cell_influence` matrix's total change that lands on tokens *before* the perturbed cell
    (strict lower triangle: the token index is smaller than the cell's)."""
    tot = float(mat.sum())
    return float(mat.tril(-1).sum()) / tot if tot > 0 else 0.0


__all__ = ["walkthrough", "DistillSimilarity", "distill_similarity", "word_table", "draw_cell_cos", "distill_card",
           "distill_grid", "distill_browser", "module_attention", "module_masks_figure", "cell_influence",
           "influence_figure", "later_cell_share"]
