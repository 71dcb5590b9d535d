"""Tables of a run trained and evaluated on a data source other than the world."""
from __future__ import annotations

import pandas as pd

from .evaluate import SPLIT
from .sources import WORLD


def is_world(record: dict) -> bool:
    """Whether a record's run trained on the built-in world (records from before data sources all did)."""
    return record.get("data", {}).get("train", {}).get("source", WORLD) == WORLD


def eval_table(record: dict) -> pd.DataFrame:
    """Scores (%) per category on the evaluation set: the model's generated answers by normalized exact match,
    its one-word score (argmax first answer token, as the world is scored) where the record has it, and chance
    where the answer sets are known."""
    acc = record["metrics"][SPLIT]
    cols = {"model": acc}
    if record.get("first_token"):
        cols["first token"] = record["first_token"][SPLIT]
    if record.get("chance"):
        cols["chance"] = record["chance"]
    df = pd.DataFrame({k: {c: v.get(c) for c in acc} for k, v in cols.items()})
    return (df * 100).round(1)


def describe(record: dict) -> str:
    d = record["data"]
    return (f"trained on {d['train']['source']} ({d['train']['format']}, {d['train']['examples']} examples), "
            f"evaluated on {d['eval']['source']} ({d['eval']['examples']} examples)")


def generated_table(record: dict) -> pd.DataFrame:
    """The first evaluation examples with the model's generated answers, as the record keeps them."""
    rows = record.get("generation", {}).get("examples", [])
    return pd.DataFrame(rows, columns=["id", "category", "question", "answer", "generated"])
