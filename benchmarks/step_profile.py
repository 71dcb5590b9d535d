"""Where a training step's time goes: the share spent in matrix multiplies, eager and compiled.

    python benchmarks/step_profile.py [--budget default] [--arch llava] [--steps 5] [--output FILE]

For each stage of the design, one initialised model trains ``--steps`` warm-up steps and then ``--steps``
profiled steps (``torch.profiler``, CPU), eager and then with its loss under ``vlmlab.train.CompiledLoss``. A
step's matrix-multiply time is the self time of aten::mm, addmm, bmm and baddbmm (a compiled graph calls the
same kernels, or mkldnn's, named below); the rest is element-wise work, attention, the optimizer and dispatch.
Compiling can only remove the rest, so 1 / (matmul share of the eager step) bounds what it can gain.
Writes benchmarks/step-profile.json (or FILE).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from compile_ab import initialised, trainer  # the sibling benchmark: the same model, data and training sides
from vlmlab.archs import ARCHS
from vlmlab.budgets import get_budget
from vlmlab.device import pick_device
from vlmlab.train import stage_plan, update

REPO = Path(__file__).resolve().parents[1]
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise",
           "aten::_addmm_activation")


def profile_stage(model, stage, batches, budget, device, compiled: bool, steps: int) -> dict:
    fn, params, opt = trainer(model, stage, budget, device, compiled)

    def step(batch):
        update(opt, fn(batch), params)

    for b in batches[:steps]:  # warm-up (and the compile)
        step(b)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[steps:2 * steps]:
            step(b)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    return {"step_ms": total / steps / 1000, "matmul_ms": mm / steps / 1000, "matmul_share": mm / total}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="default")
    ap.add_argument("--arch", default="llava")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks" / "step-profile.json")
    a = ap.parse_args(argv)
    if a.arch not in ARCHS:
        ap.error(f"--arch: unknown {a.arch!r}; allowed values: {', '.join(ARCHS)}")
    if a.steps < 1:
        ap.error("--steps must be at least 1")
    budget, device = get_budget(a.budget), pick_device()
    model, data = initialised(a.arch, budget, device)
    out = {}
    stages = model.stages()
    for st, n in zip(stages, stage_plan(stages, budget)):
        batches = [data(st.task, i) for i in range(2 * a.steps)]
        out[st.name] = {"steps_in_run": n,
                        **{side: profile_stage(model, st, batches, budget, device, side == "compiled", a.steps)
                           for side in ("eager", "compiled")}}
        r = out[st.name]
        print(f"{a.arch}:{st.name}: eager {r['eager']['step_ms']:.0f} ms ({100 * r['eager']['matmul_share']:.0f} % "
              f"matmul), compiled {r['compiled']['step_ms']:.0f} ms ({100 * r['compiled']['matmul_share']:.0f} %)",
              flush=True)
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "device": str(device), "torch": torch.__version__},
           "budget": a.budget, "arch": a.arch, "steps": a.steps, "stages": out}
    a.output.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
