"""The notebooks' conclusions as sentences computed from an accuracy frame."""
from __future__ import annotations

import pandas as pd

from ..stats import Paired, paired, paired_table, per_seed
from ..world import CATEGORIES
from .tables import mean_pm_sd, reference, stats


def _get(frame: pd.DataFrame, by: str, value, category: str, split: str) -> tuple[float, float, int]:
    d = frame[(frame[by] == value) & (frame["category"] == category) & (frame["split"] == split)
              & (frame["source"] == "model")]["accuracy"]
    if d.empty:
        raise ValueError(f"no {split} records for {by}={value!r}, category {category!r}")
    return float(d.mean()), (float(d.std(ddof=1)) if len(d) > 1 else float("nan")), int(len(d))


def _where(category: str, split: str) -> str:
    return (f"{category}" if category in ("overall", "semantic", "structural") else f"on {category}") + \
        ("" if split == "test" else f" ({split} split)")


MIN_SEEDS = 5  # seeds per side before a difference is taught (the workbook's rule for what it concludes)


def _paired(frame: pd.DataFrame, by: str, a, b, category: str, split: str) -> Paired:
    return paired(per_seed(frame, by, a, category, split), per_seed(frame, by, b, category, split))


def _reading(d: Paired, min_seeds: int) -> str:
    """What a paired difference shows, in words: its 95 % interval against 0 and the number of seeds."""
    if d.n < 2:
        return "one seed only, so no interval"
    few = f"; {d.n} seeds are fewer than the {min_seeds} a difference needs before it is taught" \
        if d.n < min_seeds else ""
    if d.excludes_zero:
        return "the interval excludes 0" + few
    return "the interval includes 0: no difference shown" + few


def compare(frame: pd.DataFrame, by: str, a, b, *, category: str = "overall", split: str = "test",
            name=str, min_seeds: int = MIN_SEEDS) -> str:
    """"A scores 62.1 ± 1.3 % overall vs 58.0 ± 2.0 % for B: paired difference +4.1 [+1.2, +7.0] points over 5
    seeds (95 % interval); the interval excludes 0": mean ± sd over seeds, and the difference of the seeds both
    ran (a seed fixes the world, the initialisation and the test questions: :mod:`vlmlab.stats`)."""
    ma, sa, _ = _get(frame, by, a, category, split)
    mb, sb, _ = _get(frame, by, b, category, split)
    d = _paired(frame, by, a, b, category, split)
    interval = f" {d}" if d.n < 2 else f" {d} points over {d.n} seeds (95 % interval)"
    return (f"{name(a)} scores {mean_pm_sd(ma, sa)} % {_where(category, split)} vs {mean_pm_sd(mb, sb)} % for "
            f"{name(b)}: paired difference{interval}; {_reading(d, min_seeds)}")


def ranking(frame: pd.DataFrame, by: str = "config", *, category: str = "overall", split: str = "test",
            name=str) -> str:
    """The configurations from best to worst (mean ± sd), beside the floor and the ceiling."""
    st = stats(frame, by, split)
    st = st[st["category"] == category].sort_values("mean", ascending=False)
    if st.empty:
        raise ValueError(f"no {split} records for category {category!r}")
    parts = [f"{name(r[by])} {mean_pm_sd(r['mean'], r['sd'])} %" for _, r in st.iterrows()]
    lo, hi = reference(frame, "floor", split), reference(frame, "ceiling", split)
    refs = ""
    if category in lo.index and category in hi.index:
        refs = f" (blind floor {lo[category]:.1f} %, text-oracle ceiling {hi[category]:.1f} %)"
    return f"Ranking {_where(category, split)}, best first: " + "; ".join(parts) + refs


