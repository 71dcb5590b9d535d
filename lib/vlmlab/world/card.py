"""Measurements for the dataset card (data/README.md): answer balance per category and split.

    python -m vlmlab.world.card [--n 4000]
"""
from __future__ import annotations

import argparse
import math
from collections import Counter

import pandas as pd

from .dataset import World
from .questions import CATEGORIES


def answer_balance(world: World, split: str = "train", n_per_category: int = 500) -> pd.DataFrame:
    """Per category: answer-set size, chance (mean 1/|answers|), the most frequent answer's share, and the
    normalised entropy of the answer distribution (1 = perfectly uniform)."""
    samples = world.samples(split, 0, n_per_category * len(CATEGORIES))
    rows = []
    for cat in CATEGORIES:
        ss = [s for s in samples if s.qa.category == cat]
        counts = Counter(s.qa.answer for s in ss)
        n_ans = len(set().union(*[set(s.qa.answers) for s in ss]))
        p = [c / len(ss) for c in counts.values()]
        ent = -sum(q * math.log(q) for q in p) / math.log(n_ans) if n_ans > 1 else 1.0
        rows.append({"category": cat, "answers": n_ans, "chance %": 100 * sum(1 / len(s.qa.answers) for s in ss) / len(ss),
                     "top answer": counts.most_common(1)[0][0], "top share %": 100 * max(p),
                     "entropy / max": ent})
    return pd.DataFrame(rows).set_index("category").round(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500, help="questions per category")
    a = ap.parse_args()
    w = World(seed=0)
    for split in ("train", "compositional"):
        print(f"\n{split}:")
        print(answer_balance(w, split, a.n).to_string())


if __name__ == "__main__":
    main()
