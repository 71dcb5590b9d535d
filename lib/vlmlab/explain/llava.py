"""Views of the LLaVA baseline's mechanism on real tensors, and the patch-level views the Ovis and VW-LMM
notebooks share with it (VW-LMM *is* LLaVA plus a head; Ovis replaces only the connector).

Everything is computed from the model's own tensors (``model.features``, ``model.connector``,
``model.build_inputs``, the LLM's input-embedding matrix); nothing here re-implements an architecture.

- **Where a visual token sits** (:func:`token_grid`, :func:`token_objects`): the visual tokens of these
  architectures form a ``T x T`` raster over the image; each covers a square of ``token_px`` world pixels
  (one ViT patch, or ``hidden_stride^2`` patches for Ovis). The scene graph says which objects a token covers.
- **The sequence the LLM reads** (:func:`token_sequence`, :func:`sequence_strip`): text tokens and the visual
  tokens spliced at the ``<img>`` placeholder.
- **Words beside visual tokens** (:class:`TokenWords`): the nearest vocabulary words of a visual token by cosine
  to the LLM's input embeddings (:func:`nearest_words`), or VW-LMM's visual words; drawn on the image grid
  (:func:`word_grid`, :func:`word_grids`; widget :func:`browser`), and checked against the scene graph
  (:func:`naming_table`, :func:`naming_summary`: does a token's word name an attribute of the object under it,
  beside a shuffled baseline with the same word frequencies).
- **Scale** (:func:`embedding_geometry`, :func:`geometry_plot`): norms of the visual tokens against the word
  embeddings', and how close each visual token comes to any word.
- **Accuracy** (:func:`accuracy_summary`): the record's per-category accuracy against the blind floor and the
  text-oracle ceiling, as computed Markdown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from ..widgets import draw_scene, figure_panel, interactive_view
from ..world import CATEGORIES

ATTRIBUTES = ("color", "shape", "size", "texture")
TEXT, VISUAL, PAD = "text", "visual", "padding"
KIND_COLOURS = {TEXT: "#4c72b0", VISUAL: "#dd8452", PAD: "#bbbbbb"}
NAMES, OTHER = "#c9ecc9", "#ffffff"  # word-label backgrounds: names an attribute of the covered object / not


# ---- where a visual token sits -------------------------------------------------------------------------------
def token_grid(model, image_size: int) -> tuple[int, float]:
    """(T, token_px): the model's image tokens form a T x T raster; each covers token_px x token_px world pixels.

    One token per ViT patch (``model.vision.grid``), or per ``hidden_stride x hidden_stride`` block of patches
    (Ovis's space-to-depth; the last block may reach past the image, as its zero padding does)."""
    hs = int(getattr(model.knobs, "hidden_stride", 1))
    g = model.vision.grid
    return math.ceil(g / hs), image_size / g * hs


def token_objects(sample, T: int, token_px: float) -> list[tuple]:
    """For each of the T*T tokens (raster order), the scene objects whose world cell overlaps the token's square."""
    c = sample.world.cell
    out = []
    for t in range(T * T):
        r, k = divmod(t, T)
        y0, y1, x0, x1 = r * token_px, (r + 1) * token_px, k * token_px, (k + 1) * token_px
        out.append(tuple(o for o in sample.scene
                         if o.row * c < y1 and (o.row + 1) * c > y0 and o.col * c < x1 and (o.col + 1) * c > x0))
    return out


def _token_box(t: int, T: int, token_px: float) -> tuple[float, float]:
    r, k = divmod(t, T)
    return k * token_px - 0.5, r * token_px - 0.5  # (x, y) of the top-left corner in imshow coordinates


# ---- the sequence the LLM reads ------------------------------------------------------------------------------
def token_sequence(inputs: dict, tokenizer, row: int = 0) -> pd.DataFrame:
    """One row of ``model.build_inputs(batch)`` (or ``model.forward``) as a table: position, token (words for text,
    ``v<j>`` for the j-th visual token), kind (text / visual / padding), the supervised target word at that
    position (labels, -100 shown empty) and whether the position predicts the answer."""
    ids = inputs["input_ids"][row].tolist()
    vis = inputs["visual_mask"][row].tolist()
    att = inputs["attention_mask"][row].tolist()
    lab = inputs["labels"][row].tolist()
    ans = int(inputs["answer_pos"][row]) - 1
    words = tokenizer.convert_ids_to_tokens(ids)
    rows, j = [], 0
    for p, (w, v, a, y) in enumerate(zip(words, vis, att, lab)):
        if v:
            w, kind, j = f"v{j}", VISUAL, j + 1
        else:
            kind = TEXT if a else PAD
        rows.append({"position": p, "token": w, "kind": kind,
                     "target": tokenizer.convert_ids_to_tokens(y) if y != -100 else "",
                     "predicts_answer": p == ans})
    return pd.DataFrame(rows)


def sequence_strip(seq: pd.DataFrame, per_row: int = 40, title: str = "the LLM's input sequence"):
    """The sequence as a strip of coloured boxes (text / visual / padding), token names below each; the
    position whose output predicts the answer is framed in red. Long sequences wrap every ``per_row`` tokens."""
    seq = seq[seq["kind"] != PAD] if (seq["kind"] != PAD).any() else seq
    n = len(seq)
    nrows = max(1, -(-n // per_row))
    fig, axes = plt.subplots(nrows, 1, figsize=(0.3 * min(n, per_row) + 1.5, 1.35 * nrows), squeeze=False)
    for r, ax in enumerate(axes[:, 0]):
        part = seq.iloc[r * per_row:(r + 1) * per_row]
        for i, (_, t) in enumerate(part.iterrows()):
            ax.add_patch(Rectangle((i, 0), 0.92, 1, color=KIND_COLOURS[t["kind"]]))
            if t["predicts_answer"]:
                ax.add_patch(Rectangle((i - 0.04, -0.06), 1.0, 1.12, fill=False, ec="red", lw=2))
            ax.text(i + 0.46, -0.15, t["token"], rotation=90, ha="center", va="top", fontsize=8, family="monospace")
        ax.set_xlim(-0.2, per_row if nrows > 1 else n)
        ax.set_ylim(-2.6, 1.2)
        ax.axis("off")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in (KIND_COLOURS[TEXT], KIND_COLOURS[VISUAL])]
    handles.append(Rectangle((0, 0), 1, 1, fill=False, ec="red", lw=2))
    axes[0, 0].legend(handles, ["text token (word embedding)", "visual token (connector output)",
                                "its output predicts the answer"], loc="lower left", bbox_to_anchor=(0, 1.0),
                      ncol=3, frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10, y=1.02)
    fig.tight_layout()
    return fig


# ---- words beside visual tokens ------------------------------------------------------------------------------
@dataclass
class TokenWords:
    """Top-k words per visual token for S scenes: ``words[s][t][r]`` (rank r), ``scores`` [S, T*T, k] (cosine or
    probability, named by ``score_name``)."""

    words: list
    scores: np.ndarray
    score_name: str

    def top(self) -> list[list[str]]:
        return [[w[0] for w in scene] for scene in self.words]


def word_ids(tokenizer) -> torch.Tensor:
    """Ids of the tokenizer's ordinary words (special tokens such as <pad> or <img> excluded)."""
    special = set(tokenizer.all_special_ids)
    return torch.tensor([i for i in range(len(tokenizer)) if i not in special])


@torch.no_grad()
def nearest_words(vectors: torch.Tensor, embeddings: torch.Tensor, tokenizer, k: int = 3) -> TokenWords:
    """The k vocabulary words whose input embeddings have the highest cosine with each vector.

    vectors [S, N, d] (visual tokens), embeddings [V, d] (the LLM's input-embedding matrix); special tokens are
    never candidates."""
    ids = word_ids(tokenizer).to(embeddings.device)
    E = F.normalize(embeddings[ids].float(), dim=-1)  # [V', d]
    cos = F.normalize(vectors.float().to(E.device), dim=-1) @ E.T  # [S, N, V']
    val, idx = cos.topk(min(k, E.shape[0]), dim=-1)
    chosen = ids[idx]  # [S, N, k]
    words = [[tokenizer.convert_ids_to_tokens(t) for t in scene] for scene in chosen.tolist()]
    return TokenWords(words, val.cpu().numpy(), "cos")


def _attribute_values(world) -> dict[str, tuple]:
    return {"color": world.colors, "shape": world.shapes, "size": world.sizes, "texture": world.textures}


def word_kind(word: str, world) -> str:
    """Which attribute vocabulary a word belongs to (color / shape / size / texture / position), else other."""
    for a, vals in _attribute_values(world).items():
        if word in vals:
            return a
    if len(word) >= 2 and word[0] in "rc" and word[1:].isdigit():
        return "position"
    return "other"


def names_object(word: str, objects) -> bool:
    """Whether the word is an attribute value (color, shape, size, texture) of one of the objects."""
    return any(word in (o.color, o.shape, o.size, o.texture) for o in objects)


def word_grid(sample, tw: TokenWords, s: int, T: int, token_px: float, ax=None, k: int | None = None,
              title: str | None = None):
    """One scene with each visual token's top words (and scores) written in its square. A word that names an
    attribute of an object under the token has a green background."""
    k = tw.scores.shape[-1] if k is None else min(k, tw.scores.shape[-1])
    if token_px < 12:
        k = 1  # small tokens hold one line
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.2, 1.15 * T), max(4.2, 1.15 * T)))
    draw_scene(sample, ax, grid=False)
    H = sample.world.image_size
    objs = token_objects(sample, T, token_px)
    fs = 7 if token_px >= 12 else 6
    for t in range(T * T):
        x, y = _token_box(t, T, token_px)
        ax.add_patch(Rectangle((x, y), token_px, token_px, fill=False, ec="white", lw=0.6, alpha=0.6))
        for r in range(k):
            w, v = tw.words[s][t][r], tw.scores[s, t, r]
            ax.text(x + 1, y + 1 + r * token_px / (k + 0.6), f"{w} {v:.2f}".replace("0.", "."), fontsize=fs,
                    va="top", ha="left", family="monospace",
                    bbox={"fc": NAMES if names_object(w, objs[t]) else OTHER, "alpha": 0.8, "pad": 0.6, "lw": 0})
    ax.set_xlim(-0.5, H - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_title(title or f"{sample.split} #{sample.index}: top-{k} words per token ({tw.score_name})", fontsize=9)
    return ax


def word_grids(samples, tw: TokenWords, T: int, token_px: float, ncols: int = 3, k: int | None = None,
               title: str = ""):
    """Several scenes' :func:`word_grid` side by side (the static figure of :func:`browser` over scenes)."""
    n = len(samples)
    nrows = -(-n // ncols)
    side = max(4.2, 1.15 * T)
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols, side * nrows), squeeze=False)
    for s, (ax, smp) in enumerate(zip(axes.flat, samples)):
        word_grid(smp, tw, s, T, token_px, ax=ax, k=k, title=f"{smp.split} #{smp.index}: {smp.scene_text[:40]}…"
                  if len(smp.scene_text) > 40 else f"{smp.split} #{smp.index}: {smp.scene_text}")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title or f"top words per visual token ({tw.score_name}); green: names an attribute of the "
                          "object under the token", fontsize=11)
    fig.tight_layout()
    return fig


