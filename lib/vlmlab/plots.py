"""Seaborn figures shared by the notebooks."""
from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .results import accuracy_table
from .world import CATEGORIES


def accuracy_bars(record: dict, split: str = "test", ax=None, title: str | None = None):
    """Bars per question category: the model beside the blind floor, the text-oracle ceiling and chance."""
    table = accuracy_table(record, split).loc[list(CATEGORIES)]
    long = table.drop(columns=["chance"]).reset_index(names="category").melt(
        id_vars="category", var_name="source", value_name="accuracy (%)")
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.8))
    sns.barplot(data=long, x="category", y="accuracy (%)", hue="source", ax=ax, palette="deep")
    for i, c in enumerate(CATEGORIES):  # chance as a short black tick per category
        ax.hlines(table.loc[c, "chance"], i - 0.4, i + 0.4, colors="black", linestyles=":", lw=1.5,
                  label="chance" if i == 0 else None)
    ax.set_ylim(0, 105)
    ax.set_xlabel("question category")
    ax.set_title(title or f"{record['config']['arch']} on the {split} split (budget {record['config']['budget']})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return ax


def loss_curves(record: dict, ax=None, smooth: int = 10):
    """Training loss per stage, smoothed with a running mean, stages laid end to end."""
    rows, offset = [], 0
    for stage, losses in record["losses"].items():
        s = pd.Series(losses).rolling(smooth, min_periods=1).mean()
        rows += [{"step": offset + i, "loss": v, "stage": stage} for i, v in enumerate(s)]
        offset += len(losses)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    if rows:
        sns.lineplot(data=pd.DataFrame(rows), x="step", y="loss", hue="stage", ax=ax)
    ax.set_title(f"training loss per stage ({record['config']['arch']})")
    return ax


def probe_bars(table: pd.DataFrame, split: str = "test", title: str | None = None):
    """Held-out linear-probe accuracy (``vlmlab.probes`` table): one panel per attribute, bars per block and
    encoder with their values, the raw-pixel probe as a dashed line and the majority class as a dotted one."""
    t = table[table["split"] == split]
    feats = t[t["block"].notna()].copy()
    feats["block"] = feats["block"].map(lambda b: f"block {b}")
    attrs = list(dict.fromkeys(t["attribute"]))
    fig, axes = plt.subplots(1, len(attrs), figsize=(3.4 * len(attrs), 3.6), sharey=True, squeeze=False,
                             constrained_layout=True)
    for ax, a in zip(axes[0], attrs):
        d = feats[feats["attribute"] == a]
        sns.barplot(data=d, x="block", y="accuracy", hue="encoder", ax=ax, palette="deep")
        for cont in ax.containers:
            ax.bar_label(cont, fmt="%.0f", fontsize=7, padding=1)
        px = t[(t["attribute"] == a) & (t["encoder"] == "pixels")]
        if len(px):
            ax.axhline(px["accuracy"].iloc[0], color="grey", ls="--", lw=1.2, label="pixels")
        ax.axhline(t[t["attribute"] == a]["chance"].iloc[0], color="black", ls=":", lw=1.2, label="majority")
        ax.set_ylim(0, 108)
        ax.set_title(a)
        ax.set_xlabel("")
        ax.set_ylabel("held-out accuracy (%)")
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
        else:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(title or f"linear probes on one cell's patch token ({split} split, {int(t['n_test'].iloc[0])} objects)")
    return fig


def answer_shares(samples, ncols: int = 4):
    """Share of each answer per question category (a bar per answer; chance, the mean of 1/|answer set|, as a
    dotted line)."""
    df = pd.DataFrame([{"category": s.qa.category, "answer": s.qa.answer} for s in samples])
    cats = [c for c in CATEGORIES if c in set(df["category"])]
    nrows = -(-len(cats) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False,
                             constrained_layout=True)
    w = samples[0].world
    order = [*w.colors, *w.shapes, *w.sizes, *w.textures]
    for ax, c in zip(axes.flat, cats):
        d = df[df["category"] == c]
        sets = [s.qa.answers for s in samples if s.qa.category == c]
        answers = list(dict.fromkeys(a for aset in sets for a in aset))  # the category's answer set
        answers.sort(key=lambda a: order.index(a) if a in order else len(order))  # the world's own order
        share = d["answer"].value_counts(normalize=True).reindex(answers, fill_value=0.0) * 100
        sns.barplot(x=share.index, y=share.values, ax=ax, color=sns.color_palette("deep")[0])
        ax.axhline(100 * sum(1 / len(aset) for aset in sets) / len(sets), color="black", ls=":", lw=1.2)  # chance
        ax.set_title(f"{c} ({len(d)} questions)")
        ax.set_ylabel("share (%)")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    for ax in list(axes.flat)[len(cats):]:
        ax.axis("off")
    return fig


__all__ = ["accuracy_bars", "loss_curves", "probe_bars", "answer_shares", "matplotlib"]
