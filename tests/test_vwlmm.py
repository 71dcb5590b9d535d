"""VW-LMM (visual words): fidelity checks of the visual-word head and its loss, the stages and freezing,
knobs, diagnostics, and an end-to-end smoke run. Tiny random-weight backbones (fixture ``tiny_backbones``)."""
from __future__ import annotations

import math

import pytest
from conftest import assert_only_trainable_get_gradients, run_stage_backward
import torch
import torch.nn.functional as F

from vlmlab.archs import build
from vlmlab.archs.vwlmm import vm_loss, vm_targets
from vlmlab.train import set_trainable


@pytest.fixture(scope="module")
def model(tiny_backbones, smoke_budget):
    return build("vwlmm", tiny_backbones, smoke_budget).eval()


def _placeholder_pos(batch, model):
    return (batch["input_ids"] == model.image_token_id).float().argmax(1)  # [B]: text tokens before the image


def _reference_vm(logits, visual_mask, q_logits):
    """Check 11's definition, written as a plain loop: mean over t with visual[t+1] of sum_v q log(q/p)."""
    kls, k = [], 0
    flat_q = {}
    for b in range(visual_mask.shape[0]):
        for t in range(visual_mask.shape[1]):
            if visual_mask[b, t]:
                flat_q[(b, t)] = q_logits[k]
                k += 1
    for (b, t), ql in flat_q.items():
        if t == 0:
            continue
        q = F.softmax(ql.double(), -1)
        logp = F.log_softmax(logits[b, t - 1].double(), -1)
        kls.append((q * (q.log() - logp)).sum())
    return torch.stack(kls).mean() if kls else torch.zeros((), dtype=torch.double)


# ---- check 9: q is a distribution; L_vm >= 0, and 0 when LM logits = VM logits up to a constant ---------------
def test_q_sums_to_one_and_vm_loss_nonnegative(model, batch):
    _, extras = model.visual_tokens(batch["pixel_values"])
    q = F.softmax(extras["q_logits"].float(), -1)  # [B, N, V]
    assert q.shape == (8, model.vision.grid ** 2, len(model.tokenizer))
    assert (q >= 0).all()
    assert torch.allclose(q.sum(-1), torch.ones(q.shape[:2]), atol=1e-5)
    ids, probs = model.visual_words(batch["pixel_values"], k=q.shape[-1])
    assert torch.allclose(probs.sum(-1), torch.ones(q.shape[:2]), atol=1e-5)
    torch.manual_seed(1)
    for _ in range(5):
        vm = torch.rand(2, 7) < 0.5
        n_vis = int(vm.sum())
        assert vm_loss(3 * torch.randn(2, 7, 11), vm, 3 * torch.randn(n_vis, 11)) >= 0
    assert model.losses(batch)["vm"] >= 0


def test_vm_loss_zero_when_lm_logits_match_vm_logits_up_to_a_constant():
    torch.manual_seed(0)
    B, L, V = 3, 9, 13
    vm = torch.zeros(B, L, dtype=torch.bool)
    vm[0, 3:7] = True
    vm[1, 2:5] = True
    vm[2, 5:9] = True
    q_logits = 4 * torch.randn(int(vm.sum()), V)
    lm_logits = torch.randn(B, L, V)
    assert vm_loss(lm_logits, vm, q_logits) > 0.1
    rows, pred, patch = vm_targets(vm)
    lm_logits[rows, pred] = q_logits[patch] + 10 * torch.randn(len(rows), 1)  # equal up to an additive constant
    assert vm_loss(lm_logits, vm, q_logits).abs() < 1e-5


# ---- check 10: an n-patch image after m text tokens supervises exactly the LM outputs m-1 .. m+n-2 ---------
def test_exactly_n_positions_supervised_m_minus_1_to_m_plus_n_minus_2(model, batch):
    inp = model.build_inputs(batch)
    n = model.vision.grid ** 2
    m = _placeholder_pos(batch, model)
    rows, pred, patch = vm_targets(inp["visual_mask"])
    for b in range(len(m)):
        got = pred[rows == b]
        assert got.tolist() == list(range(int(m[b]) - 1, int(m[b]) + n - 1))
        assert patch[rows == b].tolist() == list(range(b * n, (b + 1) * n))  # every patch is a target once
    # the gradient of L_vm reaches exactly those LM outputs (the last patch's output is unused) ...
    out = model.forward(batch)
    logits = out["logits"].detach().requires_grad_(True)
    q_logits = out["extras"]["q_logits"].detach().flatten(0, 1).requires_grad_(True)
    vm_loss(logits, out["visual_mask"], q_logits).backward()
    touched = logits.grad.abs().sum(-1) > 0  # [B, L']
    expected = torch.zeros_like(touched)
    for b in range(len(m)):
        expected[b, int(m[b]) - 1: int(m[b]) + n - 1] = True
    assert torch.equal(touched, expected)
    assert int(touched.sum()) == len(m) * n
    # ... and every patch's visual words are a target, including the first (predicted from the last text token)
    assert (q_logits.grad.abs().sum(-1) > 0).all()


