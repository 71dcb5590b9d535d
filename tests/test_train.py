"""The optimisation loop: its multi-tensor (foreach) updates must be bitwise the single-tensor ones, so that the
tables measured before it used them stay reproducible to the digit."""
from __future__ import annotations

import pytest
import torch

import vlmlab.train as train
from vlmlab.archs import build
from vlmlab.device import Compiled
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
    m = build("ovis", tiny_backbones, smoke_budget, {"vit": "trained"})  # the paper's schedule trains the tower
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


def _stage_losses(backbones, budget, world, stage: int) -> list[float]:
    torch.manual_seed(0)
    m = build("llava", backbones, budget)
    logs = train.train_stages(m, m.stages()[stage:stage + 1], make_data(world, 4), budget, device=torch.device("cpu"),
                              progress=False)
    return logs[0].losses


def test_compiled_training_steps_agree_with_eager_within_fp32_rounding(tiny_backbones, smoke_budget, world,
                                                                       monkeypatch):
    """``Budget.vlm_compile`` runs each stage's loss under torch.compile: the same updates up to rounding."""
    import dataclasses

    compiled = []
    real = train.CompiledLoss
    monkeypatch.setattr(train, "CompiledLoss", lambda fn, **kw: compiled.append(kw) or real(fn, **kw))
    b = dataclasses.replace(smoke_budget, vlm_steps=6)
    eager = _stage_losses(tiny_backbones, b, world, 1)
    assert compiled == [{"enabled": False, "device": torch.device("cpu")}]  # the smoke budget stays eager
    fast = _stage_losses(tiny_backbones, dataclasses.replace(b, vlm_compile=True), world, 1)
    assert compiled[-1]["enabled"] is True
    assert fast == pytest.approx(eager, rel=1e-4, abs=1e-5)
    assert len(set(eager)) > 1  # it trained


def test_compiled_falls_back_to_eager_with_a_warning_without_a_c_compiler(monkeypatch):
    import vlmlab.device as device

    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    lin = torch.nn.Linear(3, 2)
    with pytest.warns(RuntimeWarning, match="C compiler"):
        c = Compiled(lin, enabled=True)
    assert not c.compiled
    x = torch.ones(1, 3)
    assert torch.equal(c(x), lin(x))


@pytest.mark.parametrize("value", ["yes", "2"])
def test_vlmlab_compile_accepts_only_0_or_1(monkeypatch, value):
    monkeypatch.setenv("VLMLAB_COMPILE", value)
    with pytest.raises(ValueError, match=r"VLMLAB_COMPILE='.*'; allowed values: 0 .* or 1"):
        Compiled(torch.nn.Linear(3, 2), enabled=True)


def test_a_failing_compiled_backward_redoes_the_step_eagerly_with_a_warning():
    """A compiled graph's backward raises where ``update`` calls ``backward()``, outside ``Compiled.__call__``:
    optimize gives up compiling, warns, and trains that step and the rest eagerly."""
    w = torch.nn.Parameter(torch.ones(3))

    class Breaks(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise AssertionError("expected size 16==16, stride 8576==8960")

    eager = lambda _b: (w ** 2).sum()  # noqa: E731
    c = Compiled(eager, enabled=False)
    c.fn = lambda _b: Breaks.apply(w ** 2).sum()  # stands in for a compiled graph with a broken backward
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*stride 8576"):
        losses = train.optimize([w], lambda step: step, c, steps=3, lr=1e-1, progress=False)
    assert not c.compiled and len(losses) == 3 and losses[0] > losses[-1]


def test_compiled_loss_compiles_once_whatever_the_answer_sets(monkeypatch):
    """Dynamo guards on the Python values a graph reads; a loss that slices its batch reads the answer sets, a
    list that differs from batch to batch. CompiledLoss passes the tensors only: one graph for all batches."""
    graphs = []
    real = torch.compile

    def counting(fn, **kw):
        def backend(gm, inputs):
            graphs.append(gm)
            return gm.forward
        return real(fn, backend=backend, dynamic=kw.get("dynamic"))

    monkeypatch.setattr(torch, "compile", counting)
    w = torch.nn.Parameter(torch.ones(3))

    def loss(batch):
        b = {k: v[:2] for k, v in batch.items()}  # as a model that takes part of its batch does
        return (w[:2] * b["x"]).sum() + len(b)

    for cls, expected in ((train.CompiledLoss, 1), (lambda f, **kw: Compiled(f, dynamic=False, **kw), 4)):
        torch._dynamo.reset()
        graphs.clear()
        c = cls(loss, enabled=True, device=torch.device("cpu"))
        for i in range(4):
            c({"x": torch.ones(3), "answer_sets": [("yes", "no")] * (i + 1)})
        assert len(graphs) == expected


def test_a_stage_with_its_own_steps_and_batch_trains_them_on_fresh_samples(tiny_backbones, smoke_budget, world):
    m = build("llava", tiny_backbones, smoke_budget)
    align, instruct = m.stages()
    stages = [train.Stage(align.name, align.trainable, task=align.task, share=align.share, steps=3, batch=12),
              instruct]
    base = make_data(world, smoke_budget.vlm_batch)
    calls = []

    def data(task, step, n=smoke_budget.vlm_batch):
        calls.append((task, step, n))
        return base(task, step, n)

    logs = train.train_stages(m, stages, data, smoke_budget, device=torch.device("cpu"), progress=False)
    plan = train.stage_plan(stages, smoke_budget)
    assert plan == [3, round(smoke_budget.vlm_steps * instruct.share)]
    assert [(lg.steps, lg.samples) for lg in logs] == [(3, 36), (plan[1], plan[1] * smoke_budget.vlm_batch)]
    assert calls[:3] == [("describe", s, 12) for s in range(3)]
    # the next stage's samples start after the 36 the first stage read (36 / 8 = 4.5: at its batch 5)
    assert calls[3] == ("qa", 5, smoke_budget.vlm_batch)
    assert len(base("qa", 0, 12)["input_ids"]) == 12
