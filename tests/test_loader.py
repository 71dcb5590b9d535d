"""Batches built ahead in worker processes (vlmlab.loader): the same batches in the same order as inline, so
training learns the same thing with or without workers."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from vlmlab.archs import build
from vlmlab.backbones.pretrain import pretrain_cl, pretrain_lm, pretrain_mim
from vlmlab.loader import WORKERS_ENV, batches_ahead, data_workers
from vlmlab.runs import make_data
from vlmlab.train import train_stages


def test_workers_default_to_none_on_cpu_and_the_variable_overrides(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert data_workers(torch.device("cpu")) == 0
    assert data_workers(torch.device("cuda")) == max(0, min(8, (os.cpu_count() or 1) - 1))
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert data_workers(torch.device("cpu")) == 3
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=f"{WORKERS_ENV}=.*allowed values: an integer >= 0"):
            data_workers(torch.device("cpu"))


def test_workers_yield_the_inline_batches_in_order(world):
    data = make_data(world, 4)

    def make(step):
        return data("qa", 3 + step)

    inline = list(batches_ahead(make, 7, workers=0))
    ahead = list(batches_ahead(make, 7, workers=2))
    assert len(inline) == len(ahead) == 7
    assert not torch.equal(inline[0]["pixel_values"], inline[1]["pixel_values"])  # the steps differ, so order is tested
    for a, b in zip(inline, ahead):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert torch.equal(a[k], b[k]), k
            else:
                assert a[k] == b[k], k


def test_training_with_workers_learns_exactly_what_inline_training_does(tiny_backbones, smoke_budget, world,
                                                                       monkeypatch):
    b = dataclasses.replace(smoke_budget, vlm_steps=6)

    def train(workers: int):
        monkeypatch.setenv(WORKERS_ENV, str(workers))
        torch.manual_seed(0)
        m = build("llava", tiny_backbones, b)
        logs = train_stages(m, m.stages(), make_data(world, 4), b, device=torch.device("cpu"), progress=False)
        return [x for log in logs for x in log.losses], m.connector.state_dict()

    losses0, weights0 = train(0)
    losses2, weights2 = train(2)
    assert len(losses0) == 6 and losses0 == losses2
    assert all(torch.equal(weights0[k], weights2[k]) for k in weights0)


@pytest.mark.parametrize("pretrain", [pretrain_lm, pretrain_cl, pretrain_mim], ids=["lm", "cl", "mim"])
def test_backbone_pretraining_with_workers_matches_inline(pretrain, smoke_budget, world, monkeypatch):
    b = dataclasses.replace(smoke_budget, lm_steps=4, cl_steps=4, mim_steps=4)
    runs = []
    for workers in (0, 2):
        monkeypatch.setenv(WORKERS_ENV, str(workers))
        runs.append(pretrain(world, b, torch.device("cpu"), progress=False)[-1])  # the losses
    assert len(runs[0]) == 4 and runs[0] == runs[1]