# ---- check 11: batchmean; invariant to padding and text-only samples; 0 (not NaN) with nothing supervised ----
def test_vm_loss_is_mean_of_per_position_kl(model, batch):
    out = model.forward(batch)
    got = model.losses(batch)["vm"]
    ref = _reference_vm(out["logits"], out["visual_mask"], out["extras"]["q_logits"].flatten(0, 1))
    assert torch.allclose(got.double(), ref, atol=1e-6)


def test_vm_loss_unchanged_by_padding_and_text_only_rows():
    torch.manual_seed(0)
    B, L, V = 2, 8, 10
    vm = torch.zeros(B, L, dtype=torch.bool)
    vm[0, 2:6] = True
    vm[1, 4:8] = True
    lm_logits, q_logits = torch.randn(B, L, V), torch.randn(8, V)
    base = vm_loss(lm_logits, vm, q_logits)
    # a text-only sample (no visual positions) and three padding columns
    vm2 = torch.zeros(B + 1, L + 3, dtype=torch.bool)
    vm2[[0, 2], :L] = vm
    lm2 = torch.randn(B + 1, L + 3, V)
    lm2[[0, 2], :L] = lm_logits
    assert torch.allclose(vm_loss(lm2, vm2, q_logits), base, atol=1e-6)
    # image at position 0: that first patch has no predictor and is skipped, not wrapped around
    vm3 = torch.zeros(1, 4, dtype=torch.bool)
    vm3[0, :2] = True
    q3, lm3 = torch.randn(2, V), torch.randn(1, 4, V)
    ref = F.kl_div(F.log_softmax(lm3[0, :1], -1), F.softmax(q3[1:], -1), reduction="batchmean")
    assert torch.allclose(vm_loss(lm3, vm3, q3), ref, atol=1e-6)


def test_vm_loss_zero_not_nan_without_supervised_positions(model, world):
    z = vm_loss(torch.randn(2, 5, 7, requires_grad=True), torch.zeros(2, 5, dtype=torch.bool), torch.zeros(0, 7))
    assert z.item() == 0.0 and torch.isfinite(z)
    text_only = world.batch("qa", "test", 0, 4, with_images=False)
    losses = model.losses(text_only)
    assert losses["vm"].item() == 0.0
    assert torch.equal(losses["total"], losses["lm"])


def test_model_vm_loss_unchanged_by_extra_padding(model, world):
    b = world.batch("qa", "test", 0, 4)
    padded = dict(b)
    k = 5
    padded["input_ids"] = F.pad(b["input_ids"], (0, k), value=model.tokenizer.pad_token_id)
    padded["attention_mask"] = F.pad(b["attention_mask"], (0, k), value=0)
    padded["labels"] = F.pad(b["labels"], (0, k), value=-100)
    a, c = model.losses(b), model.losses(padded)
    assert torch.allclose(a["vm"], c["vm"], atol=1e-6)
    assert torch.allclose(a["lm"], c["lm"], atol=1e-6)


# ---- check 12: PIF feeds q @ E_txt, the LLM's own input-embedding table --------------------------------------
def test_pif_one_hot_gives_text_embedding_row(tiny_backbones, smoke_budget, batch):
    m = build("vwlmm", tiny_backbones, smoke_budget, {"pif": True}).eval()
    E = m.lm.get_input_embeddings().weight
    V = E.shape[0]
    for k in (0, 7, V - 1):
        assert torch.equal(m.pseudo_features(F.one_hot(torch.tensor([k]), V).float())[0], E[k])
    inp = m.build_inputs(batch)
    q = F.softmax(inp["extras"]["q_logits"].float(), -1)  # [B, N, V]
    vis = inp["inputs_embeds"][inp["visual_mask"]].view(q.shape[0], q.shape[1], -1)
    assert torch.allclose(vis, q @ E, atol=1e-6)
    assert not torch.allclose(vis, inp["extras"]["z"])
    # the standard model reads the continuous z_j instead
    std = build("vwlmm", tiny_backbones, smoke_budget).eval()
    std.load_state_dict(m.state_dict())
    inp = std.build_inputs(batch)
    assert torch.equal(inp["inputs_embeds"][inp["visual_mask"]], inp["extras"]["z"].flatten(0, 1))


