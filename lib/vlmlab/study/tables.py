"""Statistics over seeds and the tables the notebooks print (mean ± std per configuration)."""
from __future__ import annotations

import pandas as pd

from ..results import ROWS
from ..world import CATEGORIES
from .frames import accuracy_frame, cost_frame
from .store import Study


def stats(frame: pd.DataFrame, by: str = "config", split: str = "test", source: str = "model") -> pd.DataFrame:
    """Mean, sd (over seeds; ddof=1) and number of seeds of the accuracy, per value of ``by`` and category."""
    d = frame[(frame["split"] == split) & (frame["source"] == source)]
    g = d.groupby([by, "category"], observed=True)["accuracy"]
    out = g.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"), n="count")
    return out.reset_index()


def reference(frame: pd.DataFrame, source: str, split: str = "test") -> pd.Series:
    """Mean over seeds of the blind floor / text-oracle ceiling / chance per category (one value per seed: the
    references depend on the world seed and the budget, never on the architecture)."""
    d = frame[(frame["split"] == (split if source != "chance" else "test")) & (frame["source"] == source)]
    per_seed = d.groupby(["seed", "category"])["accuracy"].first()
    return per_seed.groupby("category").mean()


def paired_vs(frame: pd.DataFrame, by: str, baseline, *, category: str = "overall", split: str = "test",
              min_seeds: int = 5) -> pd.DataFrame:
    """Each configuration minus ``baseline`` in ``category``, paired over the seeds both ran: the difference in
    points, its 95 % interval, seeds, p and Holm-adjusted p across the configurations, and what it shows ("ahead",
    "behind", "no difference shown", or "too few seeds" below ``min_seeds``)."""
    from ..stats import paired_holm, per_seed, reading

    order = list(frame[by].cat.categories) if hasattr(frame[by], "cat") else list(dict.fromkeys(frame[by]))
    base = per_seed(frame, by, baseline, category, split)
    rows, adj = paired_holm({v: (per_seed(frame, by, v, category, split), base) for v in order if v != baseline})
    return pd.DataFrame({str(k): {"difference": r.mean, "95% lo": r.lo, "95% hi": r.hi, "seeds": r.n, "p": r.p,
                                  "p (Holm)": adj[k], "reads": reading(r, adj[k], min_seeds)}
                         for k, r in rows.items()}).T.rename_axis(
        f"{by} - {baseline}")


def mean_pm_sd(mean: float, sd: float) -> str:
    return f"{mean:.1f} ± {sd:.1f}" if sd == sd else f"{mean:.1f}"


def summary_table(frame: pd.DataFrame, by: str = "config", split: str = "test",
                  categories=ROWS) -> pd.DataFrame:
    """Mean ± sd over seeds (accuracy %) per configuration (rows) and category (columns), with the floor and the
    ceiling (mean ± sd over seeds) and chance as extra rows, and the number of seeds per configuration."""
    st = stats(frame, by, split)
    cats = [c for c in categories if c in set(st["category"])]
    rows = {}
    order = list(frame[by].cat.categories) if hasattr(frame[by], "cat") else list(dict.fromkeys(frame[by]))
    for v in order:
        s = st[st[by] == v].set_index("category")
        if s.empty:
            continue
        rows[str(v)] = {**{c: mean_pm_sd(s.loc[c, "mean"], s.loc[c, "sd"]) for c in cats}, "seeds": int(s["n"].max())}
    for source, name in (("floor", "floor (blind)"), ("ceiling", "ceiling (text oracle)"), ("chance", "chance")):
        r = stats(frame.drop_duplicates(["seed", "split", "category", "source"]), "source",
                  split if source != "chance" else "test", source)  # chance depends on the answer sets only
        if r.empty:
            continue
        r = r.set_index("category")
        rows[name] = {**{c: mean_pm_sd(r.loc[c, "mean"], r.loc[c, "sd"] if source != "chance" else float("nan"))
                         for c in cats if c in r.index}, "seeds": int(r["n"].max())}
    return pd.DataFrame(rows).T.rename_axis(by)


def wording_summary(study: Study, by: str = "config", split: str = "test") -> pd.DataFrame:
    """:func:`summary_table` per wording of the categories asked two ways (rows "<category>: <wording>" in the
    order of the categories; columns the configurations, floor, ceiling and chance): a category's mean can hide
    opposite gaps between its wordings (docs/lab-notes/oracle-wordings.md). The last row counts the seeds per column: a
    record written before vlmlab kept wordings contributes none. Empty when no record holds wordings."""
    words = accuracy_frame(study, per="wording")
    if words.empty:
        return pd.DataFrame()
    order = sorted(set(words["category"]), key=lambda c: (CATEGORIES.index(c.split(":")[0]), c))
    return summary_table(words, by, split, categories=order).T.rename_axis("wording")


def cost_table(study: Study) -> pd.DataFrame:
    """Per configuration: parameter counts (total / trainable), train seconds and samples/s (mean ± sd over
    seeds), seeds."""
    c = cost_frame(study)
    rows = {}
    for case in study.cases:
        d = c[c["config"] == case.name]
        if d.empty:
            continue
        sd = (lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"))
        rows[case.name] = {"params total": f"{int(d['params_total'].iloc[0]):,}",
                           "params trainable": f"{int(d['params_trainable'].iloc[0]):,}",
                           "train s": mean_pm_sd(d["train_seconds"].mean(), sd(d["train_seconds"])),
                           "samples/s": mean_pm_sd(d["samples_per_s"].mean(), sd(d["samples_per_s"])),
                           "seeds": len(d)}
    return pd.DataFrame(rows).T.rename_axis("config")


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame (index = first column) as a GitHub Markdown table."""
    head = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in df.iterrows():
        lines.append("| " + " | ".join([str(i)] + ["" if (isinstance(v, float) and v != v) else str(v)
                                                    for v in r]) + " |")
    return "\n".join(lines)
