"""Ovis: probabilistic visual tokens over a visual embedding table (fidelity checks 1-8 of the mechanism)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlmlab.archs import build
from vlmlab.archs.ovis import N_IND, space_to_depth
from vlmlab.train import set_trainable


@pytest.fixture
def ovis(tiny_backbones, smoke_budget):
    def make(**knobs):
        torch.manual_seed(0)
        return build("ovis", tiny_backbones, smoke_budget, knobs)
    return make


def _pixels(world, n=4):
    return world.batch("qa", "test", 0, n)["pixel_values"]


# ---- check 1: p is a distribution over the K - n_ind visual entries; indicator columns exactly 0 ----------
@pytest.mark.parametrize("knobs", [{}, {"tokenize": "gumbel"}, {"tokenize": "st"}, {"indexings": 3},
                                   {"indexings": 1}, {"table_size": 16, "temperature": 0.3},
                                   {"head_norm": False, "table_size": 4096}])
def test_p_is_a_distribution_with_zero_indicator_columns(ovis, world, knobs):
    m = ovis(**knobs).train()
    d = m.patch_distribution(_pixels(world))  # [B, n, K]
    K = m.knobs.table_size
    assert d.shape == (4, m.vision.grid ** 2, K)
    assert (d >= 0).all()
    assert torch.allclose(d[..., : K - N_IND].sum(-1), torch.ones(d.shape[:2]), atol=1e-5)
    assert (d[..., K - N_IND:] == 0).all()
    if m.knobs.indexings:
        assert int((d > 0).sum(-1).max()) <= m.knobs.indexings  # top-k keeps at most k entries


# ---- check 2: one-hot p gives a VTE row exactly; integer lookup == one-hot matmul ---------------------------
def test_one_hot_equals_table_row_and_integer_lookup(ovis):
    m = ovis(table_size=64)
    ids = torch.tensor([[0, 5, 62, 63], [17, 17, 1, 40]])
    one_hot = F.one_hot(ids, 64).float()
    via_matmul = m.embed(one_hot)
    assert torch.equal(via_matmul, m.embed(ids))
    assert torch.equal(via_matmul[0, 1], m.vte.weight[5])


# ---- check 3: linear in p; visual embeddings lie in the convex hull of the table rows -----------------------
def test_embedding_is_linear_and_in_convex_hull(ovis, world):
    m = ovis(vte_init="normal")
    g = torch.Generator().manual_seed(1)
    p = torch.rand(3, 5, m.K, generator=g).softmax(-1)
    q = torch.rand(3, 5, m.K, generator=g).pow(4).softmax(-1)
    a = 0.3
    assert torch.allclose(m.embed(a * p + (1 - a) * q), a * m.embed(p) + (1 - a) * m.embed(q), atol=1e-5)
    vis, _ = m.visual_tokens(_pixels(world))
    max_row = m.vte.weight.norm(dim=-1).max()
    assert (vis.norm(dim=-1) <= max_row + 1e-5).all()


# ---- check 4: indicators are VTE rows K-2, K-1; patches never send gradient into them -----------------------
def test_indicator_rows_and_their_gradient(ovis, world):
    m = ovis(table_size=32)
    vis, extras = m.visual_tokens(_pixels(world))  # [B, n+2, d]
    K = m.K
    assert torch.equal(vis[:, 0], m.vte.weight[K - 2].expand_as(vis[:, 0]))  # image begin
    assert torch.equal(vis[:, -1], m.vte.weight[K - 1].expand_as(vis[:, -1]))  # image end
    vis[:, 1:-1].pow(2).sum().backward()  # a loss on patch tokens only: no indicator token involved
    g = m.vte.weight.grad
    assert (g[K - N_IND:] == 0).all()
    assert g[: K - N_IND].abs().sum() > 0
    m.vte.weight.grad = None
    m.visual_tokens(_pixels(world))[0].pow(2).sum().backward()  # with the indicators they do get gradient
    assert (m.vte.weight.grad[K - N_IND:].abs().sum(-1) > 0).all()


# ---- check 5: p invariant to scaling the head weights and to adding a constant to the logits ---------------
def test_head_layernorm_invariances(ovis, world):
    m = ovis()
    x = _pixels(world)
    p0 = m.patch_distribution(x)
    with torch.no_grad():
        m.head[0].weight.mul_(7.0)
    assert torch.allclose(m.patch_distribution(x), p0, atol=1e-4)
    raw = m.head[0](m.features(x))
    p1, _ = m.probabilities(m.head[1](raw))
    p2, _ = m.probabilities(m.head[1](raw + 3.5))
    assert torch.allclose(p1, p2, atol=1e-5)
    # control: without the LayerNorm, scaling the weights does change p (the test can fail)
    m2 = ovis(head_norm=False)
    q0 = m2.patch_distribution(x)
    with torch.no_grad():
        m2.head[0].weight.mul_(7.0)
    assert not torch.allclose(m2.patch_distribution(x), q0, atol=1e-3)


# ---- check 6: sequence length and labels after the merge --------------------------------------------------
@pytest.mark.parametrize("hs", [1, 2])
def test_merge_length_and_labels(ovis, batch, hs):
    m = ovis(hidden_stride=hs)
    inp = m.build_inputs(batch)
    L = batch["input_ids"].shape[1]
    per_image = math.ceil(m.vision.grid / hs) ** 2 + N_IND  # 16 + 2 here (v1.0 at 336 px: 576 + 1 ... +577)
    assert inp["inputs_embeds"].shape[1] == L - 1 + per_image
    assert int(inp["visual_mask"].sum(1).unique()) == per_image
    assert (inp["labels"][inp["visual_mask"]] == -100).all()
    assert int((inp["labels"] != -100).sum()) == int((batch["labels"] != -100).sum())
    rows = torch.arange(len(inp["labels"]))
    assert torch.equal(inp["labels"][rows, inp["answer_pos"]], batch["labels"][rows, batch["answer_pos"]])


# ---- check 7: hidden_stride: token count, head width, block/channel ordering -------------------------------
@pytest.mark.parametrize("hs", [1, 2, 3])
def test_hidden_stride_counts_and_head_width(ovis, world, hs):
    m = ovis(hidden_stride=hs)
    S, d = m.vision.grid, m.vision.dim
    assert m.head[0].in_features == hs * hs * d
    assert m.features(_pixels(world, 2)).shape == (2, math.ceil(S / hs) ** 2, hs * hs * d)
    assert m.visual_tokens(_pixels(world, 2))[0].shape[1] == math.ceil(S / hs) ** 2 + N_IND


def test_space_to_depth_ordering():
    S, d, hs = 5, 3, 2  # 5 -> padded to 6: 3 x 3 blocks
    x = torch.arange(S * S * d, dtype=torch.float).reshape(1, S * S, d)  # value = (r*S + c)*d + ch
    y = space_to_depth(x, hs)
    assert y.shape == (1, 9, hs * hs * d)
    for br in range(3):
        for bc in range(3):
            vec = y[0, br * 3 + bc]
            for i in range(hs):
                for j in range(hs):
                    for ch in range(d):
                        r, c = br * hs + i, bc * hs + j
                        want = (r * S + c) * d + ch if (r < S and c < S) else 0.0
                        assert vec[(i * hs + j) * d + ch] == want
    assert torch.equal(space_to_depth(x, 1), x)


# ---- check 8: gumbel and st are exactly one-hot forward, with gradient into the head -----------------------
@pytest.mark.parametrize("mode", ["gumbel", "st"])
def test_hard_modes_one_hot_with_head_gradient(ovis, world, mode):
    m = ovis(tokenize=mode, temperature=0.5).train()
    logits = m.logits(_pixels(world))
    p, _ = m.probabilities(logits)
    assert ((p == 0) | (p == 1)).all() and (p.sum(-1) == 1).all()
    vis = m.embed(m.pad_and_wrap(p))
    (vis * torch.randn_like(vis)).sum().backward()
    assert m.head[0].weight.grad is not None and m.head[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_gumbel_mode_is_torchs_hard_gumbel_softmax(ovis, world, tau):
    """The official Ovis code tokenizes with F.gumbel_softmax(logits, tau, hard=True): one-hot argmax of
    softmax((z + g) / tau) forward, that softmax's gradient backward. Same seed, same sample."""
    m = ovis(tokenize="gumbel", temperature=tau).train()
    z = m.logits(_pixels(world)).detach().requires_grad_()
    torch.manual_seed(7)
    p, _ = m.probabilities(z)
    torch.manual_seed(7)
    want = F.gumbel_softmax(z.float(), tau=tau, hard=True)
    assert torch.equal(p.argmax(-1), want.argmax(-1))
    torch.testing.assert_close(p, want, rtol=0, atol=1e-6)
    w = torch.randn_like(p)
    (g_p,) = torch.autograd.grad((p * w).sum(), z)
    (g_want,) = torch.autograd.grad((want * w).sum(), z)
    torch.testing.assert_close(g_p, g_want, rtol=1e-5, atol=1e-7)
    torch.manual_seed(7)
    assert torch.equal(m.probabilities(z)[0], p)  # seeded: the same draw again


