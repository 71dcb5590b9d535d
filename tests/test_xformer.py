"""X-Former (arXiv 2407.13851): fidelity checks of the dual cross-attention and its losses, knobs, and a smoke run.

Sizes are ours: C = (B, N, d) with the CLS token dropped (the shared VisionEncoder drops it); M = (B, 1 + N(1-r), d)
with the MAE CLS; Z' = (B, n_queries, width) with width = the ViT width; the prefix is n_queries tokens.
"""
from __future__ import annotations

import math

import pytest
import torch

from vlmlab.archs import build
from vlmlab.archs.xformer import qformer_mask
from vlmlab.train import set_trainable


def make(bb, budget, knobs=None, seed=0):
    torch.manual_seed(seed)
    return build("xformer", bb, budget, knobs)


def unzero_fusion(m, scale=0.2):
    """The CA-1/CA-2 output projections start at zero (check 7); after any update they are not. Tests about
    gradient paths through the dual cross-attention set them to small random values, as after a step."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for ca in (m.fusion.ca1, m.fusion.ca2):
            ca.o.weight.copy_(torch.randn(ca.o.weight.shape, generator=g) * scale)
            ca.o.bias.copy_(torch.randn(ca.o.bias.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def cap(world):
    return world.batch("caption", "train", 0, 6)


@pytest.fixture(scope="module")
def cap_other(world):
    return world.batch("caption", "train", 100, 6)


# ---- check 1: shapes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_queries,ratio", [(8, 0.5), (5, 0.25)])
def test_shapes_of_c_m_z_and_prefix(tiny_backbones, smoke_budget, batch, n_queries, ratio):
    m = make(tiny_backbones, smoke_budget, {"n_queries": n_queries, "mae_mask_ratio": ratio})
    px = batch["pixel_values"]
    B, N, d = px.shape[0], m.mim.grid ** 2, m.mim.dim
    m.train()  # the MAE stream is masked while training
    s = m.streams(px)
    assert s["c"].shape == (B, m.cl.grid ** 2, m.cl.dim)  # CLS dropped; the CL grid may differ from the MIM grid
    keep = round(N * (1 - ratio))
    assert s["m"].shape == (B, 1 + keep, d)  # MAE CLS + visible patches
    assert s["mask"].shape == (B, N) and int(s["mask"].sum(1).unique()) == N - keep
    out = m.qformer_pass(s["feats"], s["m"])
    assert out["m_fused"].shape == s["m"].shape
    assert out["z_q"].shape == out["z"].shape == (B, n_queries, m.width)
    assert m.width == m.cl.dim
    vis, _ = m.visual_tokens(px)
    assert vis.shape == (B, n_queries, m.d_lm)  # exactly n_queries prefix tokens
    m.eval()
    inp = m.build_inputs(batch)
    assert int(inp["visual_mask"].sum(1).unique()) == n_queries


def test_mask_at_inference_knob(tiny_backbones, smoke_budget, batch):
    px = batch["pixel_values"]
    m = make(tiny_backbones, smoke_budget).eval()
    N = m.mim.grid ** 2
    assert m.streams(px)["m"].shape[1] == 1 + N  # default: unmasked MAE input at inference
    m2 = make(tiny_backbones, smoke_budget, {"mask_at_inference": True}).eval()
    assert m2.streams(px)["m"].shape[1] == 1 + round(N * 0.5)


# ---- check 2: L_rec only sees masked patches -----------------------------------------------------------------------
def test_rec_loss_depends_only_on_masked_patches(tiny_backbones, smoke_budget, batch):
    m = make(tiny_backbones, smoke_budget).train()
    px = batch["pixel_values"][:4]
    s = m.streams(px)
    out = m.qformer_pass(s["feats"], s["m"])
    base = m.rec_loss(out["m_fused"], s["ids_restore"], s["mask"], px)
    p = m.patch
    g = m.mim.grid

    def poke(patch_index):  # change the target pixels of one patch of sample 0
        t = px.clone()
        r, c = divmod(patch_index, g)
        t[0, :, r * p:(r + 1) * p, c * p:(c + 1) * p] = torch.rand(3, p, p)
        return m.rec_loss(out["m_fused"], s["ids_restore"], s["mask"], t)

    visible = (s["mask"][0] == 0).nonzero().flatten()
    masked = (s["mask"][0] == 1).nonzero().flatten()
    assert len(visible) and len(masked)
    for i in visible.tolist():
        assert torch.equal(poke(i), base)
    for i in masked.tolist():
        assert not torch.allclose(poke(i), base)


# ---- check 3: stage-1 gradients ----------------------------------------------------------------------------------
def test_stage1_gradients(tiny_backbones, smoke_budget, cap):
    m = make(tiny_backbones, smoke_budget)
    st = m.stages()[0]
    assert st.name == "stage1" and st.loss == "stage1" and st.task == "caption"
    set_trainable(m, st.trainable)
    m.train()
    # at exact step 0 the zero-initialised output projections already get gradients
    m.loss_stage1(cap).backward()
    for ca in (m.fusion.ca1, m.fusion.ca2):
        assert ca.o.weight.grad.abs().sum() > 0
    m.zero_grad(set_to_none=True)
    unzero_fusion(m)
    loss = m.loss_stage1(cap)
    loss.backward()
    assert set(m.stage1_log[-1]) >= {"itc", "itm", "itg", "rec"}
    trainable = {id(p) for n in st.trainable for p in m.get_submodule(n).parameters()}
    for name, p in m.named_parameters():
        if id(p) in trainable:  # queries, Q-Former, CA-1, CA-2, heads
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:  # CL ViT, MAE encoder, MAE decoder, LLM, FC
            assert p.grad is None, name
    assert any(n.startswith(("cl.", "mim.", "decoder.", "lm.")) for n, _ in m.named_parameters())


def test_rec_loss_reaches_the_qformer(tiny_backbones, smoke_budget, cap):
    m = make(tiny_backbones, smoke_budget)
    set_trainable(m, m.stages()[0].trainable)
    m.train()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    # exactly at step 0 (CA-1 output = 0) L_rec cannot reach the queries: M' = M
    m.stage1_terms(cap, gen())["rec"].backward()
    assert m.qformer.query.tokens.grad is None or m.qformer.query.tokens.grad.abs().sum() == 0
    assert m.fusion.ca1.o.weight.grad.abs().sum() > 0
    m.zero_grad(set_to_none=True)
    unzero_fusion(m)  # after one update: dL_rec/d(Q-Former) != 0 through CA-1's keys and values
    m.stage1_terms(cap, gen())["rec"].backward()
    for mod in (m.qformer.query, m.qformer.shared, m.fusion.ca1):
        assert sum(p.grad.abs().sum() for p in mod.parameters() if p.grad is not None) > 0
    # the ITC pass's queries never see the text: nothing of L_rec reaches the text side
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.qformer.text.parameters())


# ---- check 4: the three masks ------------------------------------------------------------------------------------
def test_qformer_mask_table():
    valid = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    nq = 2
    itc, itm, itg = (qformer_mask(nq, valid, mode)[0] for mode in ("itc", "itm", "itg"))
    Q, T = slice(0, nq), slice(nq, nq + 3)  # the three valid text positions
    for m in (itc, itm, itg):
        assert m[Q, Q].all()
        assert not m[:, nq + 3].any()  # padding is never a key
    assert not itc[Q, T].any() and not itc[T, Q].any() and itc[T, T].all()
    assert itm[Q, T].all() and itm[T, Q].all() and itm[T, T].all()
    assert not itg[Q, T].any() and itg[T, Q].all()
    assert torch.equal(itg[T, T], torch.ones(3, 3, dtype=torch.bool).tril())


def test_pass_invariances(tiny_backbones, smoke_budget, cap, cap_other):
    m = make(tiny_backbones, smoke_budget).eval()
    unzero_fusion(m)  # so that Z' really depends on M' and the fusion
    s = m.streams(cap["pixel_values"])
    ids_a, va = m.caption_text(cap)
    ids_b, vb = m.caption_text(cap_other)
    assert not torch.equal(ids_a[:, :3], ids_b[:, :3])
    # ITC: Z' does not depend on the text
    za = m.qformer_pass(s["feats"], s["m"], ids_a, va, "itc")
    zb = m.qformer_pass(s["feats"], s["m"], ids_b, vb, "itc")
    torch.testing.assert_close(za["z"], zb["z"], rtol=0, atol=1e-6)
    assert not torch.allclose(za["z"], za["z_q"])  # the fusion is active
    # ...and the text side does not depend on the image
    s2 = m.streams(cap_other["pixel_values"])
    zc = m.qformer_pass(s2["feats"], s2["m"], ids_a, va, "itc")
    torch.testing.assert_close(za["text"], zc["text"], rtol=0, atol=1e-6)
    # ITM: Z' changes with the text
    ma = m.qformer_pass(s["feats"], s["m"], ids_a, va, "itm")
    mb = m.qformer_pass(s["feats"], s["m"], ids_b, vb, "itm")
    assert (ma["z"] - mb["z"]).abs().amax(dim=(1, 2)).min() > 1e-4
    # ITG: query outputs ignore the text; text position t ignores text tokens > t
    ga = m.qformer_pass(s["feats"], s["m"], ids_a, va, "itg")
    gb = m.qformer_pass(s["feats"], s["m"], ids_b, vb, "itg")
    torch.testing.assert_close(ga["z_q"], gb["z_q"], rtol=0, atol=1e-6)
    torch.testing.assert_close(ga["z_q"], za["z_q"], rtol=0, atol=1e-6)  # = the ITC pass's query states
    k = 2
    ids_c = ids_a.clone()
    ids_c[:, k] = (ids_c[:, k] + 1) % len(m.tokenizer)
    gc = m.qformer_pass(s["feats"], s["m"], ids_c, va, "itg")
    # text outputs: position 0 is [DEC], position j + 1 holds caption token j
    torch.testing.assert_close(ga["text"][:, : k + 1], gc["text"][:, : k + 1], rtol=0, atol=1e-6)
    assert (ga["text"][:, k + 1] - gc["text"][:, k + 1]).abs().amax(-1).min() > 1e-4
    la = m.heads.itg(m.heads.itg_ln(ga["text"]))
    lc = m.heads.itg(m.heads.itg_ln(gc["text"]))
    torch.testing.assert_close(la[:, : k + 1], lc[:, : k + 1], rtol=0, atol=1e-5)


# ---- check 5: the ITC score is the max over queries ----------------------------------------------------------------
def test_itc_score_is_max_over_query_text_dot_products(tiny_backbones, smoke_budget, cap):
    m = make(tiny_backbones, smoke_budget).eval()
    unzero_fusion(m)
    ids, valid = m.caption_text(cap)
    s = m.streams(cap["pixel_values"])
    itc = m.qformer_pass(s["feats"], s["m"], ids, valid, "itc")
    sim, img, txt = (t.detach() for t in m.itc_similarity(itc["z"], itc["text"][:, 0]))
    B, nq = img.shape[:2]
    temp = float(m.heads.temp.detach())
    for i in range(B):
        for j in range(B):
            dots = [float(img[i, q] @ txt[j]) for q in range(nq)]
            assert math.isclose(float(sim[i, j]) * temp, max(dots), rel_tol=1e-5, abs_tol=1e-6)
            assert not math.isclose(max(dots), sum(dots) / nq, abs_tol=1e-6)  # not the mean
    assert math.isclose(temp, 0.07, rel_tol=1e-6)  # learnable temperature, initialised at 0.07
    assert torch.allclose(img.norm(dim=-1), torch.ones(B, nq)) and torch.allclose(txt.norm(dim=-1), torch.ones(B))


# ---- check 6: stage 2 --------------------------------------------------------------------------------------------
def test_stage2_gradients_no_rec_and_prefix_length(tiny_backbones, smoke_budget, batch, monkeypatch):
    m = make(tiny_backbones, smoke_budget)
    unzero_fusion(m)
    st = m.stages()[-1]
    assert st.name == "stage2" and st.task == "qa" and "lm" not in st.trainable
    set_trainable(m, st.trainable)
    m.train()

    def no_decoder(*a, **k):
        raise AssertionError("L_rec must not be computed in stage 2 (rec_stage2=False)")

    monkeypatch.setattr(m.decoder, "forward", no_decoder)
    m.loss_stage2(batch).backward()
    trainable = {id(p) for n in st.trainable for p in m.get_submodule(n).parameters()}
    for name, p in m.named_parameters():
        if id(p) in trainable:  # queries + Q-Former query path and self-attention, CA-1, CA-2, FC
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:  # LLM, encoders, decoder, the Q-Former's text side and stage-1 heads
            assert p.grad is None, name
    inp = m.build_inputs(batch)
    L = batch["input_ids"].shape[1]
    assert inp["inputs_embeds"].shape[1] == m.knobs.n_queries + (L - 1)  # n_queries + T text positions


def test_stage2_options(tiny_backbones, smoke_budget, batch):
    m = make(tiny_backbones, smoke_budget, {"rec_stage2": True, "mask_stage2": True})
    calls = []
    m.decoder.register_forward_hook(lambda *a: calls.append(1))
    set_trainable(m, m.stages()[-1].trainable)
    m.train()
    m.loss_stage2(batch)
    assert calls  # L_rec computed when asked
    m = make(tiny_backbones, smoke_budget, {"tune_llm": True, "describe_share": 0.2})
    names = [s.name for s in m.stages()]
    assert names == ["stage1", "describe", "stage2"]
    assert "lm" in m.stages()[-1].trainable and "lm" not in m.stages()[1].trainable
    assert m.stages()[-1].lr["lm"] == smoke_budget.llm_lr
    assert math.isclose(sum(s.share for s in m.stages()), 1.0)


def test_stage2_trains_on_the_unmasked_mae_input_it_is_evaluated_on(tiny_backbones, smoke_budget, batch, cap):
    px = batch["pixel_values"]
    m = make(tiny_backbones, smoke_budget)
    unzero_fusion(m)  # so that the prefix depends on M'
    N = m.mim.grid ** 2
    m.train()
    train_prefix, e = m.visual_tokens(px)  # the stage-2 path (loss_stage2 -> forward -> visual_tokens)
    assert e["m"].shape[1] == 1 + N and not e["mask"].any(), "stage 2 trains on a masked MAE input"
    m.eval()
    torch.testing.assert_close(train_prefix, m.visual_tokens(px)[0], rtol=0, atol=0)  # trained as evaluated
    m.train()
    terms = m.stage1_terms(cap, torch.Generator().manual_seed(0))  # stage 1 still masks, for L_rec
    assert torch.isfinite(terms["rec"]) and int(m.streams(px)["mask"].sum(1).unique()) == N - round(N * 0.5)


def test_mask_stage2_knob_masks_the_stage2_training_input_only(tiny_backbones, smoke_budget, batch):
    px = batch["pixel_values"]
    m = make(tiny_backbones, smoke_budget, {"mask_stage2": True, "rec_stage2": True}).train()
    N = m.mim.grid ** 2
    _, e = m.visual_tokens(px)
    assert e["m"].shape[1] == 1 + round(N * 0.5) and int(e["mask"].sum(1).unique()) == N - round(N * 0.5)
    assert torch.isfinite(m.loss_stage2(batch))
    m.eval()
    assert m.visual_tokens(px)[1]["m"].shape[1] == 1 + N  # evaluated unmasked (mask_at_inference=False)


# ---- check 7: step 0 equals BLIP-2 -------------------------------------------------------------------------------
def test_step0_equals_blip2(tiny_backbones, smoke_budget, cap, batch):
    xf = make(tiny_backbones, smoke_budget)
    blip2 = make(tiny_backbones, smoke_budget, {"features": "cl", "fusion": "none", "rec_stage1": False}, seed=5)
    shared = blip2.state_dict()
    missing, unexpected = xf.load_state_dict(shared, strict=False)
    assert not unexpected and all(k.startswith(("mim.", "decoder.", "fusion.")) for k in missing)
    xf.eval(), blip2.eval()
    # visual tokens (the LLM prefix) identical: Z' = Z_q
    vx, ex = xf.visual_tokens(batch["pixel_values"])
    vb, _ = blip2.visual_tokens(batch["pixel_values"])
    assert torch.equal(ex["z"], ex["z_q"]) and torch.equal(ex["m_fused"], ex["m"])  # M' = M
    torch.testing.assert_close(vx, vb, rtol=0, atol=1e-6)
    # stage-1 objectives identical (same hard negatives: the MAE mask uses its own generator)
    xf.train(), blip2.train()
    torch.manual_seed(0)
    tx = xf.stage1_terms(cap, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    tb = blip2.stage1_terms(cap, torch.Generator().manual_seed(0))
    for k in ("itc", "itm", "itg"):
        torch.testing.assert_close(tx[k], tb[k], rtol=0, atol=1e-5)
    assert "rec" not in tb
    # and the reconstruction through M' is the plain frozen MAE's
    d = xf.reconstruction_error(batch["pixel_values"])
    assert math.isclose(d["rec_mse"], d["rec_mse_mae_only"], rel_tol=1e-6)


# ---- knobs, ablation variants, visualisation ----------------------------------------------------------------------
@pytest.mark.parametrize("knobs,match", [
    ({"features": "cl"}, r"fusion.*impossible.*features='cl'.*\['none'\]"),
    ({"features": "cl", "fusion": "none"}, r"rec_stage1.*fusion='dual_ca'"),
    ({"features": "both", "fusion": "none", "rec_stage1": False}, r"fusion.*features='both'.*dual_ca.*concat"),
    ({"fusion": "concat"}, r"rec_stage1.*fusion='dual_ca'"),
    ({"features": "mim", "fusion": "concat", "rec_stage1": False}, r"fusion.*features='mim'"),
    ({"rec_stage2": True, "fusion": "concat", "rec_stage1": False}, r"rec_stage2"),
    ({"features": "cl", "fusion": "none", "rec_stage1": False, "mask_at_inference": True}, r"mask_at_inference"),
    ({"features": "cl", "fusion": "none", "rec_stage1": False, "mask_stage2": True}, r"mask_stage2.*MAE stream"),
    ({"rec_stage2": True}, r"rec_stage2.*masked.*mask_stage2=True"),
    ({"stage1_share": 0.6, "describe_share": 0.4}, r"stage1_share.*describe_share"),
    ({"mae_mask_ratio": 1.0}, r"mae_mask_ratio.*between 0 and 1"),
    ({"fusion": "sideways"}, r"fusion.*allowed values.*dual_ca"),
    ({"table_size": 3}, r"knobs=\['table_size'\].*xformer"),
])
def test_impossible_knobs_are_rejected(tiny_backbones, smoke_budget, knobs, match):
    with pytest.raises(ValueError, match=match):
        build("xformer", tiny_backbones, smoke_budget, knobs)


@pytest.mark.parametrize("knobs", [
    {"features": "cl", "fusion": "none", "rec_stage1": False},  # BLIP-2
    {"features": "mim", "fusion": "none", "rec_stage1": False},  # MAE replaces C
    {"features": "mim"},  # MAE for C and for the dual cross-attention
    {"fusion": "concat", "rec_stage1": False},  # CL + MAE tokens concatenated into the cross-attention input
    {"rec_stage1": False},  # dual cross-attention without L_rec
])
def test_ablation_variants_train(tiny_backbones, smoke_budget, cap, batch, knobs):
    m = make(tiny_backbones, smoke_budget, knobs)
    assert (m.fusion is not None) == (m.knobs.fusion == "dual_ca")
    assert (m.mim is not None) == (m.knobs.features != "cl")
    for st, b in zip(m.stages(), (cap, batch)):
        set_trainable(m, st.trainable)
        m.train()
        loss = getattr(m, f"loss_{st.loss}")(b)
        assert torch.isfinite(loss)
        loss.backward()
        m.zero_grad(set_to_none=True)
    if knobs.get("fusion") == "concat":
        s = m.streams(batch["pixel_values"])
        assert s["feats"].shape[1] == s["c"].shape[1] + s["m"].shape[1]  # [LN(C); LN'(M)] along tokens
    m.eval()
    assert m.visual_tokens(batch["pixel_values"])[0].shape == (len(batch["input_ids"]), m.knobs.n_queries, m.d_lm)


def test_reconstruct_images(tiny_backbones, smoke_budget, batch):
    m = make(tiny_backbones, smoke_budget).eval()
    px = batch["pixel_values"][:3]
    masked, rec, target = m.reconstruct(px)
    assert masked.shape == rec.shape == target.shape == px.shape
    torch.testing.assert_close(target, px.clamp(0, 1), rtol=0, atol=1e-5)
    hidden = (masked == 0.5).all(1)  # grey on masked patches
    frac = hidden.float().mean().item()
    assert 0.3 < frac < 0.7  # mask ratio 0.5
    torch.testing.assert_close(rec[:, :, ~hidden[0]][0], px[0][:, ~hidden[0]], rtol=0, atol=1e-5)
    assert (rec[0][:, hidden[0]] - px[0][:, hidden[0]]).abs().max() > 1e-3  # masked patches are predicted
    with pytest.raises(ValueError, match="features"):
        make(tiny_backbones, smoke_budget, {"features": "cl", "fusion": "none", "rec_stage1": False}).reconstruct(px)


# ---- end to end --------------------------------------------------------------------------------------------------
def test_smoke_run_end_to_end():
    from vlmlab.runs import RunConfig, run

    exp = run(RunConfig.from_params(arch="xformer", budget="smoke", references=False), progress=False)
    rec = exp.record
    for split in ("test", "compositional"):
        assert all(math.isfinite(v) for v in rec["metrics"][split].values())
    d = rec["diagnostics"]
    assert math.isfinite(d["rec_mse"]) and math.isfinite(d["rec_mse_mae_only"])
    assert 0.0 <= d["itc_accuracy_train"] <= 1.0
    assert set(d["stage1_losses"]) == {"itc", "itm", "itg", "rec"}
    assert [s["name"] for s in rec["stages"]] == ["stage1", "stage2"]
    assert d["n_prefix_tokens"] == len(d["answer_to_image_attention_map"]) == 16  # n_queries (default)


def test_stage1_batch_and_steps_knobs(tiny_backbones, smoke_budget):
    st = build("xformer", tiny_backbones, smoke_budget, {"stage1_batch": 64, "stage1_steps": 30}).stages()
    assert (st[0].name, st[0].steps, st[0].batch) == ("stage1", 30, 64)
    assert all(s.steps is None and s.batch is None for s in st[1:])
    st = build("xformer", tiny_backbones, smoke_budget).stages()
    assert st[0].steps is None and st[0].batch is None
