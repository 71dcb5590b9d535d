"""One run on several processes: each rank's share of a batch, DDP's stage training (one gloo process here,
bitwise the plain loop), and a 2-process gloo smoke run under torchrun whose record says world_size 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from vlmlab.archs import build
from vlmlab.device import seed_everything
from vlmlab.distributed import Distributed
from vlmlab.runs import make_data
from vlmlab.train import train_stages


def test_the_ranks_shares_make_the_batch(world):
    whole = make_data(world, 8, 0.5)("qa", 3)
    shares = [make_data(world, 8, 0.5, rank=r, ranks=2)("qa", 3) for r in range(2)]
    assert all(len(s["answer_sets"]) == 4 for s in shares)
    assert shares[0]["answer_sets"] + shares[1]["answer_sets"] == whole["answer_sets"]
    assert torch.equal(torch.cat([s["pixel_values"] for s in shares]), whole["pixel_values"])


@pytest.fixture
def one_process_group(tmp_path):
    import torch.distributed as td

    td.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield Distributed(0, 1, 0, "gloo", owned=False)
    td.destroy_process_group()


def _train(arch, backbones, budget, world, dist=None):
    seed_everything(0)
    m = build(arch, backbones, budget)
    logs = train_stages(m, m.stages(), make_data(world, 4), budget, device=torch.device("cpu"), progress=False,
                        dist=dist)
    return [l.losses for l in logs], m.state_dict()


def test_every_arch_trains_under_ddp_as_without(one_process_group, tiny_backbones, smoke_budget, world):
    """Under DDP every stage trains (a parameter of the trainable set that got no gradient would stop DDP at the
    next step), and with one process exactly as the plain loop does. Two architectures, for the test's time: all
    six passed once (about 90 s of CPU); xformer's first stage trains several heads."""
    from dataclasses import replace

    short = replace(smoke_budget, vlm_steps=4)
    for arch in ("llava", "xformer"):
        plain, ddp = _train(arch, tiny_backbones, short, world), _train(arch, tiny_backbones, short, world,
                                                                         one_process_group)
        assert plain[0] == ddp[0], arch
        assert all(torch.equal(plain[1][k], ddp[1][k]) for k in plain[1]), arch


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun(tmp_path):
    """``vlmlab run --nproc 2`` starts torchrun with 2 CPU processes (gloo) at the smoke budget: rank 0 writes the
    record, which says world_size 2."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "vlmlab.cli", "run", "--budget", "smoke", "--nproc", "2", "--out",
                          str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["environment"]["world_size"] == 2 and rec["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert rec["stages"][0]["steps"] + rec["stages"][1]["steps"] == 12 and rec["samples_per_s"] > 0
    assert res.stdout.count("accuracy (%) on the test split") == 1  # rank 0 alone prints the summary
    assert sorted(p.name for p in out.iterdir()) == ["record.json"]
