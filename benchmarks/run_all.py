"""Throughput benchmarks (not timed tests): world generation, LLaVA training samples/s in fp32 and bf16
autocast at a budget, the text LM's pretraining step (its data and its model step apart: most of a first
`make run`), and the machine's measured matmul peak beside them (model FLOP utilisation).

    python benchmarks/run_all.py [--budget default] [--steps 30] [--output FILE]

Prints a table and writes benchmarks/results-<budget>.json (or FILE). The LLaVA rates need the budget's LM and CL ViT:
where they are not cached, they are built first, as in a first `make run` (20-40 min at the default budget on a
2-core CPU).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlmlab.archs import backbones_needed, build
from vlmlab.backbones import load_backbones
from vlmlab.backbones.pretrain import PRETRAIN_SEED, lm_batch, lm_loss, make_lm, training_forward
from vlmlab.budgets import get_budget
from vlmlab.device import autocast, pick_device, seed_everything
from vlmlab.runs import make_data
from vlmlab.train import adamw, set_trainable, update
from vlmlab.world import World


def world_rate(n: int = 2048, batch: int = 64) -> float:
    w = World(seed=0)
    t = time.perf_counter()
    for start in range(0, n, batch):
        w.batch("qa", "train", start, batch)
    return n / (time.perf_counter() - t)


def matmul_peak(dtype, size: int = 1024, seconds: float = 0.2, device="cpu") -> float:
    """The best GFLOP/s of a ``size``-square matmul, each of 5 timings lasting about ``seconds``. Time-boxed, not a
    fixed count: on a CPU without bf16 instructions one bf16 matmul of 1,024 takes seconds (emulated), and a fixed
    count of them took minutes."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)

    def timed(reps: int) -> float:
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / reps

    timed(1)  # the warm-up (on a GPU the first product also pays for its library's start-up)
    one = timed(1)  # the cost of one
    reps = max(1, min(50, round(seconds / max(one, 1e-6))))
    best = min(timed(reps) for _ in range(5))
    return 2 * size ** 3 / best / 1e9


def train_rate(budget, precision: str, steps: int, device) -> dict:
    bb = load_backbones(budget=budget, device=device, kinds=backbones_needed("llava"))  # not the MIM ViT
    seed_everything(0)
    model = build("llava", bb, budget).to(device)
    st = model.stages()[-1]  # instruction tuning: connector + LLM, the costliest stage
    params = set_trainable(model, st.trainable)
    opt = adamw([{"params": params}], lr=1e-4)  # the optimiser and update of vlmlab.train: the step as trained
    data = make_data(World(seed=0), budget.vlm_batch)
    batches = [data(st.task, i) for i in range(steps)]

    def step(b):
        with autocast(device, precision):
            loss = model.loss_lm(b)
        update(opt, loss, params)

    flops, _, dt = _timed_steps(step, batches)
    return {"samples_per_s": budget.vlm_batch / dt, "step_s": dt, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / dt / 1e9}


def _timed_steps(step, batches, count=None) -> tuple[float, float, float]:
    """(FLOPs of one step, seconds of the first step, mean seconds per step over ``batches`` after three warm-up
    steps). ``count`` runs the step whose FLOPs are counted, when ``step`` itself cannot be (a compiled one)."""
    with FlopCounterMode(display=False) as fc:
        (count or step)(batches[0])
    t = time.perf_counter()
    step(batches[0])
    first = time.perf_counter() - t
    for b in batches[1:3]:
        step(b)
    t = time.perf_counter()
    for b in batches:
        step(b)
    return fc.get_total_flops(), first, (time.perf_counter() - t) / len(batches)


