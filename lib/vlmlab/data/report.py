"""Tables of a run trained and evaluated on a data source other than the world."""
from __future__ import annotations

import pandas as pd

from .evaluate import SPLIT
from .sources import WORLD


def is_world(record: dict) -> bool:
    """Whether a record's run trained on the built-in world (records from before data sources all did)."""
    return record.get("data", {}).get("train", {}).get("source", WORLD) == WORLD


def eval_table(record: dict) -> pd.DataFrame:
    """Accuracy (%) per category on the evaluation set, beside chance where the answer sets are known."""
    acc = record["metrics"][SPLIT]
    cols = {"model": acc}
    if record.get("chance"):
        cols["chance"] = record["chance"]
    df = pd.DataFrame({k: {c: v.get(c) for c in acc} for k, v in cols.items()})
    return (df * 100).round(1)


def describe(record: dict) -> str:
    d = record["data"]
    return (f"trained on {d['train']['source']} ({d['train']['format']}, {d['train']['examples']} examples), "
            f"evaluated on {d['eval']['source']} ({d['eval']['examples']} examples)")