def naming_table(samples, tw: TokenWords, T: int, token_px: float) -> pd.DataFrame:
    """One row per (scene, token): the objects it covers, its top word, the word's kind, and whether the word
    names the covered object's color / shape / size / texture / grid position (checked on the scene graph)."""
    rows = []
    for s, smp in enumerate(samples):
        world = smp.world
        for t, objs in enumerate(token_objects(smp, T, token_px)):
            w = tw.words[s][t][0]
            row = {"scene": s, "token": t, "objects": len(objs), "word": w, "kind": word_kind(w, world),
                   "score": float(tw.scores[s, t, 0]),
                   "content": " + ".join(f"{o.color} {o.shape}" for o in objs) or "empty"}
            for a in ATTRIBUTES:
                row[f"names_{a}"] = any(getattr(o, a) == w for o in objs)
            row["names_position"] = any(w in (f"r{o.row}", f"c{o.col}") for o in objs)
            row["names_attribute"] = any(row[f"names_{a}"] for a in ATTRIBUTES)
            rows.append(row)
    return pd.DataFrame(rows)


def naming_summary(table: pd.DataFrame, samples, T: int, token_px: float, shuffles: int = 200,
                   seed: int = 0) -> pd.DataFrame:
    """Over tokens covering an object: the share (%) whose top word names the object's color, shape, size,
    texture or any of them, beside a **shuffled baseline**: the same words dealt to random object tokens (same
    word frequencies, no link to the token's content), mean over ``shuffles`` permutations."""
    objs = [o for smp in samples for o in token_objects(smp, T, token_px)]
    mask = table["objects"].to_numpy() > 0
    words = table["word"].to_numpy()[mask]
    covered = [o for o, m in zip(objs, mask) if m]
    rng = np.random.default_rng(seed)
    rows = []
    for a in (*ATTRIBUTES, "attribute"):
        col = f"names_{a}"
        rate = 100 * table.loc[mask, col].mean() if mask.any() else float("nan")
        vals = [{getattr(o, a) for o in os_} if a != "attribute" else
                {v for o in os_ for v in (o.color, o.shape, o.size, o.texture)} for os_ in covered]
        base = []
        for _ in range(shuffles if mask.any() else 0):
            perm = rng.permutation(words)
            base.append(np.mean([w in v for w, v in zip(perm, vals)]))
        rows.append({"names": a if a != "attribute" else "any attribute", "tokens": int(mask.sum()),
                     "rate (%)": rate, "shuffled baseline (%)": 100 * float(np.mean(base)) if base else float("nan")})
    return pd.DataFrame(rows).set_index("names")


