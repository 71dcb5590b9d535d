"""Run records -> tidy pandas tables."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .world import CATEGORIES

ROWS = list(CATEGORIES) + ["semantic", "structural", "overall"]


def accuracy_table(record: dict, split: str = "test") -> pd.DataFrame:
    """Per-category accuracy (in %) of the model beside chance, the blind floor and the text-oracle ceiling."""
    cols = {"model": record["metrics"][split], "chance": record["chance"]}
    if record.get("floor"):
        cols["floor (blind)"] = record["floor"][split]
    if record.get("ceiling"):
        cols["ceiling (text oracle)"] = record["ceiling"][split]
    df = pd.DataFrame({k: {r: v.get(r) for r in ROWS} for k, v in cols.items()})
    return (df * 100).round(1)


def tidy(record: dict, run: str | None = None) -> pd.DataFrame:
    """One row per (split, category, source) accuracy, with the run's config flattened beside it."""
    cfg = record["config"]
    base = {"run": run, "arch": cfg["arch"], "seed": cfg["seed"], "budget": cfg["budget"],
            **{f"knob.{k}": v for k, v in cfg["knobs"].items()}}
    rows = []
    sources = {"model": record["metrics"]}
    for ref in ("floor", "ceiling"):
        if record.get(ref):
            sources[ref] = record[ref]
    for source, by_split in sources.items():
        for split, cats in by_split.items():
            if split == "chance":
                continue
            for cat, acc in cats.items():
                rows.append({**base, "source": source, "split": split, "metric": f"accuracy.{cat}", "value": acc})
    for cat, acc in record["chance"].items():
        rows.append({**base, "source": "chance", "split": "test", "metric": f"accuracy.{cat}", "value": acc})
    for key in ("train_seconds", "wall_seconds", "samples_per_s"):
        rows.append({**base, "source": "model", "split": None, "metric": key, "value": record.get(key)})
    for key, v in record["params"].items():
        rows.append({**base, "source": "model", "split": None, "metric": f"params.{key}", "value": v})
    return pd.DataFrame(rows)


def load_records(root: str | Path) -> list[tuple[str, dict]]:
    """Every ``record.json`` under root (recursively), as (run directory, record)."""
    out = []
    for p in sorted(Path(root).rglob("record.json")):
        out.append((str(p.parent), json.loads(p.read_text())))
    return out


def collect(root: str | Path) -> pd.DataFrame:
    frames = [tidy(rec, run) for run, rec in load_records(root)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
