"""The studies' plots: accuracy per category against the ablated value, diagnostics, an interactive explorer."""
from __future__ import annotations

import math

import pandas as pd

from ..results import ROWS
from ..widgets import interactive_view
from .tables import reference


FLOOR_STYLE = {"color": "#7f7f7f", "ls": "--", "lw": 1.6}
CEILING_STYLE = {"color": "#2ca02c", "ls": "--", "lw": 1.6}
CHANCE_STYLE = {"color": "black", "ls": ":", "lw": 1.2}

def ablation_plot(frame: pd.DataFrame, x: str, hue: str | None = None, *, split: str = "test", categories=ROWS,
                  order=None, hue_order=None, ncols: int = 4, title: str | None = None, xlabel: str | None = None):
    """Accuracy (%) against the ablated value ``x``, one panel per category: bars = mean over seeds, error bars =
    sd over seeds, black points = the individual seeds, dashed lines = blind floor (grey) and text-oracle
    ceiling (green), dotted = chance. ``hue`` splits the bars (e.g. by architecture). Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    model = frame[(frame["split"] == split) & (frame["source"] == "model")].copy()
    cats = [c for c in categories if c in set(model["category"])]
    if model.empty or not cats:
        raise ValueError(f"no model accuracy on the {split} split to plot")
    model[x] = model[x].astype(str)
    present = set(model[x])
    order = [str(v) for v in order if str(v) in present] if order is not None else list(dict.fromkeys(model[x]))
    if hue is not None:
        model[hue] = model[hue].astype(str)
        hue_order = [str(v) for v in hue_order] if hue_order is not None else list(dict.fromkeys(model[hue]))
    lo, hi, ch = (reference(frame, s, split) for s in ("floor", "ceiling", "chance"))
    n_seeds = model.groupby([x] + ([hue] if hue else []))["seed"].nunique()
    nrows = math.ceil(len(cats) / ncols)
    w = max(3.2, 0.55 * len(order) * (len(hue_order) if hue else 1) + 1.2)
    fig, axes = plt.subplots(nrows, min(ncols, len(cats)), figsize=(w * min(ncols, len(cats)), 3.3 * nrows),
                             sharey=True, squeeze=False, constrained_layout=True)
    palette = sns.color_palette("deep", len(hue_order) if hue else len(order))
    for ax, c in zip(axes.flat, cats):
        d = model[model["category"] == c]
        kw = dict(hue=hue, hue_order=hue_order, palette=palette) if hue else \
            dict(hue=x, hue_order=order, palette=palette, legend=False)
        sns.barplot(data=d, x=x, y="accuracy", order=order, errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.4},
                    ax=ax, alpha=0.85, **kw)
        sns.stripplot(data=d, x=x, y="accuracy", order=order, hue=hue, hue_order=hue_order,
                      dodge=hue is not None, palette=["black"] * (len(hue_order) if hue else 1) if hue else None,
                      color=None if hue else "black", size=3.5, jitter=0.12, ax=ax, legend=False)
        for ref, style in ((lo, FLOOR_STYLE), (hi, CEILING_STYLE), (ch, CHANCE_STYLE)):
            if c in ref.index:
                ax.axhline(ref[c], **style, zorder=0)
        ax.set_title(c, fontsize=12)
        ax.set_xlabel(xlabel or x, fontsize=10)
        ax.set_ylabel("accuracy (%)", fontsize=10)
        ax.set_ylim(0, 105)
        ax.tick_params(axis="x", labelsize=9, rotation=20 if max(len(o) for o in order) > 6 else 0)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(cats):]:
        ax.set_visible(False)
    handles = [Line2D([], [], **FLOOR_STYLE, label="blind floor"), Line2D([], [], **CEILING_STYLE,
               label="text-oracle ceiling"), Line2D([], [], **CHANCE_STYLE, label="chance"),
               Line2D([], [], color="black", marker="o", ls="", ms=4, label="one seed")]
    if hue:
        handles = [plt.Rectangle((0, 0), 1, 1, color=palette[i], label=h) for i, h in enumerate(hue_order)] + handles
    seeds = f"{n_seeds.min()}" if n_seeds.min() == n_seeds.max() else f"{n_seeds.min()}-{n_seeds.max()}"
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=10, title=hue)
    fig.suptitle(title or f"accuracy per category vs {x} ({split} split; bars: mean, error bars: sd over "
                          f"{seeds} seeds)", fontsize=13)
    return fig


def diagnostic_plot(frame: pd.DataFrame, x: str, keys, hue: str | None = None, *, order=None, title=None,
                    xlabel=None, labels: dict | None = None):
    """One panel per diagnostic (a :func:`diagnostics_frame`): mean over seeds as bars, sd as error bars, the
    seeds as points. ``labels``: diagnostic -> y-axis label (default: the key without its arch prefix, in words).
    Diagnostics absent from the frame are skipped."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    keys = [k for k in keys if k in set(frame["diagnostic"])]
    if not keys:
        raise ValueError("none of the requested diagnostics is in the records")
    d = frame.copy()
    d[x] = d[x].astype(str)
    order = [str(v) for v in order] if order is not None else list(dict.fromkeys(d[x]))
    hue_order = None
    if hue is not None:
        d[hue] = d[hue].astype(str)
        hue_order = list(dict.fromkeys(d[hue]))
    fig, axes = plt.subplots(1, len(keys), figsize=(max(3.6, 0.9 * len(order) + 1.5) * len(keys), 3.6),
                             squeeze=False, constrained_layout=True)
    for ax, k in zip(axes[0], keys):
        dk = d[d["diagnostic"] == k]
        present = [o for o in order if o in set(dk[x])]
        kw = dict(hue=hue, hue_order=hue_order) if hue else dict(hue=x, hue_order=present, legend=False)
        sns.barplot(data=dk, x=x, y="value", order=present, errorbar="sd", capsize=0.15, palette="deep", ax=ax,
                    alpha=0.85, **kw)
        sns.stripplot(data=dk, x=x, y="value", order=present, hue=hue, hue_order=hue_order,
                      dodge=hue is not None, palette=["black"] * len(hue_order) if hue else None,
                      color=None if hue else "black", size=3.5, jitter=0.12, ax=ax, legend=False)
        ax.set_title(k.replace("_", " "), fontsize=11)  # "ovis effective entries", not the record's key
        ax.set_ylabel((labels or {}).get(k, k.split("_", 1)[-1].replace("_", " ")), fontsize=10)
        ax.set_xlabel(xlabel or x, fontsize=10)
    fig.suptitle(title or f"diagnostics vs {x}\n(bars: mean, error bars: sd over seeds, points: seeds)", fontsize=11)
    return fig


@interactive_view(figure="above")
def explorer(frame: pd.DataFrame, x: str, hue: str | None = None, **kw):
    """An ipywidgets view: pick the split and the category, see that panel of :func:`ablation_plot` (the
    static fallback is the full :func:`ablation_plot` figure the notebooks draw for each split)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    splits = [s for s in ("test", "compositional") if s in set(frame["split"].dropna())]
    cats = [c for c in ROWS if c in set(frame["category"])]

    def show(split, category):
        fig = ablation_plot(frame, x, hue, split=split, categories=[category], ncols=1, **kw)
        plt.show()
        plt.close(fig)

    return W.interactive(show, split=W.Dropdown(options=splits, description="split"),
                         category=W.Dropdown(options=cats, value="overall", description="category"))
