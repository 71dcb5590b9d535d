"""How the text LM's pretraining step runs: packed rows are the padded batch laid out differently (same loss, same
gradients), attention stays in fp32 under bf16 autocast, and torch.compile falls back to eager."""
from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

from vlmlab.backbones.pretrain import PRETRAIN_SEED, fp32_attention, lm_batch, lm_loss, make_lm, pack_rows
from vlmlab.device import Compiled
from vlmlab.world import World


@pytest.fixture(scope="module")
def lm_and_batch(smoke_budget):
    world = World(seed=PRETRAIN_SEED)
    tok = world.tokenizer
    torch.manual_seed(0)
    lm = make_lm(len(tok), smoke_budget, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    padded = world.batch("scene_lm", "train", 0, 24, with_images=False,
                         extra_questions=smoke_budget.lm_extra_questions)
    return world, lm, padded, tok.convert_tokens_to_ids("answer")


def _loss_and_grads(lm, batch, budget, answer_id):
    lm.zero_grad()
    loss = lm_loss(lm, batch, budget, answer_id, "cpu")
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in lm.parameters()]


def test_packed_rows_give_the_padded_batch_loss_and_gradients(lm_and_batch, smoke_budget):
    world, lm, padded, answer_id = lm_and_batch
    packed = pack_rows(padded, 320, world.tokenizer.pad_token_id)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # several sequences share a row
    loss_pad, grads_pad = _loss_and_grads(lm, padded, smoke_budget, answer_id)
    for attention in (contextlib.nullcontext, fp32_attention):  # transformers' SDPA, and pretraining's
        with attention(lm):
            loss_pack, grads_pack = _loss_and_grads(lm, packed, smoke_budget, answer_id)
        assert loss_pack == pytest.approx(loss_pad, rel=1e-5)
        for gp, gq in zip(grads_pad, grads_pack):
            torch.testing.assert_close(gq, gp, rtol=1e-4, atol=1e-5)


def test_packing_without_restarting_positions_would_change_the_logits(lm_and_batch):
    """The equality above is not vacuous: the same rows read as one long sequence each (no restarted positions,
    so no block mask) give other logits for every sequence after a row's first."""
    world, lm, padded, _ = lm_and_batch
    packed = pack_rows(padded, 320, world.tokenizer.pad_token_id)
    later = torch.cumsum(packed["position_ids"] == 0, dim=1) > 1  # tokens after a row's first sequence
    with torch.no_grad():
        blocked = lm(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        running = lm(input_ids=packed["input_ids"], use_cache=False).logits
    assert (blocked - running).abs()[later].max() > 1e-3
    assert (blocked - running).abs()[~later].max() < 1e-5


def test_pack_rows_keeps_every_token_once_and_refuses_too_short_rows(lm_and_batch):
    world, _, padded, _ = lm_and_batch
    pad = world.tokenizer.pad_token_id
    lens = padded["attention_mask"].sum(1)
    packed = pack_rows(padded, 320, pad)
    assert packed["real_tokens"] == int(lens.sum())
    assert packed["input_ids"].shape[1] == 320
    # cut the rows where positions restart at 0: the pieces are the sequences (and the padding tails)
    pieces = []
    for ids, pos in zip(packed["input_ids"].tolist(), packed["position_ids"].tolist()):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        pieces += [tuple(ids[a:b]) for a, b in zip(starts, starts[1:]) if any(t != pad for t in ids[a:b])]
    assert sorted(pieces) == sorted(tuple(padded["input_ids"][i, :n].tolist()) for i, n in enumerate(lens.tolist()))
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"] != -100).sum())
    with pytest.raises(ValueError, match="length=16"):
        pack_rows(padded, 16, pad)


def test_lm_batch_follows_the_budget(smoke_budget):
    from dataclasses import replace

    world = World(seed=PRETRAIN_SEED)
    assert "position_ids" in lm_batch(world, smoke_budget, 0) and smoke_budget.lm_pack
    assert "attention_mask" in lm_batch(world, replace(smoke_budget, lm_pack=0), 0)


def test_fp32_attention_runs_attention_in_fp32_under_bf16_autocast_and_restores_sdpa(lm_and_batch, monkeypatch):
    _, lm, padded, _ = lm_and_batch
    import transformers.integrations.sdpa_attention as sdpa

    seen = []
    real = sdpa.sdpa_attention_forward
    monkeypatch.setattr("vlmlab.backbones.pretrain.sdpa_attention_forward",
                        lambda m, q, *a, **k: (seen.append(q.dtype), real(m, q, *a, **k))[1])
    ids = padded["input_ids"][:2]
    with torch.no_grad():
        plain = lm(input_ids=ids).logits
        with fp32_attention(lm):
            same = lm(input_ids=ids).logits  # fp32 already: the same maths
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lm(input_ids=ids)
    torch.testing.assert_close(same, plain)
    assert seen and set(seen) == {torch.float32}
    assert lm.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), fp32_attention(lm):
        raise RuntimeError("boom")
    assert lm.config._attn_implementation == "sdpa"


def test_compiled_falls_back_to_eager(monkeypatch):
    mod = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.SiLU())
    x = torch.randn(3, 4)
    monkeypatch.setenv("VLMLAB_COMPILE", "0")
    assert not Compiled(mod).compiled
    assert not Compiled(mod, enabled=False).compiled
    monkeypatch.delenv("VLMLAB_COMPILE")

    def broken(*_a, **_k):
        def fn(*_a, **_k):
            raise RuntimeError("no compiler")
        return fn

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr("shutil.which", lambda _name: "/usr/bin/cc")
    c = Compiled(mod)
    assert c.compiled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = c(x)
    assert not c.compiled and "running eagerly" in str(caught[0].message)
    torch.testing.assert_close(out, mod(x))


@pytest.mark.parametrize("has_bf16", [True, False])
def test_cpu_bf16_autocast_warns_only_where_the_cpu_lacks_bf16_instructions(monkeypatch, has_bf16):
    import vlmlab.device as device
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: has_bf16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with device.autocast(torch.device("cpu"), "bf16"):
            assert torch.is_autocast_enabled("cpu")
        with device.autocast(torch.device("cpu"), "fp32"):
            assert not torch.is_autocast_enabled("cpu")
    emulated = [w for w in caught if "without bf16 instructions" in str(w.message)]
    assert len(emulated) == (0 if has_bf16 else 1)