def naming_plot(summary: pd.DataFrame, title: str = "does a token's top word name the object under it?", ax=None):
    """Bars: naming rate against the shuffled baseline, per attribute (the figure of :func:`naming_summary`)."""
    long = summary.reset_index().melt(id_vars="names", value_vars=["rate (%)", "shuffled baseline (%)"],
                                      var_name="source", value_name="share of object tokens (%)")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(data=long, x="names", y="share of object tokens (%)", hue="source", ax=ax, palette="deep")
    for cont in ax.containers:
        ax.bar_label(cont, fmt="%.0f", fontsize=8, padding=1)
    ax.set_ylim(0, 105)
    ax.set_xlabel("the top word names the object's …")
    ax.set_title(f"{title} ({int(summary['tokens'].iloc[0])} object tokens)", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return ax


@interactive_view
def browser(figure_fn, n: int, description: str = "scene", value: int = 0):
    """A slider over ``n`` items; each move draws ``figure_fn(i)`` (a matplotlib figure) below it. The notebooks
    pair it with a static figure of several items."""
    import ipywidgets as W

    index_w = W.IntSlider(value=value, min=0, max=max(0, n - 1), description=description, continuous_update=False)
    return figure_panel([index_w], lambda: figure_fn(index_w.value))


def attention_on_objects(values: torch.Tensor, samples, T: int, token_px: float) -> pd.DataFrame:
    """Does the answer look at the objects? values [B, T*T]: attention from the answer position to each spatial
    visual token (e.g. ``AnswerAttention.select()[:, layout.spatial]``). One row per sample: the image share of
    the attention, the part of it on tokens covering an object, and the share of tokens that cover an object
    (what a uniform look at the image would give)."""
    rows = []
    v = values.float().cpu()
    for b, smp in enumerate(samples):
        on = torch.tensor([len(o) > 0 for o in token_objects(smp, T, token_px)])
        total = float(v[b].sum())
        rows.append({"sample": b, "image share": total,
                     "on objects (% of image attention)": 100 * float(v[b][on].sum()) / total if total > 0 else float("nan"),
                     "object tokens (% of tokens)": 100 * float(on.float().mean())})
    return pd.DataFrame(rows)


def attention_statement(objects: pd.DataFrame, per_layer: torch.Tensor | None = None) -> str:
    """Markdown computed from :func:`attention_on_objects` (and the image share per layer, [B, layers]): how much
    of the answer's attention reaches the image, and whether it favours the object tokens beyond a uniform look
    (a 95% interval of the mean paired difference over samples)."""
    d = (objects["on objects (% of image attention)"] - objects["object tokens (% of tokens)"]).dropna()
    n = len(d)
    half = 1.96 * float(d.std(ddof=1)) / n ** 0.5 if n > 1 else float("nan")
    mean = float(d.mean()) if n else float("nan")
    lines = [f"- Over {len(objects)} test questions, the position that predicts the answer puts on average "
             f"**{100 * objects['image share'].mean():.1f}%** of its attention (mean over layers and heads) on the "
             "visual tokens."]
    if per_layer is not None:
        pl = per_layer.float().mean(0)
        lines.append("- Image share per LLM layer: " + ", ".join(f"layer {i} {100 * float(v):.1f}%"
                                                                 for i, v in enumerate(pl)) + ".")
    if n:
        verdict = ("more than" if mean - half > 0 else "less than" if mean + half < 0 else
                   "no differently from")
        lines.append(f"- Of that image attention, {objects['on objects (% of image attention)'].mean():.1f}% lands on "
                     f"tokens covering an object, which make up {objects['object tokens (% of tokens)'].mean():.1f}% "
                     f"of the tokens: the answer looks at the objects **{verdict}** a uniform look would "
                     f"({mean:+.2f} ± {half:.2f} points, 95% interval over questions).")
    return "\n".join(lines)


# ---- scale ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def embedding_geometry(visual: torch.Tensor, embeddings: torch.Tensor, tokenizer) -> pd.DataFrame:
    """Tidy table of L2 norms and nearest-word cosines: one row per visual token (``visual`` [..., d]) and per
    vocabulary word (its nearest *other* word, the reference for how close a visual token comes to a word)."""
    ids = word_ids(tokenizer).to(embeddings.device)
    E = embeddings[ids].float()  # [V', d]
    En = F.normalize(E, dim=-1)
    v = visual.reshape(-1, visual.shape[-1]).float().to(E.device)
    cos_v = (F.normalize(v, dim=-1) @ En.T).max(-1).values
    ww = En @ En.T
    ww.fill_diagonal_(-2.0)
    cos_w = ww.max(-1).values
    return pd.concat([
        pd.DataFrame({"kind": "visual token", "norm": v.norm(dim=-1).cpu().numpy(), "nearest word cosine": cos_v.cpu().numpy()}),
        pd.DataFrame({"kind": "word embedding", "norm": E.norm(dim=-1).cpu().numpy(), "nearest word cosine": cos_w.cpu().numpy()}),
    ], ignore_index=True)


def geometry_plot(geo: pd.DataFrame, title: str = "visual tokens beside the LLM's word embeddings"):
    """Two panels: L2 norm and cosine to the nearest word, visual tokens against word embeddings."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
    sns.histplot(data=geo, x="norm", hue="kind", stat="density", common_norm=False, element="step",
                 log_scale=True, ax=axes[0])
    axes[0].set(title="L2 norm (log scale)", xlabel="norm")
    sns.histplot(data=geo, x="nearest word cosine", hue="kind", stat="density", common_norm=False, element="step",
                 binrange=(-1, 1), bins=40, ax=axes[1])
    axes[1].set(title="cosine to the nearest word (words: nearest other word)", xlabel="cosine")
    fig.suptitle(title, fontsize=11)
    return fig


# ---- accuracy --------------------------------------------------------------------------------------------------
def accuracy_summary(record: dict, split: str = "test") -> str:
    """Markdown computed from a run record: overall accuracy against the blind floor and the text-oracle ceiling,
    the share of the gap closed, best and worst category. A difference counts only beyond the 95% sampling
    half-width of an accuracy near 50% on that many questions."""
    from ..results import accuracy_table

    arch = record["config"]["arch"]
    t = accuracy_table(record, split)
    n = record["budget"]["eval_per_category"]
    noise_cat = 100 * 1.96 * (0.25 / n) ** 0.5
    noise_all = 100 * 1.96 * (0.25 / (n * len(CATEGORIES))) ** 0.5
    m = t.loc["overall", "model"]
    lines = [f"- {arch} answers **{m:.1f}%** of the {split} questions ({n} per category; noise ±{noise_all:.1f} "
             f"points overall, ±{noise_cat:.1f} per category)."]
    if "floor (blind)" in t and "ceiling (text oracle)" in t:
        lo, hi = t.loc["overall", "floor (blind)"], t.loc["overall", "ceiling (text oracle)"]
        lines[0] = lines[0][:-1] + f"; blind floor {lo:.1f}%, text-oracle ceiling {hi:.1f}%."
        if hi - lo > noise_all:
            lines.append(f"- It closes **{100 * (m - lo) / (hi - lo):.0f}%** of the floor-to-ceiling gap.")
        else:
            lines.append("- Floor and ceiling are within the noise of each other at this budget: no gap to close.")
        cats = t.loc[list(CATEGORIES)]
        above = [c for c in CATEGORIES if cats.loc[c, "model"] - cats.loc[c, "floor (blind)"] > noise_cat]
        lines.append(f"- Above the blind floor beyond the noise in {len(above)} of {len(CATEGORIES)} categories"
                     + (f" ({', '.join(above)})." if above else "."))
    cats = t.loc[list(CATEGORIES), "model"]
    lines.append(f"- Best category: {cats.idxmax()} ({cats.max():.1f}%); worst: {cats.idxmin()} ({cats.min():.1f}%).")
    return "\n".join(lines)


__all__ = ["ATTRIBUTES", "token_grid", "token_objects", "token_sequence", "sequence_strip", "TokenWords", "word_ids",
           "nearest_words", "word_kind", "names_object", "word_grid", "word_grids", "naming_table", "naming_summary",
           "naming_plot", "browser", "attention_on_objects", "attention_statement", "embedding_geometry", "geometry_plot", "accuracy_summary"]