# ---- check 13: lambda_vm = 0 is LLaVA; the VM head learns through the target unless detached ----------------
def test_lambda_zero_reproduces_llava_loss_exactly(tiny_backbones, smoke_budget, batch):
    llava = build("llava", tiny_backbones, smoke_budget).eval()
    ref = llava.loss_lm(batch)
    vw0 = build("vwlmm", tiny_backbones, smoke_budget, {"lambda_vm": 0.0}).eval()
    vw0.connector.load_state_dict(llava.connector.state_dict())
    assert torch.equal(vw0.loss_vw(batch), ref)
    vw1 = build("vwlmm", tiny_backbones, smoke_budget, {"lambda_vm": 1.0}).eval()
    vw1.connector.load_state_dict(llava.connector.state_dict())
    losses = vw1.losses(batch)
    assert torch.equal(losses["lm"], ref)  # the LM term is LLaVA's ...
    assert losses["vm"] > 0 and not torch.equal(losses["total"], ref)  # ... plus the KL
    vw2 = build("vwlmm", tiny_backbones, smoke_budget, {"lambda_vm": 2.5}).eval()
    vw2.load_state_dict(vw1.state_dict())
    assert torch.allclose(vw2.loss_vw(batch), losses["lm"] + 2.5 * losses["vm"], atol=1e-6)


def _grads(m, batch):
    set_trainable(m, m.stages()[0].trainable)
    m.zero_grad(set_to_none=True)
    m.loss_vw(batch).backward()
    return m.vm_head.weight.grad, m.connector[0].weight.grad.clone()


def test_detach_target_knob_stops_vm_head_gradient(tiny_backbones, smoke_budget, world):
    b = world.batch("describe", "train", 0, 4)
    live = build("vwlmm", tiny_backbones, smoke_budget)
    g_head, g_conn = _grads(live, b)
    assert g_head is not None and g_head.abs().sum() > 0  # non-PIF: the head only enters through the target q
    det = build("vwlmm", tiny_backbones, smoke_budget, {"detach_target": True})
    det.load_state_dict(live.state_dict())
    assert torch.equal(det.losses(b)["total"], live.losses(b)["total"])  # same value, different gradient
    g_head_d, g_conn_d = _grads(det, b)
    assert g_head_d is None or (g_head_d == 0).all()
    assert not torch.allclose(g_conn, g_conn_d)  # the projector also lost its path through q


# ---- stages and freezing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("stage_index", [0, 1])
def test_frozen_parameters_get_no_gradient(tiny_backbones, smoke_budget, world, stage_index):
    m = build("vwlmm", tiny_backbones, smoke_budget)
    st = m.stages()[stage_index]
    assert st.loss == "vw" and "vm_head" in st.trainable and "vision" not in st.trainable
    run_stage_backward(m, st, world)
    assert_only_trainable_get_gradients(m, st)


def test_stages_follow_llava(model, smoke_budget):
    st = model.stages()
    assert [s.name for s in st] == ["align", "instruct"]
    assert [s.task for s in st] == ["describe", "qa"]
    assert st[1].trainable == ("connector", "vm_head", "lm") and st[1].lr == {"lm": smoke_budget.llm_lr}
    assert math.isclose(sum(s.share for s in st), 1.0)
    assert model.vm_head.bias is None
    assert model.vm_head.weight.shape == (model.lm.config.vocab_size, model.d_lm)


# ---- knobs -------------------------------------------------------------------------------------------------
def test_knob_errors(tiny_backbones, smoke_budget):
    with pytest.raises(ValueError, match=r"lambda_vm.*>= 0"):
        build("vwlmm", tiny_backbones, smoke_budget, {"lambda_vm": -1.0})
    with pytest.raises(ValueError, match=r"lambda_vm.*finite"):
        build("vwlmm", tiny_backbones, smoke_budget, {"lambda_vm": float("nan")})
    with pytest.raises(TypeError, match=r"pif.*bool"):
        build("vwlmm", tiny_backbones, smoke_budget, {"pif": 1})
    with pytest.raises(ValueError, match=r"knobs=\['attention'\].*vwlmm.*lambda_vm.*detach_target.*pif"):
        build("vwlmm", tiny_backbones, smoke_budget, {"attention": "bidirectional"})
    m = build("vwlmm", tiny_backbones, smoke_budget, {"lambda_vm": 2})  # ints are accepted as floats
    assert m.knobs.lambda_vm == 2.0 and isinstance(m.knobs.lambda_vm, float)


