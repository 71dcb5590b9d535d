"""Linear probes of the budget's pretrained ViTs, as notebook 02 fits them, to a tidy CSV for the docs.

    python tools/probe_table.py [--budget default] [--seed 0] [--output docs/results/probes-default.csv]

One row per encoder (CL, MIM, and the raw-pixel baseline) x block x attribute (colour, shape, size, texture, row,
column) x split (test, compositional): held-out accuracy and the majority class's share, in %.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vlmlab.backbones.store import load_encoders
from vlmlab.budgets import get_budget
from vlmlab.device import seed_everything
from vlmlab.probes import ATTRIBUTES, POSITION, default_scenes, fit_probes
from vlmlab.world import World, WorldConfig

REPO = Path(__file__).resolve().parents[1]


def probe_frame(budget: str = "default", seed: int = 0):
    b = get_budget(budget)
    seed_everything(seed)
    world = World(WorldConfig(), seed=seed)
    enc = load_encoders(world.config, b)
    train_scenes = default_scenes(b)[0]
    table, _ = fit_probes({"CL": enc["cl"], "MIM": enc["mim"]}, world, None, train_scenes=train_scenes,
                          test_scenes=max(1, train_scenes // 2), attributes=ATTRIBUTES + POSITION,
                          splits=("test", "compositional"))
    keep = ["encoder", "block", "depth", "attribute", "split", "accuracy", "chance", "n_train", "n_test"]
    return table[keep].assign(budget=budget, seed=seed,
                              backbone_cl=Path(enc["paths"]["cl"]).name, backbone_mim=Path(enc["paths"]["mim"]).name)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="default")
    ap.add_argument("--seed", type=int, default=0, help="world seed of the probes' scenes (notebook 02's default: 0)")
    ap.add_argument("--output", help="CSV path (default: docs/results/probes-<budget>.csv)")
    a = ap.parse_args(argv)
    out = Path(a.output or REPO / "docs" / "results" / f"probes-{a.budget}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    probe_frame(a.budget, a.seed).round(2).to_csv(out, index=False)
    print(f"written {out}")


if __name__ == "__main__":
    main()