def test_gumbel_samples_follow_softmax_of_the_logits_whatever_the_temperature(ovis):
    """Gumbel-max: argmax(z + g) is distributed as softmax(z); tau only shapes the gradient. (Noise added after
    dividing by tau, softmax(z / tau + g), would sample from softmax(z / tau) instead.)"""
    m = ovis(tokenize="gumbel", table_size=6, temperature=3.0).train()
    row = torch.tensor([2.0, 0.0, -1.0, 1.0])
    torch.manual_seed(0)
    p, _ = m.probabilities(row.expand(1, 40000, 4))
    freq = p.detach()[0].mean(0)
    torch.testing.assert_close(freq, row.softmax(-1), rtol=0, atol=0.015)


def test_topk_straight_through_gradient_and_one_equals_st(ovis, world):
    x = _pixels(world)
    m1, mst = ovis(indexings=1), ovis(tokenize="st")
    assert torch.equal(m1.patch_distribution(x), mst.patch_distribution(x))
    m1.visual_tokens(x)[0].pow(2).sum().backward()
    assert m1.head[0].weight.grad.abs().sum() > 0


def test_gumbel_is_deterministic_at_eval(ovis, world):
    m = ovis(tokenize="gumbel").eval()
    x = _pixels(world)
    assert torch.equal(m.patch_distribution(x), m.patch_distribution(x))
    assert torch.equal(m.patch_distribution(x), ovis(tokenize="st").patch_distribution(x))


