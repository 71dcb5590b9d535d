"""Attention views shared by the teaching notebooks: where the answer looks in the image, and the masks.

Three things, each computed from the model's own tensors (one eager pass of ``VLM.forward_with_attentions``),
never from a re-implementation of an architecture:

(a) **answer-to-image attention**: the attention weights from the position that predicts the answer's first
    token to every visual token, kept per layer and per head (:func:`answer_attention` -> :class:`AnswerAttention`;
    its mean over layers and heads is exactly ``model.answer_attention``). How the visual tokens map back to the
    image depends on the architecture (:func:`token_layout`): one token per ViT patch on a ``g x g`` grid (LLaVA,
    VW-LMM, LLaViT, HoVLE's 16 shuffled tokens), a grid wrapped in begin/end indicator tokens (Ovis), or learned
    queries with no position in the image (X-Former). Spatial tokens are drawn as a heatmap over the image
    (:func:`draw_answer_attention`), non-spatial ones as bars: a query has no place on the image, and pretending
    otherwise would mislead.
(b) **attention masks** as images (query rows x key columns, :func:`mask_pair`, :func:`plot_masks`): the causal
    mask beside the bidirectional-within-image one (built by :mod:`vlmlab.attention`, as the architectures build
    them), with the image span framed; :func:`attention_matrix` gives the attention the model actually paid, to
    draw beside its mask.
(c) a **browser** widget (:func:`attention_browser`: pick a test sample, a layer and a head) around the static
    figure :func:`attention_card`; :func:`attention_grid` is the multi-sample static figure, so a rendered page
    loses nothing the widget shows.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.patches import Rectangle

from ..archs.base import eval_mode
from ..attention import allowed_mask, image_span_ids
from ..widgets import figure_panel, interactive_view

MEAN = "mean"  # the layer / head selection that averages


# ---- (a) answer-to-image attention -------------------------------------------------------------------------------
@dataclass
class TokenLayout:
    """How an architecture's visual tokens relate to the image.

    ``kind`` is "grid" (token k of ``spatial`` is the cell (k // grid, k % grid) of a ``grid x grid`` raster over
    the image) or "sequence" (no position in the image: learned queries). ``labels`` names every visual token;
    tokens outside ``spatial`` (e.g. Ovis's indicators) are listed by name in ``extra``.
    """

    kind: str
    n: int
    grid: int = 0
    spatial: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    description: str = ""


def _square(n: int) -> int:
    g = int(round(math.sqrt(n)))
    return g if g > 0 and g * g == n else 0


def token_layout(model, n_visual: int) -> TokenLayout:
    """The layout of ``n_visual`` visual tokens of ``model`` (see :class:`TokenLayout`).

    X-Former's prefix is its ``n_queries`` fused queries; Ovis wraps its patch tokens in a begin and an end
    indicator token; every other architecture (and Ovis's patches) has one token per cell of a square grid, in
    raster order (the count decides the grid, so a pooled or re-gridded encoder is read as it is).
    """
    arch = getattr(model, "arch", "")
    if arch == "xformer":
        return TokenLayout("sequence", n_visual, labels=[f"q{k}" for k in range(n_visual)],
                           description=f"{n_visual} learned queries (no position in the image)")
    if arch == "ovis" and _square(n_visual - 2):
        g = _square(n_visual - 2)
        labels = ["begin"] + [f"r{k // g}c{k % g}" for k in range(g * g)] + ["end"]
        return TokenLayout("grid", n_visual, g, list(range(1, n_visual - 1)), [0, n_visual - 1], labels,
                           f"{g}x{g} patch tokens between a begin and an end indicator token")
    g = _square(n_visual)
    if g:
        return TokenLayout("grid", n_visual, g, list(range(n_visual)), [], [f"r{k // g}c{k % g}" for k in range(n_visual)],
                           f"{g}x{g} grid of image tokens in raster order")
    return TokenLayout("sequence", n_visual, labels=[f"v{k}" for k in range(n_visual)],
                       description=f"{n_visual} visual tokens with no square layout")


@dataclass
class AnswerAttention:
    """Attention from the answer-predicting position, for one batch.

    ``weights`` [B, layers, heads, n_visual]: to each visual token; ``text`` [B, layers, heads]: the rest of the
    row (text, markers), so ``weights.sum(-1) + text`` is 1 in every layer and head (softmax rows). ``layout``
    maps visual tokens to the image.
    """

    weights: torch.Tensor
    text: torch.Tensor
    layout: TokenLayout
    arch: str = ""

    @property
    def n_layers(self) -> int:
        return self.weights.shape[1]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[2]

    def select(self, layer=MEAN, head=MEAN) -> torch.Tensor:
        """[B, n_visual] for one layer (int) or the mean over layers ("mean"), likewise for heads."""
        w = self.weights
        w = w.mean(1) if layer == MEAN else w[:, int(layer)]
        return w.mean(1) if head == MEAN else w[:, int(head)]

    def mass(self, layer=MEAN, head=MEAN) -> torch.Tensor:
        """Share of the answer position's attention that lands on the image: [B]."""
        return self.select(layer, head).sum(-1)

    def per_layer_mass(self) -> torch.Tensor:
        """[B, layers]: image share per layer (mean over heads)."""
        return self.weights.mean(2).sum(-1)

    def grid_map(self, values: torch.Tensor) -> np.ndarray:
        """One sample's [n_visual] values -> the [grid, grid] array of its spatial tokens (grid layouts only)."""
        if self.layout.kind != "grid":
            raise ValueError(f"{self.arch or 'this model'}'s visual tokens are {self.layout.description}: "
                             "no image grid to map them to")
        g = self.layout.grid
        return values[self.layout.spatial].reshape(g, g).cpu().numpy()


@torch.no_grad()
def answer_attention(model, batch: dict, out: dict | None = None) -> AnswerAttention:
    """Per-layer, per-head attention from the position predicting the answer to each visual token.

    One eager pass ``model.forward_with_attentions(batch)`` (or its result ``out``); the row read is
    ``answer_pos - 1``, as in ``VLM.answer_attention``. Tensors come back on the CPU in float32.
    """
    with eval_mode(model):
        out = out if out is not None else model.forward_with_attentions(batch)
    att = torch.stack([a.float() for a in out["attentions"]], 1)  # [B, layers, heads, L, L]
    B = att.shape[0]
    rows = torch.arange(B, device=att.device)
    row = att[rows, :, :, out["answer_pos"] - 1]  # [B, layers, heads, L]
    vm = out["visual_mask"]
    n = int(vm[0].sum())
    if not bool((vm.sum(1) == n).all()):
        raise ValueError("every sample of the batch must have the same number of visual tokens")
    weights = torch.stack([row[b][..., vm[b]] for b in range(B)])  # [B, layers, heads, n]
    text = row.sum(-1) - weights.sum(-1)  # [B, layers, heads]
    return AnswerAttention(weights.cpu(), text.cpu(), token_layout(model, n), getattr(model, "arch", ""))


def draw_answer_attention(sample, values: torch.Tensor, layout: TokenLayout, ax=None, title: str = "",
                          vmax: float | None = None, alpha: float = 0.6, colorbar: bool = True):
    """One sample's attention [n_visual] drawn where it belongs: over the image (grid), or as bars (sequence).

    Grid layouts draw the image with the attention of each cell as a translucent heatmap over it (each value
    covers its cell; extra tokens such as Ovis's indicators are named in the x label with their weights);
    sequence layouts draw a bar per token.
    """
    from ..widgets import draw_scene

    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 3.2))
    v = values.detach().float().cpu()
    if layout.kind == "grid":
        draw_scene(sample, ax, labels=True)
        g = layout.grid
        size = sample.image.shape[0]
        heat = v[layout.spatial].reshape(g, g).numpy()
        im = ax.imshow(heat, cmap="magma", alpha=alpha, extent=(-0.5, size - 0.5, size - 0.5, -0.5),
                       interpolation="nearest", vmin=0.0, vmax=vmax if vmax is not None else max(float(heat.max()), 1e-8))
        if colorbar:
            plt.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
        if layout.extra:
            ax.set_xlabel("  ".join(f"{layout.labels[k]} {float(v[k]):.3f}" for k in layout.extra), fontsize=8)
    else:
        sns.barplot(x=list(range(layout.n)), y=v.numpy(), ax=ax, color=sns.color_palette()[0])
        ax.set_xticks(range(layout.n), layout.labels, fontsize=7, rotation=90 if layout.n > 16 else 0)
        ax.set_xlabel("visual token (" + layout.description + ")", fontsize=8)
        ax.set_ylabel("attention weight", fontsize=8)
        if vmax is not None:
            ax.set_ylim(0, vmax * 1.05)
    ax.set_title(title or f"image share {float(v.sum()):.2f}", fontsize=9)
    return ax


def _selection_name(layer, head) -> str:
    return ("all layers" if layer == MEAN else f"layer {layer}") + ", " + ("mean of heads" if head == MEAN else f"head {head}")


def attention_card(sample, att: AnswerAttention, b: int, layer=MEAN, head=MEAN, prediction: str | None = None):
    """One sample: the chosen layer/head's answer attention over the image, then every layer (mean of heads)
    on a shared colour scale, then the image share per layer. The static fallback of :func:`attention_browser`."""
    n_l = att.n_layers
    fig, axes = plt.subplots(1, n_l + 2, figsize=(3.3 * (n_l + 2), 3.6),
                             gridspec_kw={"width_ratios": [1.15] + [1] * n_l + [0.9]})
    draw_answer_attention(sample, att.select(layer, head)[b], att.layout, axes[0],
                          title=f"{_selection_name(layer, head)}\nimage share {float(att.mass(layer, head)[b]):.2f}")
    per_layer = att.weights[b].mean(1)  # [layers, n]
    vmax = float(per_layer.max())
    for l_ in range(n_l):
        draw_answer_attention(sample, per_layer[l_], att.layout, axes[1 + l_], vmax=vmax, colorbar=l_ == n_l - 1,
                              title=f"layer {l_} (mean of heads)\nimage share {float(per_layer[l_].sum()):.2f}")
    ax = axes[-1]
    heads = att.weights[b].sum(-1).numpy()  # [layers, heads]
    for h in range(att.n_heads):
        ax.plot(range(n_l), heads[:, h], marker="o", lw=1, alpha=0.6, label=f"head {h}")
    ax.plot(range(n_l), heads.mean(1), color="black", marker="s", lw=2, label="mean")
    ax.set_xticks(range(n_l))
    ax.set_xlabel("LLM layer")
    ax.set_ylabel("attention share on the image")
    ax.set_ylim(0, 1)
    ax.set_title("image share per layer", fontsize=9)
    ax.legend(fontsize=7)
    qa = sample.qa
    head_line = f"{att.arch}: {sample.split} #{sample.index}  [{qa.category}] {qa.question} → {qa.answer}"
    if prediction is not None:
        head_line += f"   (model: {prediction})"
    fig.suptitle(head_line, fontsize=10)
    fig.tight_layout()
    return fig


def attention_grid(samples, att: AnswerAttention, layer=MEAN, head=MEAN, ncols: int = 4, predictions=None):
    """Several samples' answer attention (one layer/head selection) side by side: the static multi-sample view."""
    n = len(samples)
    nrows = -(-n // ncols)
    sel = att.select(layer, head)
    # questions wrap between words, and each row is as tall as its longest title and x label need
    titles = []
    for b, s in enumerate(samples):
        pred = "" if predictions is None else f" (model: {predictions[b]})"
        titles.append(textwrap.wrap(f"#{s.index} {s.qa.question}", 30)
                      + [f"→ {s.qa.answer}{pred}", f"image share {float(sel[b].sum()):.2f}"])
    lines = max(map(len, titles))
    panel = (3.1 if att.layout.kind == "grid" else 2.2) + 0.16 * lines + (0.5 if att.layout.extra else 0.3)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, panel * nrows + 0.5), squeeze=False,
                             layout="constrained")  # tight_layout let titles run into the row above
    for b, (ax, s) in enumerate(zip(axes.flat, samples)):
        draw_answer_attention(s, sel[b], att.layout, ax, colorbar=False, title="\n".join(titles[b]))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{att.arch}: attention from the answer position to the visual tokens ({_selection_name(layer, head)})",
                 fontsize=11)
    return fig


