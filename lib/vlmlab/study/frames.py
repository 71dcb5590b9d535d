"""A study's records as tidy frames: accuracy per run, split, category (or wording) and source, cost, diagnostics."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..results import tidy
from .store import Case, Study, _current_record


SOURCES = ("model", "floor", "ceiling", "chance")

def records(study: Study) -> list[tuple[Case, dict, Path, dict]]:
    """(case, params, run directory, record) of every complete, current run (see :meth:`Study.stale`), in the
    study's order."""
    out = []
    for case, p, rd in study.runs():
        rec = _current_record(rd, study.budget)
        if rec is not None:
            out.append((case, p, rd, rec))
    return out


def label_columns(study: Study) -> list[str]:
    cols = []
    for c in study.cases:
        cols += [k for k in c.labels if k not in cols]
    return cols


GROUPINGS = ("category", "wording")


def accuracy_rows(t: pd.DataFrame, per: str = "category") -> pd.DataFrame:
    """The accuracy rows of a tidy frame (:func:`vlmlab.results.tidy`, or its CSV), with ``category`` (or
    "<category>: <wording>" when ``per="wording"``) and ``accuracy`` in %."""
    if per not in GROUPINGS:
        raise ValueError(f"per={per!r}; allowed values: {GROUPINGS}")
    prefix = "accuracy." if per == "category" else "wording."
    t = t[t["metric"].str.startswith(prefix)].copy()
    t["category"] = t["metric"].str.removeprefix(prefix)
    if per == "wording":  # "comparison.is the <shape> ..." -> "comparison: is the <shape> ..."
        t["category"] = t["category"].str.replace(".", ": ", n=1, regex=False)
    t["accuracy"] = 100 * t["value"].astype(float)
    return t


def accuracy_frame(study: Study, per: str = "category") -> pd.DataFrame:
    """One row per (run, split, category, source) with ``accuracy`` in %: columns run, arch, seed, budget,
    config (the case's name), the cases' label columns, split, category, source (model / floor / ceiling /
    chance). Built with :func:`vlmlab.results.tidy` from every complete record of the study.

    ``per="wording"``: one row per wording of the categories asked two ways instead, its ``category`` column
    reading "<category>: <wording>" (records written before vlmlab recorded wordings contribute no rows)."""
    frames = []
    for case, _, rd, rec in records(study):
        t = accuracy_rows(tidy(rec, rd.name), per)
        t["config"] = case.name
        for k, v in case.labels.items():
            t[k] = v
        frames.append(t)
    if not frames:
        return pd.DataFrame(columns=["run", "arch", "seed", "budget", "config", "split", "category", "source",
                                     "accuracy", *label_columns(study)])
    df = pd.concat(frames, ignore_index=True)
    keep = ["run", "arch", "seed", "budget", "config", *[c for c in label_columns(study) if c != "arch"],
            "split", "category", "source", "accuracy"]
    df = df[keep]
    df["config"] = pd.Categorical(df["config"], [c.name for c in study.cases], ordered=True)
    return df


def cost_frame(study: Study) -> pd.DataFrame:
    """One row per run: parameter counts (total / trainable), train seconds, samples/s, backbones used."""
    rows = []
    for case, p, rd, rec in records(study):
        rows.append({"run": rd.name, "config": case.name, "arch": case.arch, "seed": p["seed"],
                     "params_total": rec["params"].get("total"), "params_trainable": rec["params"].get("trainable"),
                     "train_seconds": rec.get("train_seconds"), "samples_per_s": rec.get("samples_per_s"),
                     "backbones": json.dumps(rec.get("backbones"), sort_keys=True)})
    return pd.DataFrame(rows)


def diagnostics_frame(study: Study, keys=None) -> pd.DataFrame:
    """One row per run and scalar diagnostic (``record["diagnostics"]``, e.g. ``ovis_effective_entries``,
    ``answer_to_image_attention_mass``): run, config, arch, seed, the label columns, diagnostic, value."""
    rows = []
    for case, p, rd, rec in records(study):
        for k, v in (rec.get("diagnostics") or {}).items():
            if (keys is None or k in keys) and isinstance(v, (int, float)) and not isinstance(v, bool):
                rows.append({"run": rd.name, "config": case.name, "arch": case.arch, "seed": p["seed"],
                             **case.labels, "diagnostic": k, "value": float(v)})
    cols = ["run", "config", "arch", "seed", *[c for c in label_columns(study) if c != "arch"], "diagnostic",
            "value"]
    return pd.DataFrame(rows, columns=cols)


def mixed_backbones(study: Study) -> str | None:
    """A warning when the study's records were trained on different backbones of one kind (e.g. the cache was
    rebuilt between runs): their numbers are then not comparable. None when all agree. A record lists only the
    backbones its model reads (LLaVA: LM + CL; X-Former also the MIM encoder), so kinds are compared one by one.
    Builds are told apart by their content (``backbone_ids``), so a rebuild under the same cache path counts and a
    moved cache does not; if any record predates ids, all are compared by path."""
    recs = [rec for *_, rec in records(study)]
    field = "backbone_ids" if all("backbone_ids" in rec for rec in recs) else "backbones"
    seen: dict[str, set] = {}
    for rec in recs:
        for kind, path in (rec.get(field) or {}).items():
            seen.setdefault(kind, set()).add(str(path))
    mixed = sorted(k for k, v in seen.items() if len(v) > 1)
    if not mixed:
        return None
    counts = ", ".join(f"{len(seen[k])} {k.upper()} backbones" for k in mixed)
    return (f"warning: the records of study {study.name!r} were trained on {counts} (the backbone cache changed "
            "between runs); delete the stale run directories to retrain them")
