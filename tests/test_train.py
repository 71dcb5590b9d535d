"""The optimisation loop: its multi-tensor (foreach) updates must be bitwise the single-tensor ones, so that the
tables measured before it used them stay reproducible to the digit."""
from __future__ import annotations

import torch

import vlmlab.train as train
from vlmlab.archs import build
from vlmlab.runs import make_data
from vlmlab.train import set_trainable


def _train(backbones, budget, world, steps: int = 6) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    m = build("llava", backbones, budget)
    st = m.stages()[1]  # connector and LLM train: two parameter groups with their own learning rates
    set_trainable(m, st.trainable)
    m.train()
    groups = [{"params": list(m.connector.parameters()), "lr": 1e-3},
              {"params": list(m.lm.parameters()), "lr": 3e-4}]
    data = make_data(world, 4)
    losses = train.optimize(None, lambda s: data("qa", s), m.loss_lm, steps, 1e-3, progress=False,
                            param_groups=groups)
    assert len(losses) == steps
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_foreach_updates_are_bitwise_the_single_tensor_ones(tiny_backbones, smoke_budget, world, monkeypatch):
    fast = _train(tiny_backbones, smoke_budget, world)

    adamw, clip = torch.optim.AdamW, torch.nn.utils.clip_grad_norm_
    calls = []

    def single_adamw(*a, **kw):
        calls.append(kw.get("foreach"))
        return adamw(*a, **{**kw, "foreach": False})

    monkeypatch.setattr(train.torch.optim, "AdamW", single_adamw)
    monkeypatch.setattr(train.torch.nn.utils, "clip_grad_norm_", lambda *a, **kw: clip(*a, **{**kw, "foreach": False}))
    slow = _train(tiny_backbones, smoke_budget, world)

    assert calls == [True]  # the loop asks for foreach updates
    assert fast.keys() == slow.keys()
    changed = [k for k in fast if not torch.equal(fast[k], slow[k])]
    assert not changed, f"foreach and single-tensor updates differ in {changed[:5]}"
    start = build("llava", tiny_backbones, smoke_budget).state_dict()
    assert any(not torch.equal(fast[k], start[k]) for k in start if k.startswith("lm."))  # the LLM did train
