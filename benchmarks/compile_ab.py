"""Eager against compiled VLM training steps, per design and stage, alternated in one benchmark run.

    python benchmarks/compile_ab.py [--budget default] [--archs llava,ovis,...] [--steps 10] [--rounds 4]
                                    [--output FILE]

For each design, each training stage runs on two copies of one initialised model (A: eager, B: its loss under
``vlmlab.train.CompiledLoss``, as ``train_stages`` runs it when ``Budget.vlm_compile``) over the same prebuilt
batches; the rounds alternate which side goes first. Reported per stage: the median step of each side, their
ratio A/B, the first compiled step (the compile; seconds when inductor's on-disk cache already holds the graph,
a minute or two when not), the loss difference at the first step (same weights, same batch: the rounding) and
the largest over the run (rounding compounded by training). The run's ratio weights each stage's step ratio by
its steps in the budget. Writes benchmarks/compile-ab.json (or FILE).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from vlmlab.archs import ARCHS, backbones_needed, build
from vlmlab.backbones import load_backbones
from vlmlab.budgets import get_budget
from vlmlab.device import pick_device, seed_everything
from vlmlab.runs import make_data
from vlmlab.train import CompiledLoss, adamw, set_trainable, stage_plan, update
from vlmlab.world import World

REPO = Path(__file__).resolve().parents[1]


def initialised(arch: str, budget, device) -> tuple:
    """Seed 0's initialised model of the design and its data stream, as a run starts them."""
    bb = load_backbones(budget=budget, device=device, kinds=backbones_needed(arch), progress=False)
    seed_everything(0)
    return build(arch, bb, budget).to(device), make_data(World(seed=0), budget.vlm_batch)


def trainer(model, stage, budget, device, compiled: bool) -> tuple:
    """A copy of ``model`` set to train ``stage`` as train_stages does: its loss (under CompiledLoss, as
    train_stages compiles it, when ``compiled``), its trainable parameters and their optimizer."""
    m = copy.deepcopy(model)
    params = set_trainable(m, stage.trainable)
    m.train()
    fn = getattr(m, f"loss_{stage.loss}")
    if compiled:
        fn = CompiledLoss(fn, enabled=True, device=device)
    return fn, params, adamw([{"params": params}], budget.vlm_lr)


def stage_ab(model, stage, batches, budget, device, rounds: int, steps: int) -> dict:
    sides = {}
    for side in ("eager", "compiled"):
        fn, params, opt = trainer(model, stage, budget, device, compiled=side == "compiled")
        sides[side] = {"fn": fn, "params": params, "opt": opt, "times": [], "losses": []}

    def one(side: str, batch) -> float:
        s = sides[side]
        t = time.perf_counter()
        loss = s["fn"](batch)
        update(s["opt"], loss, s["params"])
        s["losses"].append(float(loss.detach()))
        return time.perf_counter() - t

    first = {side: one(side, batches[0]) for side in ("compiled", "eager")}  # the compile, then eager's warm-up
    for r in range(rounds):
        for side in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
            for b in batches[1 + r * steps:1 + (r + 1) * steps]:
                sides[side]["times"].append(one(side, b))
    eager, comp = (statistics.median(sides[s]["times"]) for s in ("eager", "compiled"))
    diffs = [abs(a - b) for a, b in zip(sides["eager"]["losses"], sides["compiled"]["losses"])]
    return {"eager_step_s": eager, "compiled_step_s": comp, "ratio": eager / comp,
            "compiled": sides["compiled"]["fn"].compiled, "first_compiled_step_s": first["compiled"],
            "first_loss_diff": diffs[0], "max_loss_diff": max(diffs), "max_rel_loss_diff": max(d / abs(a) for d, a in
                                                                  zip(diffs, sides["eager"]["losses"]))}


def design_ab(arch: str, budget, device, rounds: int, steps: int) -> dict:
    torch._dynamo.reset()  # as train_stages does: each design starts with no graphs of the others
    model, data = initialised(arch, budget, device)
    stages = model.stages()
    plan = stage_plan(stages, budget)
    out = {}
    for st, n in zip(stages, plan):
        batches = [data(st.task, i) for i in range(1 + rounds * steps)]
        out[st.name] = {"steps_in_run": n, **stage_ab(model, st, batches, budget, device, rounds, steps)}
        r = out[st.name]
        print(f"{arch}:{st.name}: eager {1000 * r['eager_step_s']:.1f} ms, compiled {1000 * r['compiled_step_s']:.1f} "
              f"ms, ratio {r['ratio']:.2f}, compile {r['first_compiled_step_s']:.0f} s, "
              f"|Δloss| first {r['first_loss_diff']:.1e}, max {r['max_loss_diff']:.1e}", flush=True)
    eager = sum(r["steps_in_run"] * r["eager_step_s"] for r in out.values())
    comp = sum(r["steps_in_run"] * r["compiled_step_s"] for r in out.values())
    return {"stages": out, "run_ratio": eager / comp}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="default")
    ap.add_argument("--archs", default=",".join(ARCHS), help="comma-separated designs (default: all six)")
    ap.add_argument("--steps", type=int, default=10, help="steps per side and round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks" / "compile-ab.json")
    a = ap.parse_args(argv)
    archs = [x.strip() for x in a.archs.split(",") if x.strip()]
    unknown = [x for x in archs if x not in ARCHS]
    if unknown:
        ap.error(f"--archs: unknown {unknown}; allowed values: {', '.join(ARCHS)}")
    if a.steps < 1 or a.rounds < 1:
        ap.error("--steps and --rounds must be at least 1")
    budget, device = get_budget(a.budget), pick_device()
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "device": str(device), "torch": torch.__version__},
           "budget": a.budget, "steps": a.steps, "rounds": a.rounds, "designs": {}}
    for arch in archs:
        res["designs"][arch] = design_ab(arch, budget, device, a.rounds, a.steps)
        print(f"{arch}: run ratio eager/compiled {res['designs'][arch]['run_ratio']:.2f}", flush=True)
    a.output.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
