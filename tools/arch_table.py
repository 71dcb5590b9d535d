"""Train every architecture at a budget over several seeds and write the comparison table (docs/results.md).

    python tools/arch_table.py --budget default --seeds 0 1 2 [--archs llava ovis ...]

Records go to papermill_runs/table/<arch>-s<seed>-<budget>/record.json and are reused when present, so the
table can be rebuilt (or extended) without retraining.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from vlmlab.archs import ARCHS
from vlmlab.results import ROWS
from vlmlab.runs import RunConfig, run

ROOT = Path(__file__).resolve().parents[1]


def records(archs, seeds, budget, out: Path, progress=False) -> dict:
    recs = {}
    for arch in archs:
        for seed in seeds:
            path = out / f"{arch}-s{seed}-{budget}" / "record.json"
            if not path.is_file():
                run(RunConfig.from_params(arch=arch, seed=seed, budget=budget), progress=progress,
                    output_dir=path.parent)
                print(f"done {arch} seed {seed}", flush=True)
            recs[(arch, seed)] = json.loads(path.read_text())
    return recs


def mean_std(values) -> str:
    s = pd.Series(values) * 100
    return f"{s.mean():.1f} ± {s.std(ddof=1):.1f}" if len(s) > 1 else f"{s.mean():.1f}"


def table(recs: dict, archs, split: str = "test") -> str:
    seeds = sorted({s for _, s in recs})
    cols = {}
    for arch in archs:
        cols[arch] = [mean_std([recs[(arch, s)]["metrics"][split][r] for s in seeds]) for r in ROWS]
    any_rec = [recs[(archs[0], s)] for s in seeds]
    cols["floor (blind)"] = [mean_std([r["floor"][split][row] for r in any_rec]) for row in ROWS]
    cols["ceiling (oracle)"] = [mean_std([r["ceiling"][split][row] for r in any_rec]) for row in ROWS]
    cols["chance"] = [f"{100 * any_rec[0]['chance'][row]:.1f}" for row in ROWS]
    df = pd.DataFrame(cols, index=ROWS)
    lines = ["| category | " + " | ".join(df.columns) + " |", "|---" * (len(df.columns) + 1) + "|"]
    lines += [f"| {i} | " + " | ".join(df.loc[i]) + " |" for i in df.index]
    return "\n".join(lines)


def cost_table(recs: dict, archs) -> str:
    seeds = sorted({s for _, s in recs})
    lines = ["| arch | params total | params trainable | train s (mean) | samples/s (mean) |", "|---|---|---|---|---|"]
    for a in archs:
        rs = [recs[(a, s)] for s in seeds]
        lines.append(f"| {a} | {rs[0]['params']['total']:,} | {rs[0]['params']['trainable']:,} | "
                     f"{sum(r['train_seconds'] for r in rs) / len(rs):.0f} | "
                     f"{sum(r['samples_per_s'] for r in rs) / len(rs):.0f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="default")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--archs", nargs="+", default=["llava"] + sorted(a for a in ARCHS if a != "llava"))
    ap.add_argument("--out", default=str(ROOT / "papermill_runs" / "table"))
    a = ap.parse_args()
    recs = records(a.archs, a.seeds, a.budget, Path(a.out))
    print(f"accuracy (%) per category, test split, budget {a.budget}, mean ± std over seeds {a.seeds}\n")
    print(table(recs, a.archs))
    print(f"\ncompositional split\n")
    print(table(recs, a.archs, "compositional"))
    print("\ncost\n")
    print(cost_table(recs, a.archs))


if __name__ == "__main__":
    main()