def layer_mass_table(att: AnswerAttention):
    """Tidy table: sample, layer, head, image share (for seaborn plots and computed statements)."""
    import pandas as pd

    m = att.weights.sum(-1)  # [B, layers, heads]
    B, nl, nh = m.shape
    rows = [{"sample": b, "layer": l_, "head": h, "image_share": float(m[b, l_, h])}
            for b in range(B) for l_ in range(nl) for h in range(nh)]
    return pd.DataFrame(rows)


def predicted_answers(model, batch: dict) -> list[str]:
    """The model's first answer token per sample (argmax of ``answer_logits``), as words."""
    ids = model.answer_logits(batch).argmax(-1).tolist()
    return model.tokenizer.convert_ids_to_tokens(ids)


# ---- (b) attention masks -------------------------------------------------------------------------------------------
def token_names(tokenizer, input_ids: torch.Tensor, visual_mask: torch.Tensor, layout: TokenLayout | None = None,
                marker_mask: torch.Tensor | None = None) -> list[str]:
    """Readable names of one row's positions: words for text, the layout's labels for visual tokens."""
    words = tokenizer.convert_ids_to_tokens(input_ids.tolist())
    out, k = [], 0
    for j, w in enumerate(words):
        if bool(visual_mask[j]):
            out.append(layout.labels[k] if layout is not None and k < len(layout.labels) else f"v{k}")
            k += 1
        elif marker_mask is not None and bool(marker_mask[j]):
            out.append("<img>")
        else:
            out.append(str(w))
    return out


