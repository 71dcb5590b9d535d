"""The optimisation loop: its multi-tensor (foreach) updates must be bitwise the single-tensor ones, so that the
tables measured before it used them stay reproducible to the digit."""
from __future__ import annotations

import pytest
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


def test_set_trainable_keeps_the_fixed_sincos_position_embeddings_frozen(tiny_backbones, smoke_budget, world):
    """Ovis S2/S3 train the whole vision tower: its fixed 2-D sin-cos position embeddings (MAE's; the default
    ``vit_pos_embed``) must stay fixed, neither handed to the optimiser nor changed by its steps."""
    from vlmlab.backbones.vision import sincos_2d

    assert smoke_budget.vit_pos_embed == "sincos"
    torch.manual_seed(0)
    m = build("ovis", tiny_backbones, smoke_budget)
    st = next(s for s in m.stages() if "vision" in s.trainable)
    params = set_trainable(m, st.trainable)
    pe = m.vision.vit.pos_embed
    assert not pe.requires_grad, "set_trainable unfroze the fixed sin-cos position embeddings"
    assert all(p is not pe for p in params)
    assert m.vision.vit.blocks[0].attn.qkv.weight.requires_grad  # the rest of the tower does train
    data = make_data(world, 4)
    train.optimize(params, lambda s: data(st.task, s), m.loss_lm, 2, 1e-2, progress=False)
    assert torch.equal(m.vision.vit.pos_embed, sincos_2d(m.vision.grid, m.vision.dim))


def test_set_trainable_leaves_the_mae_decoders_sincos_fixed_and_learned_embeddings_trainable():
    from vlmlab.backbones.vision import MAEDecoder, make_vit

    mods = torch.nn.ModuleDict({"fixed": make_vit(32, 8, 16, 1, 2, "sincos"),
                                "learned": make_vit(32, 8, 16, 1, 2, "learned"),
                                "dec": MAEDecoder(16, 16, 1, 2, 16, 8 * 8 * 3, "sincos")})
    params = {id(p) for p in set_trainable(mods, ["fixed", "learned", "dec"])}
    assert not mods["fixed"].pos_embed.requires_grad and id(mods["fixed"].pos_embed) not in params
    assert not mods["dec"].pos.requires_grad and id(mods["dec"].pos) not in params
    assert mods["learned"].pos_embed.requires_grad and id(mods["learned"].pos_embed) in params


def test_constant_schedule_holds_the_peak_rate_after_warm_up():
    p = torch.nn.Parameter(torch.zeros(3))
    seen = {}

    for schedule in train.SCHEDULES:
        rates = []
        orig = torch.optim.AdamW.step

        def spy(self, *a, _rates=rates, **k):
            _rates.append(self.param_groups[0]["lr"])
            return orig(self, *a, **k)

        torch.optim.AdamW.step = spy
        try:
            train.optimize([p], lambda s: None, lambda b: (p ** 2).sum() + 1, 40, 1e-2, progress=False,
                           schedule=schedule)
        finally:
            torch.optim.AdamW.step = orig
        seen[schedule] = rates
    assert seen["constant"][2:] == [1e-2] * 38  # warm-up is 5 % of 40 steps: 2 steps
    assert seen["cosine"][-1] < 1e-3 and seen["cosine"][2] == 1e-2
    with pytest.raises(ValueError, match="schedule"):
        train.optimize([p], lambda s: None, lambda b: p.sum(), 2, 1e-2, progress=False, schedule="linear")
