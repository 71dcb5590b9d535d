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


__all__ = ["accuracy_bars", "loss_curves", "matplotlib"]
