"""ipywidgets views for the notebooks, each beside the static matplotlib figure that shows the same information.

Widgets need a live kernel: an executed notebook rendered to HTML (the course) or run in batch by papermill
keeps only their last drawing, if that. So every view here is a thin control panel around a static figure
function, and the notebooks call that function too: nothing a widget shows is lost on a rendered page.

=====================  ===============================  ===========================================
view (widget)          static fallback                   shows
=====================  ===============================  ===========================================
``scene_browser``      ``scene_card``, ``scene_grid``    a sample: image, caption, scene text, Q/A
``probe_browser``      ``probe_card``                    what linear probes read from each object's
                                                         patch token, per encoder, against the truth
=====================  ===============================  ===========================================
"""
from __future__ import annotations

import functools
import os
import textwrap

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from .world import SPLITS, Sample

RIGHT, WRONG = "#d9f2d9", "#f7d4d4"  # table cell colours of correct / wrong probe readings
BATCH_ENV = "VLMLAB_BATCH"  # set to 1 by unattended executions: the course, sweeps, the tests


def batch_mode() -> bool:
    """True in an unattended execution (``VLMLAB_BATCH=1``: ``vlmlab course``, sweeps and the tests set it)."""
    return os.environ.get(BATCH_ENV, "").strip() not in ("", "0")


def interactive_view(fn=None, *, figure: str = "below"):
    """Decorate a function that builds an ipywidgets view (``@interactive_view``, or
    ``@interactive_view(figure="above")`` where the notebook draws the static figure before the view). In batch
    mode it builds nothing and returns a short note instead, naming the view the cell called and where its static
    figure is: nobody can move the controls of an executed notebook, and drawing into a widget's output area
    while papermill executes the cell can leave the cell waiting forever for its reply (jupyter/nbclient#312)."""
    if fn is None:
        return functools.partial(interactive_view, figure=figure)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if batch_mode():
            from IPython.display import Markdown

            return Markdown(f"*Interactive view `{fn.__name__}` not built in this unattended run ({BATCH_ENV}=1); "
                            f"the static figure {figure} it shows the same information. Open the notebook in "
                            f"JupyterLab to use it.*")
        return fn(*args, **kwargs)
    return wrapper


def held_out_cells(sample: Sample) -> list[tuple[int, int]]:
    """Cells holding a (shape, color) pair that the train/val/test splits never show (compositional split)."""
    hold = set(sample.world.holdout)
    return [o.cell for o in sample.scene if (o.shape, o.color) in hold]


def draw_scene(sample: Sample, ax=None, highlight=(), grid: bool = True, labels: bool = True):
    """The image with its cell grid (ticks read like the scene text: r0..r3, c0..c3); ``highlight`` cells get a
    white frame."""
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    w = sample.world
    ax.imshow(sample.image, interpolation="nearest")
    if grid:
        for k in range(1, w.grid):
            ax.axhline(k * w.cell - 0.5, color="white", lw=0.4, alpha=0.35)
            ax.axvline(k * w.cell - 0.5, color="white", lw=0.4, alpha=0.35)
    for r, c in highlight:
        ax.add_patch(Rectangle((c * w.cell - 0.5, r * w.cell - 0.5), w.cell, w.cell, fill=False, ec="white", lw=2))
    centres = [k * w.cell + w.cell / 2 - 0.5 for k in range(w.grid)]
    if labels:
        ax.set_xticks(centres, [f"c{k}" for k in range(w.grid)], fontsize=7)
        ax.set_yticks(centres, [f"r{k}" for k in range(w.grid)], fontsize=7)
        ax.tick_params(length=0)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return ax


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or "-"


def scene_card(sample: Sample, highlight_held_out: bool = True):
    """One sample in full: the image beside its question (category, answer, answer set), caption and scene text.
    The static fallback of :func:`scene_browser`."""
    from .world import caption

    fig, (ax, tx) = plt.subplots(1, 2, figsize=(9.5, 3.4), gridspec_kw={"width_ratios": [1, 1.9]})
    draw_scene(sample, ax, highlight=held_out_cells(sample) if highlight_held_out else ())
    ax.set_title(f"{sample.split} #{sample.index}", fontsize=10)
    qa = sample.qa
    lines = [
        ("question", f"{qa.question}   [{qa.category}, {qa.family}]"),
        ("answer", f"{qa.answer}   (drawn from {len(qa.answers)}: {', '.join(qa.answers)})"),
        ("caption", caption(sample.world, sample.scene)),
        ("scene text", sample.scene_text),
    ]
    if highlight_held_out and held_out_cells(sample):
        lines.append(("held out", "framed: shape-color pairs never seen in train/val/test"))
    tx.axis("off")
    y = 1.0
    for key, value in lines:
        body = _wrap(value, 62)
        tx.text(0.0, y, key, fontsize=9, fontweight="bold", va="top", transform=tx.transAxes)
        tx.text(0.2, y, body, fontsize=9, va="top", family="monospace", transform=tx.transAxes)
        y -= 0.085 * (body.count("\n") + 1) + 0.06
    fig.tight_layout()
    return fig