def mask_pair(attention_mask: torch.Tensor, visual_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both masks of one row, built by :func:`vlmlab.attention.allowed_mask` exactly as the architectures build
    them: {"causal": bool [L, L], "bidirectional": bool [L, L]} (rows = queries, columns = keys)."""
    am, vm = attention_mask[None].cpu(), visual_mask[None].cpu().bool()
    ids = image_span_ids(vm)
    return {"causal": allowed_mask(am, ids, bidirectional=False)[0],
            "bidirectional": allowed_mask(am, ids, bidirectional=True)[0]}


def image_spans(visual_mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each contiguous visual span of one row (end exclusive)."""
    ids = image_span_ids(visual_mask[None].cpu().bool())[0]
    return [(int((ids == k).nonzero().min()), int((ids == k).nonzero().max()) + 1) for k in range(1, int(ids.max()) + 1)]


def draw_mask(allowed: torch.Tensor, visual_mask: torch.Tensor, ax=None, title: str = "", names=None,
              values: torch.Tensor | None = None, cmap: str = "Blues"):
    """A query x key matrix as an image (``allowed`` True = may attend, or attention ``values`` where given),
    with each image span framed (red)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    L = allowed.shape[0]
    if values is None:
        ax.imshow(allowed.float().numpy(), cmap=cmap, vmin=0, vmax=1.3, interpolation="nearest")
    else:
        v = np.where(allowed.numpy(), values.float().numpy(), np.nan)
        # the first rows (a query with one or two keys) put all their weight there: clip the scale at the 98th
        # percentile so the rest of the matrix stays readable
        vmax = max(float(np.nanquantile(v, 0.98)), 1e-8)
        im = ax.imshow(v, cmap="magma_r", vmin=0, vmax=vmax, interpolation="nearest")
        plt.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="attention weight (clipped at 98th pct.)")
    for s, e in image_spans(visual_mask):
        ax.add_patch(Rectangle((s - 0.5, s - 0.5), e - s, e - s, fill=False, ec="red", lw=1.6))
    if names is not None and L <= 80:
        step = 1 if L <= 40 else 2
        ax.set_xticks(range(0, L, step), names[::step], fontsize=5.5, rotation=90)
        ax.set_yticks(range(0, L, step), names[::step], fontsize=5.5)
    ax.set_xlabel("key (attended to)", fontsize=9)
    ax.set_ylabel("query (attending)", fontsize=9)
    ax.set_title(title, fontsize=10)
    return ax


def plot_masks(attention_mask: torch.Tensor, visual_mask: torch.Tensor, names=None, title: str = ""):
    """Causal | bidirectional-within-image | their difference, for one row (red frame: the image span)."""
    masks = mask_pair(attention_mask, visual_mask)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    n_c, n_b = int(masks["causal"].sum()), int(masks["bidirectional"].sum())
    draw_mask(masks["causal"], visual_mask, axes[0], f"causal: {n_c} allowed pairs", names)
    draw_mask(masks["bidirectional"], visual_mask, axes[1], f"bidirectional within the image: {n_b} allowed pairs",
              names)
    draw_mask(masks["bidirectional"] & ~masks["causal"], visual_mask, axes[2],
              f"only under bidirectional: {n_b - n_c} pairs\n(image tokens seeing later image tokens)", names,
              cmap="Reds")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


@torch.no_grad()
def attention_matrix(out: dict, b: int, layer=MEAN) -> torch.Tensor:
    """The attention the model paid in one row of a ``forward_with_attentions`` result: [L, L] (mean of heads,
    one layer or the mean of layers), float32 on the CPU."""
    att = torch.stack([a[b].float() for a in out["attentions"]])  # [layers, heads, L, L]
    att = att.mean(1)
    return (att.mean(0) if layer == MEAN else att[int(layer)]).cpu()


def later_image_mass(out: dict) -> torch.Tensor:
    """Per layer, the mean attention an image query puts on *later* tokens of its own image: [layers].
    Exactly 0 under a causal mask; the part of the block bidirectional attention opens up otherwise."""
    vm = out["visual_mask"].bool()
    ids = image_span_ids(vm)
    same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, :, None] > 0)  # [B, L, L]
    L = vm.shape[1]
    later = torch.ones(L, L, dtype=torch.bool, device=vm.device).triu(1)
    res = []
    for a in out["attentions"]:
        m = (a.float().mean(1) * (same & later)).sum(-1)  # [B, L]
        res.append(m[vm].mean() if vm.any() else m.new_zeros(()))
    return torch.stack(res).cpu()


# ---- (c) the browser -----------------------------------------------------------------------------------------------
@interactive_view
def attention_browser(model, world, task: str | None = None, split: str = "test", index: int = 0,
                      max_index: int = 199):
    """Pick a sample, a layer and a head: :func:`attention_card` for it (computed on demand, one sample)."""
    import ipywidgets as W

    task = task or model.eval_task
    n_layers = model.lm.config.num_hidden_layers
    n_heads = model.lm.config.num_attention_heads
    index_w = W.IntSlider(value=index, min=0, max=max_index, description="sample", continuous_update=False)
    layer_w = W.Dropdown(options=[MEAN] + list(range(n_layers)), value=MEAN, description="layer")
    head_w = W.Dropdown(options=[MEAN] + list(range(n_heads)), value=MEAN, description="head")
    cache: dict[int, tuple] = {}

    def figure():
        i = index_w.value
        if i not in cache:
            batch = world.batch(task, split, i, 1)
            cache[i] = (answer_attention(model, batch), predicted_answers(model, batch)[0])
        att, pred = cache[i]
        return attention_card(world.sample(split, i), att, 0, layer_w.value, head_w.value, prediction=pred)

    return figure_panel([index_w, layer_w, head_w], figure)


__all__ = ["MEAN", "TokenLayout", "token_layout", "AnswerAttention", "answer_attention", "draw_answer_attention",
           "attention_card", "attention_grid", "layer_mass_table", "predicted_answers", "token_names", "mask_pair",
           "image_spans", "draw_mask", "plot_masks", "attention_matrix", "later_image_mass", "attention_browser"]
