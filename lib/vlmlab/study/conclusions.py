"""The notebooks' conclusions as sentences computed from an accuracy frame."""
from __future__ import annotations

import math

import pandas as pd

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


def compare(frame: pd.DataFrame, by: str, a, b, *, category: str = "overall", split: str = "test",
            name=str) -> str:
    """"A scores 62.1 ± 1.3 % overall vs 58.0 ± 2.0 % for B (+4.1 points; the difference is larger than the seed
    spread)": mean ± sd over seeds; the difference counts as larger than the seed spread when it exceeds the
    combined sd, sqrt(sd_a² + sd_b²)."""
    ma, sa, na = _get(frame, by, a, category, split)
    mb, sb, nb = _get(frame, by, b, category, split)
    diff = ma - mb
    spread = math.hypot(sa, sb)
    if spread != spread:
        verdict = "one seed only, so no seed spread to compare it with"
    elif round(abs(diff), 1) == round(spread, 1):  # as printed, equal: say so rather than pick a side
        verdict = f"about the size of the seed spread of {spread:.1f}"
    elif abs(diff) > spread:
        verdict = f"larger than the seed spread of {spread:.1f}"
    else:
        verdict = f"within the seed spread of {spread:.1f}"
    return (f"{name(a)} scores {mean_pm_sd(ma, sa)} % {_where(category, split)} vs {mean_pm_sd(mb, sb)} % for {name(b)} "
            f"({diff:+.1f} points over {min(na, nb)} seeds; the difference is {verdict})")


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
                  name=str) -> str:
    """The categories where A beats B, and where B beats A, by more than the seed spread (combined sd)."""
    if _get(frame, by, a, categories[0], split)[2] < 2 or _get(frame, by, b, categories[0], split)[2] < 2:
        return f"{name(a)} vs {name(b)} per category: one seed only, so no difference can be told from the noise."
    wins, losses, ties = [], [], []
    for c in categories:
        ma, sa, _ = _get(frame, by, a, c, split)
        mb, sb, _ = _get(frame, by, b, c, split)
        spread = math.hypot(sa, sb)
        d = ma - mb
        if spread == spread and abs(d) > spread:
            (wins if d > 0 else losses).append(f"{c} ({abs(d):+.1f})")  # the winner's margin
        else:
            ties.append(c)
    s = f"Per category, {name(a)} beats {name(b)} by more than the seed spread in "
    s += (", ".join(wins) if wins else "no category")
    s += f"; {name(b)} beats {name(a)} in " + (", ".join(losses) if losses else "no category")
    s += f"; {len(ties)} of {len(categories)} categories are within the spread."
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
