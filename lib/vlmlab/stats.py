"""Paired statistics over seeds: a seed fixes the world, the initialisation and the test questions, so two
configurations run on the same seeds are compared by their per-seed differences, not by two independent spreads.

    d_s = acc_A(seed s) - acc_B(seed s),   mean d ± t_{0.975, n-1} · sd(d) / sqrt(n)   (a 95 % interval)

A per-category claim is one test per category: their p-values are Holm-corrected together (Holm, 1979), so the
chance of one false claim across the categories stays at 5 %.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats as _st


@dataclass(frozen=True)
class Paired:
    """A - B over the seeds both have: mean difference (points), its 95 % interval, the two-sided paired-t p."""

    mean: float
    lo: float
    hi: float
    n: int
    p: float

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.1f} (one seed: no interval)"
        return f"{self.mean:+.1f} [{self.lo:+.1f}, {self.hi:+.1f}]"


def paired(a: pd.Series, b: pd.Series, level: float = 0.95) -> Paired:
    """Paired difference of two per-seed series (index = seed); only the seeds both have count."""
    both = a.index.intersection(b.index)
    d = (a.loc[both] - b.loc[both]).astype(float)
    n = len(d)
    if n == 0:
        raise ValueError("no seed in common: a paired comparison needs runs on the same seeds")
    m = float(d.mean())
    if n < 2:
        return Paired(m, float("nan"), float("nan"), n, float("nan"))
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return Paired(m, m, m, n, 0.0 if m else 1.0)
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * _st.t.sf(abs(m) / se, n - 1))
    return Paired(m, m - half, m + half, n, p)


def holm(pvalues: dict) -> dict:
    """Holm's step-down adjusted p-values (same keys); NaN p-values stay NaN and do not count."""
    valid = sorted((p, k) for k, p in pvalues.items() if p == p)
    m, out, running = len(valid), {k: float("nan") for k in pvalues}, 0.0
    for i, (p, k) in enumerate(valid):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def per_seed(frame: pd.DataFrame, by: str, value, category: str, split: str = "test",
             source: str = "model") -> pd.Series:
    """Accuracy (%) per seed of one configuration in an accuracy frame (``vlmlab.study.accuracy_frame``)."""
    d = frame[(frame[by] == value) & (frame["category"] == category) & (frame["split"] == split)
              & (frame["source"] == source)]
    return d.groupby("seed")["accuracy"].mean()


def reading(r: Paired, p: float, min_seeds: int) -> str:
    """What a paired difference shows at level 0.05 with ``p`` (adjusted or not): "ahead", "behind", "no
    difference shown", or "too few seeds" below ``min_seeds``."""
    if r.n < min_seeds:
        return "too few seeds"
    return "no difference shown" if not p < 0.05 else ("ahead" if r.mean > 0 else "behind")


def paired_holm(pairs: dict) -> tuple[dict, dict]:
    """``pairs``: key -> (per-seed series A, per-seed series B). Each key's paired A - B (:func:`paired`) and its
    p-value Holm-adjusted across the keys: one family of comparisons."""
    rows = {k: paired(a, b) for k, (a, b) in pairs.items()}
    return rows, holm({k: r.p for k, r in rows.items()})


def paired_table(frame: pd.DataFrame, by: str, a, b, categories, split: str = "test") -> pd.DataFrame:
    """A - B per category: mean, 95 % interval, n seeds, p, Holm-adjusted p across the listed categories, and
    whether the difference holds after the correction."""
    rows, adj = paired_holm({c: (per_seed(frame, by, a, c, split), per_seed(frame, by, b, c, split))
                             for c in categories})
    return pd.DataFrame({c: {"A - B": r.mean, "95% lo": r.lo, "95% hi": r.hi, "seeds": r.n, "p": r.p,
                             "p (Holm)": adj[c], "holds": bool(adj[c] < 0.05)} for c, r in rows.items()}).T


__all__ = ["Paired", "paired", "holm", "paired_holm", "reading", "per_seed", "paired_table"]
