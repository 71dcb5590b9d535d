"""Ship a budget's pretrained backbones with the repository: copy its three cache entries into data/backbones/.

    python tools/ship_backbones.py [--budget default]

For maintainers, after a change to pretraining (its code, CACHE_VERSION, the budget's backbone fields or the world
config): build the new backbones (`vlmlab pretrain --budget default`), run this, re-measure the tables, commit
data/backbones/ with them. Entries of any other key are removed from data/backbones/, so exactly the current code's
ship; tests/test_shipped.py fails while they do not match the code. data/backbones/README.md says what ships.
"""
from __future__ import annotations

import argparse

from vlmlab.backbones.store import ship_backbones
from vlmlab.budgets import get_budget


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", default="default")
    a = p.parse_args(argv)
    for path in ship_backbones(get_budget(a.budget)):
        print(f"shipped: {path}")


if __name__ == "__main__":
    main()