# ---- structure: raw last block, untied VTE and its init, knobs --------------------------------------------
def test_reads_raw_last_block_and_vte_is_untied(ovis, world, tiny_backbones):
    m = ovis()
    x = _pixels(world, 2)
    raw = tiny_backbones.cl(x, layers=[-1])[0]
    assert torch.allclose(m.features(x), raw)  # the backbone's own last block, CLS dropped, no final norm
    assert m.vision is not tiny_backbones.cl
    wte = m.lm.get_input_embeddings().weight
    assert m.vte.weight.data_ptr() != wte.data_ptr()
    assert m.vte.weight.shape == (m.knobs.table_size, m.d_lm)
    assert m.head[0].bias is None and isinstance(m.head[1], torch.nn.LayerNorm)
    n = ovis(vte_init="normal", table_size=4096).vte.weight.detach()
    assert abs(float(n.std()) - 1.0) < 0.05 and abs(float(n.mean())) < 0.05
    w = ovis(vte_init="wte", table_size=4096).vte.weight.detach()
    assert abs(float(w.std()) - float(wte.std())) < 0.05 * float(wte.std())


def test_reinit_last_block(ovis, tiny_backbones):
    m = ovis(vit="trained", reinit_last_block=True)
    last = m.vision.vit.blocks[-1]
    orig = tiny_backbones.cl.vit.blocks[-1]
    assert not torch.equal(last.attn.qkv.weight, orig.attn.qkv.weight)
    assert torch.equal(m.vision.vit.blocks[0].attn.qkv.weight, tiny_backbones.cl.vit.blocks[0].attn.qkv.weight)
    assert (last.attn.qkv.bias == 0).all()


def test_knob_errors(tiny_backbones, smoke_budget):
    with pytest.raises(ValueError, match=r"indexings.*top-k larger than the table.*table_size.*= 16"):
        build("ovis", tiny_backbones, smoke_budget, {"table_size": 16, "indexings": 17})
    with pytest.raises(ValueError, match=r"tokenize.*allowed values.*softmax.*gumbel.*st"):
        build("ovis", tiny_backbones, smoke_budget, {"tokenize": "argmax"})
    with pytest.raises(ValueError, match=r"temperature.*> 0"):
        build("ovis", tiny_backbones, smoke_budget, {"temperature": 0.0})
    with pytest.raises(ValueError, match=r"table_size"):
        build("ovis", tiny_backbones, smoke_budget, {"table_size": 2})
    for k in (16, 15):  # only K - 2 = 14 entries exist: k = K or K - 1 would be silently dense
        with pytest.raises(ValueError, match=r"indexings.*is %d.*table's 14 entries.*allowed values: 0 \(dense\) "
                                             r"or 1\.\.14" % k):
            build("ovis", tiny_backbones, smoke_budget, {"table_size": 16, "indexings": k})
    build("ovis", tiny_backbones, smoke_budget, {"table_size": 16, "indexings": 14})  # k = K - 2: every entry
    with pytest.raises(ValueError, match=r"temperature.*between 0\.01 and 100"):
        build("ovis", tiny_backbones, smoke_budget, {"temperature": 1e-300})