def lm_pretrain_rate(budget, steps: int, device) -> dict:
    """The text LM's pretraining, run as ``pretrain_lm`` runs it (packed rows, ``budget.lm_precision``, compiled
    when ``budget.lm_compile``): seconds per batch of text (generated and packed) and per model step."""
    world = World(seed=PRETRAIN_SEED)
    tok = world.tokenizer
    t = time.perf_counter()
    batches = [lm_batch(world, budget, i) for i in range(steps)]
    data_s = (time.perf_counter() - t) / steps
    torch.manual_seed(0)
    lm = make_lm(len(tok), budget, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id).to(device)
    params = list(lm.parameters())
    opt = adamw([{"params": params}], lr=1e-4)
    answer_id = tok.convert_tokens_to_ids("answer")

    def step_with(forward):
        def step(b):
            with autocast(device, budget.lm_precision):
                loss = lm_loss(forward, b, budget, answer_id, device)
            update(opt, loss, params)
        return step

    with training_forward(lm, budget) as forward:
        flops, first, dt = _timed_steps(step_with(forward), batches, count=step_with(lm))
    tokens = sum(b.get("real_tokens") or int(b["attention_mask"].sum()) for b in batches) / steps
    laid_out = sum(b["input_ids"].numel() for b in batches) / steps
    return {"precision": budget.lm_precision, "compiled": forward.compiled, "packed_row": budget.lm_pack,
            "data_s_per_batch": data_s, "first_step_s": first, "step_s": dt, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / dt / 1e9, "real_token_share": tokens / laid_out,
            "projected_pretrain_min": budget.lm_steps * (data_s + dt) / 60}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="default")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--output", type=Path, default=None, help="where to write the JSON results")
    a = ap.parse_args()
    device = pick_device()
    budget = get_budget(a.budget)
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "device": str(device), "torch": torch.__version__}, "budget": a.budget}
    res["world_samples_per_s"] = world_rate()
    res["matmul_peak_gflops"] = {"fp32": matmul_peak(torch.float32, device=str(device)),
                                 "bf16": matmul_peak(torch.bfloat16, device=str(device))}
    res["llava_train"] = {}
    for prec, peak_key in (("fp32", "fp32"), ("bf16", "bf16")):
        r = train_rate(budget, prec, a.steps, device)
        r["fraction_of_peak"] = r["achieved_gflops"] / res["matmul_peak_gflops"][peak_key]
        res["llava_train"][prec] = r
    lm = lm_pretrain_rate(budget, a.steps, device)
    lm_peak = "bf16" if lm["precision"] == "bf16" else "fp32"  # its matmuls run in bf16 (attention in fp32)
    lm["fraction_of_peak"] = lm["achieved_gflops"] / res["matmul_peak_gflops"][lm_peak]
    res["lm_pretrain"] = lm
    out = a.output or Path(__file__).with_name(f"results-{a.budget}.json")
    out.write_text(json.dumps(res, indent=1))
    print(f"world generation: {res['world_samples_per_s']:.0f} samples/s (rendered + tokenized)")
    for k, v in res["matmul_peak_gflops"].items():
        print(f"matmul peak {k}: {v:.1f} GFLOP/s")
    for k, r in res["llava_train"].items():
        print(f"LLaVA training ({a.budget}, {k}): {r['samples_per_s']:.0f} samples/s, {r['gflop_per_step']:.2f} "
              f"GFLOP/step, {r['achieved_gflops']:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.1f}% of the {k} peak")
    how = f"{lm['precision']}, {'compiled' if lm['compiled'] else 'eager'}, " + (
        f"rows packed to {lm['packed_row']} tokens" if lm["packed_row"] else "rows padded")
    print(f"LM pretraining ({a.budget}, {how}): {lm['data_s_per_batch']:.3f} s to generate a batch of text, "
          f"{lm['step_s']:.3f} s per step ({100 * lm['real_token_share']:.0f}% of the laid-out tokens real; first "
          f"step {lm['first_step_s']:.1f} s), {lm['achieved_gflops']:.1f} GFLOP/s = "
          f"{100 * lm['fraction_of_peak']:.1f}% of the {lm_peak} peak; {budget.lm_steps} steps = "
          f"{lm['projected_pretrain_min']:.1f} min")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