# ---- diagnostics and visual words --------------------------------------------------------------------------
def test_diagnostics_and_visual_words(model, batch):
    import json

    d = model.diagnostics(batch)
    json.dumps(d)
    n = model.vision.grid ** 2
    vocab = set(model.tokenizer.get_vocab())
    assert "answer_to_image_attention_mass" in d
    assert len(d["visual_words_top3"]) == 4 and all(len(img) == n for img in d["visual_words_top3"])
    assert all(len(p) == 3 and set(p) <= vocab for img in d["visual_words_top3"] for p in img)
    for name in ("color", "shape", "texture", "size"):
        assert 0.0 <= d[f"top_visual_word_{name}_fraction"] <= 1.0
    assert 0.0 <= d["visual_word_entropy"] <= d["visual_word_entropy_max"] + 1e-5
    assert d["loss_vm"] >= 0
    ids, probs = model.visual_words(batch["pixel_values"], k=3)
    assert ids.shape == probs.shape == (8, n, 3)
    assert (probs[..., :-1] >= probs[..., 1:]).all()
    first = [model.tokenizer.convert_ids_to_tokens(ids[0, j].tolist()) for j in range(n)]
    assert first == d["visual_words_top3"][0]
    with pytest.raises(ValueError, match=r"k=0"):
        model.visual_words(batch["pixel_values"], k=0)


def test_word_fractions_count_the_world_vocabulary(model, batch, monkeypatch):
    """Force every patch's top visual word to 'red': the color fraction must be 1 and the others 0."""
    red = model.tokenizer.convert_tokens_to_ids("red")
    real = model.visual_tokens

    def fake(pix):
        vis, extras = real(pix)
        ql = torch.zeros_like(extras["q_logits"])
        ql[..., red] = 5.0
        return vis, dict(extras, q_logits=ql)

    monkeypatch.setattr(model, "visual_tokens", fake)
    d = model.diagnostics(batch)
    assert d["top_visual_word_color_fraction"] == 1.0
    assert d["top_visual_word_shape_fraction"] == d["top_visual_word_size_fraction"] == 0.0
    assert all(p[0] == "red" for p in d["visual_words_top3"][0])


# ---- end to end ----------------------------------------------------------------------------------------------
def test_smoke_run_end_to_end():
    from vlmlab.runs import RunConfig, run

    e = run(RunConfig.from_params(arch="vwlmm", budget="smoke", references=False), progress=False)
    r = e.record
    for split in ("test", "compositional"):
        assert all(math.isfinite(v) for v in r["metrics"][split].values())
    assert {"align", "instruct"} == set(r["losses"])
    assert all(math.isfinite(v) for losses in r["losses"].values() for v in losses)
    for key in ("visual_words_top3", "top_visual_word_color_fraction", "visual_word_entropy", "loss_vm"):
        assert key in r["diagnostics"]
    assert r["config"]["knobs"] == {"lambda_vm": 1.0, "detach_target": False, "vm_head": "linear", "pif": False}


def test_embedding_anchored_vm_head_reads_the_llm_rows_and_has_no_parameters(tiny_backbones, smoke_budget, batch):
    torch.manual_seed(0)
    m = build("vwlmm", tiny_backbones, smoke_budget, {"vm_head": "embedding"})
    _, extras = m.visual_tokens(batch["pixel_values"])
    E = m.lm.get_input_embeddings().weight
    assert torch.allclose(extras["q_logits"], extras["z"] @ E.t(), atol=1e-6)
    assert all("vm_head" not in st.trainable for st in m.stages())
    set_trainable(m, m.stages()[-1].trainable)
    m.loss_vw(batch).backward()
    assert E.grad is not None and E.grad.abs().sum() > 0  # L_lm trains the rows through the text tokens
    m.zero_grad()
    z = extras["z"].detach().requires_grad_(True)
    m.vm_logits(z).sum().backward()  # the visual words hold the rows fixed: only z learns from them
    assert E.grad is None and z.grad is not None and z.grad.abs().sum() > 0
