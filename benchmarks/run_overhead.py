"""The fixed cost of a run: what a sweep run spends outside training and evaluating its model, as a share of it.

    python benchmarks/run_overhead.py [--budget default] [--arch llava] [--rounds 1] [--output FILE]

Each round runs the same configuration twice, the order alternated: through papermill as a sweep runs it (a fresh
process and kernel: ``vlmlab run``) and in this process (``vlmlab.runs.run``, imports and backbones already
loaded, as a warm worker would run its second run). Each run trains its model anew. The record's
``train_seconds`` and ``seconds`` split the run inside ``vlmlab.runs.run``: setup (backbones and the model),
training, evaluation, and the floor and oracle look-ups (computed before the rounds, so that both sides look them
up). The papermill side adds what happens before and after it: process and kernel start, imports, the notebook's
other cells. Overhead = wall time - training - evaluation. Writes benchmarks/run-overhead.json (or FILE).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _shares(wall: float, record: dict) -> dict:
    seconds = {"train": record["train_seconds"], **record["seconds"]}
    overhead = wall - seconds["train"] - seconds["evaluate"]
    return {"wall_s": wall, **{f"{k}_s": v for k, v in seconds.items()}, "overhead_s": overhead,
            "overhead_share": overhead / wall}


def papermill_run(arch: str, budget: str, out: Path) -> dict:
    vlmlab = Path(sys.executable).with_name("vlmlab")
    cmd = [str(vlmlab) if vlmlab.exists() else "vlmlab", "run", "--arch", arch, "--budget", budget, "--seed", "0",
           "--out", str(out)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    return _shares(wall, json.loads((out / "record.json").read_text()))


def in_process_run(arch: str, budget: str, out: Path) -> dict:
    import vlmlab.runs as runs

    t = time.perf_counter()
    exp = runs.run(runs.RunConfig.from_params(arch=arch, budget=budget, seed=0), progress=False, output_dir=out)
    return _shares(time.perf_counter() - t, exp.record)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="default")
    ap.add_argument("--arch", default="llava")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks" / "run-overhead.json")
    a = ap.parse_args(argv)
    from vlmlab.archs import ARCHS
    from vlmlab.budgets import get_budget

    if a.arch not in ARCHS:
        ap.error(f"--arch: unknown {a.arch!r}; allowed values: {', '.join(ARCHS)}")
    get_budget(a.budget)
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    import vlmlab.runs as runs  # the in-process side is warm: its imports are paid before it is timed
    from vlmlab.backbones import load_backbones
    from vlmlab.score import references_from_cache

    budget = get_budget(a.budget)
    load_backbones(budget=budget, progress=False)  # and its backbones are built or loaded
    # the floor and the oracle are cached per world seed and budget: computed here, looked up by both sides
    config = runs.RunConfig.from_params(arch=a.arch, budget=a.budget, seed=0)
    references_from_cache(0, a.budget, precision=config.precision, progress=False)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = ("papermill", "in_process") if r % 2 == 0 else ("in_process", "papermill")
            got = {}
            for side in order:
                out = Path(tmp) / f"{side}-{r}"
                got[side] = (papermill_run if side == "papermill" else in_process_run)(a.arch, a.budget, out)
                shutil.rmtree(out, ignore_errors=True)
                print(f"round {r}, {side}: wall {got[side]['wall_s']:.0f} s, overhead {got[side]['overhead_s']:.0f} "
                      f"s ({100 * got[side]['overhead_share']:.1f} %)", file=sys.stderr, flush=True)
            rounds.append(got)
    result = {"arch": a.arch, "budget": a.budget, "threads": os.environ.get("OMP_NUM_THREADS"), "rounds": rounds}
    a.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