def scene_grid(samples: list[Sample], ncols: int = 4, text: str = "qa", highlight_held_out: bool = True):
    """Several samples, each image above its question and answer (``text="qa"``), its caption
    (``"caption"``) or its scene text (``"scene"``)."""
    from .world import caption

    nrows = -(-len(samples) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 4.3 * nrows), squeeze=False)
    for ax, s in zip(axes.flat, samples):
        draw_scene(s, ax, highlight=held_out_cells(s) if highlight_held_out else (), labels=False)
        if text == "qa":
            body = f"[{s.qa.category}]\n{_wrap(s.qa.question, 34)}\n→ {s.qa.answer}"
        elif text == "caption":
            body = _wrap(caption(s.world, s.scene), 34)
        else:
            body = _wrap(s.scene_text, 34)
        ax.set_xlabel(body, fontsize=8.5, family="monospace")
        ax.set_title(f"{s.split} #{s.index}", fontsize=9)
    for ax in list(axes.flat)[len(samples):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def figure_panel(controls: list, make_figure):
    """Controls above an output area that shows ``make_figure()`` (a matplotlib figure built from the controls'
    current values), redrawn whenever one of them changes. What every interactive view here is made of."""
    import ipywidgets as W
    from IPython.display import display

    out = W.Output()

    def draw(*_):
        with out:
            out.clear_output(wait=True)
            fig = make_figure()
            display(fig)
            plt.close(fig)

    for w in controls:
        w.observe(draw, "value")
    draw()
    return W.VBox([W.HBox(controls), out])


@interactive_view
def sample_picker(world, draw_sample, split: str = "train", index: int = 0, max_index: int = 999):
    """A split dropdown and an index slider above an output area: ``draw_sample(sample)`` returns the figure of
    the chosen sample, redrawn on every change. The shared control panel of the browsers below."""
    import ipywidgets as W

    split_w = W.Dropdown(options=list(SPLITS), value=split, description="split")
    index_w = W.IntSlider(value=index, min=0, max=max_index, description="index", continuous_update=False)
    return figure_panel([split_w, index_w], lambda: draw_sample(world.sample(split_w.value, index_w.value)))


@interactive_view  # the note names the view the cell calls, not the shared panel
def scene_browser(world, split: str = "train", index: int = 0, max_index: int = 999):
    """Browse samples: split and index -> :func:`scene_card` (image, caption, scene text, question, answer)."""
    return sample_picker(world, scene_card, split, index, max_index)


# ---- linear probes (notebook 02) ----------------------------------------------------------------------------
def probe_card(sample: Sample, predictions, encoders=None):
    """What each encoder's probes read from every object of one scene: one table row per (object, attribute),
    the truth beside each encoder's reading and its probability, wrong readings shaded red. ``predictions`` is
    :func:`vlmlab.probes.probe_predictions` for this scene only. The static fallback of :func:`probe_browser`."""
    p = predictions
    encoders = list(dict.fromkeys(p["encoder"])) if encoders is None else list(encoders)
    objs = p[["row", "col"]].drop_duplicates().sort_values(["row", "col"]).to_numpy()
    attrs = list(dict.fromkeys(p["attribute"]))
    cell_text, colours, row_labels = [], [], []
    for j, (r, c) in enumerate(objs):
        for a in attrs:
            d = p[(p["row"] == r) & (p["col"] == c) & (p["attribute"] == a)].set_index("encoder")
            row = [d["truth"].iloc[0]]
            col = ["white"]
            for e in encoders:
                row.append(f"{d.loc[e, 'prediction']} ({d.loc[e, 'p']:.2f})")
                col.append(RIGHT if d.loc[e, "correct"] else WRONG)
            cell_text.append(row)
            colours.append(col)
            row_labels.append(f"#{j + 1} r{r} c{c} {a}")
    fig, (ax, tx) = plt.subplots(1, 2, figsize=(4 + 1.9 * (1 + len(encoders)), max(3.2, 0.24 * len(cell_text) + 0.8)),
                                 gridspec_kw={"width_ratios": [1, 0.6 * (1 + len(encoders))]})
    draw_scene(sample, ax, highlight=held_out_cells(sample))
    w = sample.world
    for j, (r, c) in enumerate(objs):  # number the objects as the table does
        ax.text(c * w.cell + 1, r * w.cell + 1, f"#{j + 1}", color="white", fontsize=8, va="top",
                bbox={"fc": "black", "alpha": 0.55, "pad": 1, "lw": 0})
    ax.set_title(f"{sample.split} #{sample.index}", fontsize=10)
    tx.axis("off")
    table = tx.table(cellText=cell_text, cellColours=colours, rowLabels=row_labels,
                     colLabels=["truth", *encoders], loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.15)
    n_right = {e: int(p[p["encoder"] == e]["correct"].sum()) for e in encoders}
    tx.set_title("probe readings (probability); " + ", ".join(f"{e} {n_right[e]}/{len(cell_text)}" for e in encoders),
                 fontsize=9)
    fig.tight_layout()
    return fig


@interactive_view
def probe_browser(world, encoders: dict, probes: dict, block: int, split: str = "test", index: int = 0,
                  max_index: int = 999):
    """Browse scenes and what the probes at ``block`` read from each object's patch token (:func:`probe_card`)."""
    from .probes import probe_predictions

    return sample_picker(world, lambda s: probe_card(s, probe_predictions(encoders, probes, [s], block)),
                         split, index, max_index)


__all__ = ["scene_browser", "scene_card", "scene_grid", "draw_scene", "held_out_cells", "probe_browser",
           "probe_card", "sample_picker"]
