"""The wall time of a whole study, before and after issue 29's levers, back to back on one machine.

    python benchmarks/study_wall.py [--budget smoke] [--archs llava,ovis,...] [--seeds 5] [--rounds 1]
                                    [--output FILE]

The study is the comparison: every design in ``--archs`` with its default knobs, crossed with seeds
0..``--seeds``-1 (6 x 5 = 30 runs by default). "before" runs it as studies ran before: one papermill process and
kernel per run, two at a time, one thread each, eager steps (``VLMLAB_COMPILE=0``). "after" runs it with two warm
in-process workers, one thread each, the steps compiled where the budget compiles them. Each side trains every
run afresh into a store of its own; the floor and the oracle of each seed are computed before the rounds, so both
sides look them up. Rounds alternate which side goes first. Writes benchmarks/study-wall-<budget>.json (or FILE).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
SIDES = {"before": {"executor": "papermill", "compile": "0"}, "after": {"executor": "inprocess", "compile": None}}


def run_side(side: str, archs: list, seeds: list, budget: str, store: Path) -> dict:
    from vlmlab.study import comparison_study, run_study

    how = SIDES[side]
    forced = {} if how["compile"] is None else {"VLMLAB_COMPILE": how["compile"]}
    with mock.patch.dict(os.environ, forced):  # papermill's kernels inherit it; restored afterwards
        compile_env = os.environ.get("VLMLAB_COMPILE", "budget")  # "budget": Budget.vlm_compile decides
        study = comparison_study(archs, seeds, budget, store)
        t = time.perf_counter()
        result = run_study(study, executor=how["executor"], workers=2, threads=1, progress=False)
        wall = time.perf_counter() - t
    if result.failed or len(result.done) != len(study.runs()):
        raise RuntimeError(f"{side}: {len(result.done)} of {len(study.runs())} runs done, "
                           f"{len(result.failed)} failed: {[o.error for o in result.failed][:3]}")
    return {"executor": how["executor"], "compile": compile_env, "workers": 2, "threads": 1,
            "runs": len(result.done), "wall_s": wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--archs", default=None, help="comma-separated designs (default: all six)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sides", default="before,after",
                    help="which sides to time, comma-separated (one side alone: e.g. again once inductor's on-disk "
                         "cache holds the graphs the first round compiled)")
    ap.add_argument("--output", type=Path, default=None, help="default: benchmarks/study-wall-<budget>.json")
    a = ap.parse_args(argv)
    from vlmlab.archs import ARCHS
    from vlmlab.budgets import get_budget

    archs = [x.strip() for x in (a.archs or ",".join(ARCHS)).split(",") if x.strip()]
    unknown = [x for x in archs if x not in ARCHS]
    if unknown:
        ap.error(f"--archs: unknown {unknown}; allowed values: {', '.join(ARCHS)}")
    if a.seeds < 1 or a.rounds < 1:
        ap.error("--seeds and --rounds must be at least 1")
    sides = [x.strip() for x in a.sides.split(",") if x.strip()]
    if not sides or len(set(sides)) != len(sides) or not set(sides) <= set(SIDES):
        ap.error(f"--sides: got {a.sides!r}; allowed: 'before', 'after' or both, comma-separated, each once")
    budget = get_budget(a.budget)
    from vlmlab.archs import backbones_needed
    from vlmlab.backbones import load_backbones
    from vlmlab.runs import RunConfig
    from vlmlab.score import references_from_cache

    kinds = sorted({k for arch in archs for k in backbones_needed(arch)})
    load_backbones(budget=budget, kinds=kinds, progress=False)  # built or loaded once, before the clock
    precision = RunConfig.from_params(arch=archs[0], budget=a.budget, seed=0).precision
    for s in range(a.seeds):
        references_from_cache(s, a.budget, precision=precision, progress=False)
    seeds = list(range(a.seeds))
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            got = {}
            for side in (sides if r % 2 == 0 else sides[::-1]):
                got[side] = run_side(side, archs, seeds, a.budget, Path(tmp) / f"{side}-{r}")
                print(f"round {r}, {side}: {got[side]['runs']} runs in {got[side]['wall_s']:.0f} s", file=sys.stderr,
                      flush=True)
            if len(got) == 2:
                got["before_over_after"] = got["before"]["wall_s"] / got["after"]["wall_s"]
            rounds.append(got)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
              "budget": a.budget, "archs": archs, "seeds": a.seeds, "rounds": rounds}
    out = a.output or REPO / "benchmarks" / f"study-wall-{a.budget}{'' if len(sides) == 2 else '-' + sides[0]}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