def gap_closed(frame: pd.DataFrame, by: str = "config", *, category: str = "overall", split: str = "test",
               name=str) -> str:
    """Which share of the floor-to-ceiling gap each configuration closes (mean over seeds)."""
    st = stats(frame, by, split)
    st = st[st["category"] == category]
    lo, hi = reference(frame, "floor", split), reference(frame, "ceiling", split)
    if category not in lo.index or category not in hi.index:
        return "The records hold no floor or ceiling, so the share of the gap closed is unknown."
    gap = hi[category] - lo[category]
    if gap <= 0:
        return (f"The ceiling ({hi[category]:.1f} %) is not above the floor ({lo[category]:.1f} %) at this budget, "
                "so the share of the gap closed is undefined.")
    parts = [f"{name(r[by])} {100 * (r['mean'] - lo[category]) / gap:.0f} %" for _, r in st.iterrows()]
    return f"Share of the floor-to-ceiling gap closed {_where(category, split)}: " + "; ".join(parts)


def category_wins(frame: pd.DataFrame, by: str, a, b, *, split: str = "test", categories=CATEGORIES,
                  name=str, min_seeds: int = MIN_SEEDS) -> str:
    """The categories where A is ahead of B, and where B is ahead of A: paired differences over seeds, each
    category's p-value Holm-corrected across the categories (so one false claim among them stays at 5 %)."""
    t = paired_table(frame, by, a, b, list(categories), split)
    n = int(t["seeds"].min())
    if n < 2:
        return f"{name(a)} vs {name(b)} per category: one seed only, so no difference can be told from the noise."
    rows = {c: Paired(r["A - B"], r["95% lo"], r["95% hi"], int(r["seeds"]), r["p"]) for c, r in t.iterrows()}
    wins = [f"{c} ({rows[c]})" for c in categories if t.loc[c, "holds"] and rows[c].mean > 0]
    losses = [f"{c} ({rows[c]})" for c in categories if t.loc[c, "holds"] and rows[c].mean < 0]
    s = (f"Per category (paired over {n} seeds, Holm-corrected across {len(categories)} categories), "
         f"{name(a)} is ahead of {name(b)} in " + (", ".join(wins) if wins else "no category"))
    s += f"; {name(b)} is ahead in " + (", ".join(losses) if losses else "no category")
    s += f"; {len(categories) - len(wins) - len(losses)} of {len(categories)} categories show no difference"
    if n < min_seeds:
        s += f" ({n} seeds are fewer than the {min_seeds} a difference needs before it is taught)"
    return s


def diagnostic_summary(dframe: pd.DataFrame, key: str, by: str = "config", *, what: str | None = None,
                       digits: int = 2) -> str:
    """"<what>: A 3.21 ± 0.10, B ...": a diagnostic's mean ± sd over seeds per configuration, in the frame's
    order (a :func:`diagnostics_frame`). Empty string when no run recorded it."""
    d = dframe[dframe["diagnostic"] == key]
    if d.empty:
        return ""
    parts = []
    for v, g in d.groupby(by, sort=False):
        sd = g["value"].std(ddof=1) if len(g) > 1 else float("nan")
        parts.append(f"{v} {g['value'].mean():.{digits}f}" + (f" ± {sd:.{digits}f}" if sd == sd else ""))
    return f"{what or key}: " + "; ".join(parts)


def conclusions(frame: pd.DataFrame, by: str, pairs, *, name=str, categories=CATEGORIES) -> list[str]:
    """The notebooks' standard conclusions, as Markdown bullet lines: the overall ranking and the share of the
    gap closed, then for each (a, b) pair the overall comparison on the test and compositional splits and the
    per-category wins."""
    def item(s: str) -> str:
        return f"- {s}" if s.endswith(".") else f"- {s}."

    lines = [item(ranking(frame, by, name=name)), item(gap_closed(frame, by, name=name))]
    splits = set(frame["split"].dropna())
    for a, b in pairs:
        lines.append(item(compare(frame, by, a, b, name=name)))
        if "compositional" in splits:
            lines.append(item(compare(frame, by, a, b, split="compositional", name=name)))
        lines.append(item(category_wins(frame, by, a, b, name=name, categories=categories)))
    return lines