# ---- stages: only the LM loss; frozen parameters get no gradient -----------------------------------------
@pytest.mark.parametrize("vit", ["frozen", "trained"])
def test_stages_shape(ovis, smoke_budget, vit):
    m = ovis(vit=vit)
    st = m.stages()
    assert [s.task for s in st] == ["describe", "describe", "qa"]
    assert abs(sum(s.share for s in st) - 1) < 1e-9 and all(s.loss == "lm" for s in st)
    block, vision = ((f"vision.vit.blocks.{m.vision.depth - 1}",), ("vision",)) if vit == "trained" else ((), ())
    assert st[0].trainable == (*block, "head", "vte") and st[1].trainable == (*vision, "head", "vte")
    assert st[2].trainable == (*vision, "head", "vte", "lm") and st[2].lr["lm"] == smoke_budget.llm_lr


@pytest.mark.parametrize("vit", ["frozen", "trained"])
@pytest.mark.parametrize("stage_index", [0, 1, 2])
def test_frozen_parameters_get_no_gradient(ovis, world, stage_index, vit):
    m = ovis(vit=vit)
    st = m.stages()[stage_index]
    set_trainable(m, st.trainable)
    b = world.batch(st.task, "train", 0, 4)
    getattr(m, f"loss_{st.loss}")(b).backward()
    trainable = {id(p) for n in st.trainable for p in m.get_submodule(n).parameters()}
    assert trainable
    for name, p in m.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


# ---- diagnostics and an end-to-end smoke run ---------------------------------------------------------------
def test_diagnostics(ovis, batch):
    m = ovis(table_size=64)
    d = m.diagnostics(batch)
    assert 0 < d["ovis_patch_entropy"] <= math.log(64 - N_IND) + 1e-4
    assert math.isclose(d["ovis_effective_entries"], math.exp(d["ovis_patch_entropy"]), rel_tol=0.5)
    assert 0 < d["ovis_table_usage"] <= 1 and 0 < d["ovis_frac_entries_gt_1e-4"] <= 1
    hard = ovis(table_size=64, tokenize="st").diagnostics(batch)
    assert hard["ovis_patch_entropy"] == 0 and hard["ovis_effective_entries"] == 1
    assert hard["ovis_entries_gt_1e-4"] == 1


def test_smoke_run_end_to_end():
    from vlmlab.runs import RunConfig, run

    e = run(RunConfig.from_params(arch="ovis", budget="smoke", references=False), progress=False)
    r = e.record
    for split in ("test", "compositional"):
        assert all(math.isfinite(v) for v in r["metrics"][split].values())
    for k in ("ovis_patch_entropy", "ovis_effective_entries", "ovis_frac_entries_gt_1e-4", "ovis_table_usage",
              "answer_to_image_attention_mass"):
        assert math.isfinite(r["diagnostics"][k]), k
    assert [s["name"] for s in r["stages"]] == ["s1_vte", "s2_tokenizer", "s3_instruct"]


def test_frozen_vit_default_trains_no_vision_parameter_and_qa_share_sets_the_vqa_steps(ovis, world, smoke_budget):
    m = ovis()  # vit="frozen" and qa_share=0.7 are the defaults
    st = m.stages()
    assert [s.share for s in st] == pytest.approx([0.18, 0.12, 0.7])
    assert [s.share for s in ovis(qa_share=0.5).stages()] == pytest.approx([0.3, 0.2, 0.5])
    for s in st:
        assert not any(n.startswith("vision") for n in s.trainable)
        set_trainable(m, s.trainable)
        assert not any(p.requires_grad for p in m.vision.parameters())
    with pytest.raises(ValueError, match=r"reinit_last_block.*vit'='trained'"):
        ovis(reinit_last_block=True)
    with pytest.raises(ValueError, match=r"qa_share.*between 0\.1 and 0\.9"):
        ovis(qa_share=1.0)
