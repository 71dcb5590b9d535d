"""One measured run for benchmarks/gpu_check.sh: train and evaluate, then print one JSON line with the samples per
second of training, the peak accelerator memory and the overall test accuracy.

    python benchmarks/gpu_check.py design --arch llava --budget full [--precision auto]
    python benchmarks/gpu_check.py real --budget default [--lm DIR --cl SPEC]   # real (transformers + timm) backbones

``design`` is a regular run (vlmlab.runs.run, the budget's pretrained backbones, built first when missing).
``real`` trains LLaVA on real backbones loaded offline: the given checkpoints, or without them tiny random ones in
the real formats (vlmlab.backbones.real.save_tiny_checkpoints), which checks the path, not the numbers.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    """Peak memory the tensors held on the device (None off CUDA, where torch keeps no such count)."""
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def design(a) -> dict:
    from vlmlab.device import pick_device
    from vlmlab.runs import RunConfig, run

    cfg = RunConfig.from_params(arch=a.arch, budget=a.budget, precision=a.precision, device=a.device,
                                references=False)
    device = pick_device(a.device)
    from vlmlab.archs import backbones_needed
    from vlmlab.backbones import load_backbones
    from vlmlab.budgets import get_budget

    bb = load_backbones(budget=get_budget(a.budget), device=device, kinds=backbones_needed(a.arch, {}))
    _peak_reset(device)
    rec = run(cfg, backbones=bb, progress=False).record
    return {"check": f"{a.arch}@{a.budget}", "precision": a.precision, "device": str(device),
            "samples_per_s": rec["samples_per_s"], "train_seconds": rec["train_seconds"],
            "peak_memory_gib": _peak_gib(device), "test_overall": rec["metrics"]["test"]["overall"]}


def real(a) -> dict:
    from vlmlab.archs import build
    from vlmlab.backbones.real import load_real_backbones, save_tiny_checkpoints
    from vlmlab.budgets import get_budget
    from vlmlab.device import pick_device, seed_everything
    from vlmlab.evaluate import evaluate
    from vlmlab.runs import make_data
    from vlmlab.train import train_stages
    from vlmlab.world import World

    device = pick_device(a.device)
    budget = get_budget(a.budget)
    with tempfile.TemporaryDirectory() as tmp:
        if a.lm and a.cl:
            bb = load_real_backbones(a.lm, a.cl, device=device)
            what = {"lm": a.lm, "cl": a.cl}
        else:  # tiny random checkpoints in the real formats: the path runs, its accuracy means nothing
            ck = save_tiny_checkpoints(tmp)
            bb = load_real_backbones(ck["lm"], ck["cl"], device=device)
            what = {"lm": "tiny (save_tiny_checkpoints)", "cl": "tiny (save_tiny_checkpoints)"}
    world = World(seed=0, tokenizer=bb.tokenizer)  # the world's text through the real LM's tokenizer
    seed_everything(0)
    model = build("llava", bb, budget).to(device)
    _peak_reset(device)
    t0 = time.perf_counter()
    logs = train_stages(model, model.stages(), make_data(world, budget.vlm_batch), budget, device=device,
                        precision=a.precision, progress=False)
    seconds = time.perf_counter() - t0
    acc = evaluate(model, world, budget.eval_per_category, budget.eval_batch, splits=("test",),
                   precision=a.precision)
    return {"check": f"llava-real@{a.budget}", **what, "precision": a.precision, "device": str(device),
            "samples_per_s": sum(l.samples for l in logs) / seconds, "train_seconds": seconds,
            "peak_memory_gib": _peak_gib(device), "test_overall": acc["test"]["overall"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("design", "real"):
        s = sub.add_parser(name)
        s.add_argument("--budget", default="full")
        s.add_argument("--precision", default="auto", help="auto: bf16 autocast on CUDA, fp32 elsewhere")
        s.add_argument("--device", default="auto")
        if name == "design":
            s.add_argument("--arch", default="llava")
        else:
            s.add_argument("--lm", help="a transformers save_pretrained directory (or a model id, when online)")
            s.add_argument("--cl", help="a timm model name, hub-layout directory or NAME@FILE")
    a = p.parse_args(argv)
    print(json.dumps(design(a) if a.what == "design" else real(a)), flush=True)


if __name__ == "__main__":
    main()
