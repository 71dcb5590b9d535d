"""A/B wall time of a LLaVA run: this checkout against an earlier revision, alternated in one benchmark run.

    python benchmarks/ab_llava.py --ref ab284f6 [--rounds 3] [--steps 300] [--eval 100] [--output FILE]

The earlier revision is checked out into a temporary git worktree and imported from there (PYTHONPATH), with its
own shipped backbones. Each round times, in a fresh process per side (A = ref, B = this checkout, order alternated
by round): a LLaVA run at the default budget shortened to ``--steps`` optimizer steps (the stages keep their
shares) and evaluated on ``--eval`` questions per category and split. The ratio B/A of each round is what this
shared machine can measure (absolute times vary up to 2x between hours); the JSON keeps every timing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import dataclasses, json, sys, time, torch
t0 = time.perf_counter()
from vlmlab.archs import build
from vlmlab.backbones import load_backbones
from vlmlab.budgets import get_budget
from vlmlab.device import seed_everything
from vlmlab.evaluate import evaluate
from vlmlab.runs import make_data
from vlmlab.train import train_stages
from vlmlab.world import World, WorldConfig
steps, n_eval = int(sys.argv[1]), int(sys.argv[2])
b = dataclasses.replace(get_budget("default"), vlm_steps=steps, eval_per_category=n_eval)
bb = load_backbones(WorldConfig(), get_budget("default"), kinds=("lm", "cl"), progress=False)
world = World(WorldConfig(), seed=0)
seed_everything(0)
m = build("llava", bb, b)
t1 = time.perf_counter()
train_stages(m, m.stages(), make_data(world, b.vlm_batch), b, device=torch.device("cpu"), progress=False)
t2 = time.perf_counter()
acc = evaluate(m, world, b.eval_per_category, b.eval_batch)["test"]["overall"]
t3 = time.perf_counter()
print(json.dumps({"setup_s": t1 - t0, "train_s": t2 - t1, "eval_s": t3 - t2, "total_s": t3 - t0, "overall": acc,
                  "lm": bb.paths["lm"]}))
"""


def timed(tree: Path, steps: int, n_eval: int, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "lib"), "VLMLAB_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps), str(n_eval)], cwd=tree, env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="the earlier revision (A)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per timed run (default budget: 2,400)")
    ap.add_argument("--eval", type=int, default=100, help="questions per category and split")
    ap.add_argument("--output", default=str(REPO / "benchmarks" / "ab-llava.json"))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), a.ref], check=True,
                       capture_output=True)
        try:
            rounds = []
            for r in range(a.rounds):
                order = ("A", "B") if r % 2 == 0 else ("B", "A")
                got = {side: timed(old if side == "A" else REPO, a.steps, a.eval, Path(tmp) / f"cache-{side}")
                       for side in order}
                got["ratio_total"] = got["B"]["total_s"] / got["A"]["total_s"]
                got["ratio_train"] = got["B"]["train_s"] / got["A"]["train_s"]
                rounds.append(got)
                print(f"round {r}: B/A total {got['ratio_total']:.2f}, training {got['ratio_train']:.2f} "
                      f"(A {got['A']['total_s']:.0f}s, B {got['B']['total_s']:.0f}s)", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    result = {"ref": a.ref, "steps": a.steps, "eval_per_category": a.eval, "rounds": rounds,
              **{f"median_{k}": statistics.median_high(r[k] for r in rounds) for k in ("ratio_total", "ratio_train")}}
    Path(a.output).write_text(json.dumps(result, indent=1))
    print(f"median B/A wall time {result['median_ratio_total']:.2f}; written {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
