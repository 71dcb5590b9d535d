"""LLaViT: fidelity checks of its three modifications (visual QKV, bidirectional visual attention, global and
local features), stages and freezing, knobs, diagnostics and an end-to-end smoke run. Tiny random-weight backbones; "unchanged" means bit-for-bit or within 1e-6."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from vlmlab.archs import build
from vlmlab.archs.llavit import LLaViT, feature_blocks
from vlmlab.train import set_trainable, train_stages

SAME = dict(atol=1e-6, rtol=0)


# ---- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deep_backbones(tiny_backbones, world, smoke_budget):
    """The tiny backbones with a 4-block CL ViT (the default budget's depth), so 'both' reads three blocks."""
    from vlmlab.backbones.pretrain import new_vision_encoder

    torch.manual_seed(1)
    cl = new_vision_encoder(world, dataclasses.replace(smoke_budget, vit_depth=4)).eval()
    return dataclasses.replace(tiny_backbones, cl=cl)


@pytest.fixture(scope="module")
def one_layer_backbones(tiny_backbones, world, smoke_budget):
    """A single-layer LLM: effects cannot travel through a second layer (fidelity check 3 is per layer)."""
    from vlmlab.backbones.pretrain import make_lm

    torch.manual_seed(2)
    tok = world.tokenizer
    lm = make_lm(len(tok), dataclasses.replace(smoke_budget, lm_layers=1), tok.pad_token_id, tok.bos_token_id,
                 tok.eos_token_id).eval()
    return dataclasses.replace(tiny_backbones, lm=lm)


@pytest.fixture(scope="module")
def bias_gqa_backbones(tiny_backbones):
    """An LLM with QKV biases (as Qwen2.5) and grouped KV heads (d_kv < d_q), for the copy and overhead checks."""
    from transformers import LlamaForCausalLM

    cfg = copy.deepcopy(tiny_backbones.lm.config)
    cfg.attention_bias = True
    cfg.num_key_value_heads = 1
    torch.manual_seed(3)
    lm = LlamaForCausalLM(cfg).eval()
    for n, p in lm.named_parameters():
        if n.endswith("bias"):
            torch.nn.init.normal_(p, std=0.5)  # nonzero biases, so copying them is visible
    return dataclasses.replace(tiny_backbones, lm=lm)


def logits(m, inp, emb=None):
    """LLM logits [B, L, V] for prepared inputs (optionally with replaced input embeddings)."""
    inp = dict(inp) if emb is None else dict(inp, inputs_embeds=emb)
    with torch.no_grad():
        return m.run_lm(inp).logits


def changed(a, b):
    return not torch.allclose(a, b, **SAME)


def vis_pos(inp, row=0):
    return inp["visual_mask"][row].nonzero().flatten()


# ---- 1. bidirectional block ---------------------------------------------------------------------------------
def test_bidirectional_block(tiny_backbones, smoke_budget, batch):
    m = build("llavit", tiny_backbones, smoke_budget)
    assert m.attention == "bidirectional"  # the default is the paper's
    inp = m.build_inputs(batch)
    h0 = logits(m, inp)[0]
    pos = vis_pos(inp)
    v1, v3 = int(pos[0]), int(pos[-1])
    assert bool(inp["visual_mask"][0, v1:v3 + 1].all())

    emb = inp["inputs_embeds"].clone()
    emb[0, v3] += 1.0  # perturb the last patch
    h = logits(m, inp, emb)[0]
    assert changed(h[v1], h0[v1])  # the first patch sees the last one
    assert torch.allclose(h[:v1], h0[:v1], **SAME)  # text before the image does not

    t2 = v3 + 3  # a text token after the image
    assert bool(inp["attention_mask"][0, t2]) and not bool(inp["visual_mask"][0, t2])
    emb = inp["inputs_embeds"].clone()
    emb[0, t2] += 1.0
    h = logits(m, inp, emb)[0]
    assert torch.allclose(h[:t2], h0[:t2], **SAME)  # nothing before t2 moves
    assert changed(h[t2], h0[t2])

    emb = inp["inputs_embeds"].clone()
    emb[0, 1] += 1.0  # s1: a text token before the image
    h = logits(m, inp, emb)[0]
    assert all(changed(h[p], h0[p]) for p in pos.tolist())  # every patch sees it
    assert torch.allclose(h[0], h0[0], **SAME)

    # control: under causal attention the first patch cannot see the last
    c = build("llavit", tiny_backbones, smoke_budget, {"attention": "causal"})
    c0 = logits(c, inp)[0]
    emb = inp["inputs_embeds"].clone()
    emb[0, v3] += 1.0
    assert torch.allclose(logits(c, inp, emb)[0][:v3], c0[:v3], **SAME)


# ---- 2. interleaving: two images in one sequence -----------------------------------------------------------
def _two_image_inputs(m, rows=1, shift=(0,), seed=0):
    """Hand-built LLM inputs ``a A1 A2 b B1 B2 c`` (two image spans), each row shifted right by ``shift[r]`` text
    tokens (the routing must follow the per-sample mask, not absolute positions)."""
    g = torch.Generator().manual_seed(seed)
    L = 7 + max(shift)
    emb = torch.randn(rows, L, m.d_lm, generator=g)
    vm = torch.zeros(rows, L, dtype=torch.bool)
    am = torch.ones(rows, L, dtype=torch.long)
    for r in range(rows):
        s = shift[r]
        vm[r, [s + 1, s + 2, s + 4, s + 5]] = True
        am[r, s + 7:] = 0  # right padding after c
    return {"inputs_embeds": emb, "visual_mask": vm, "attention_mask": am}


def test_interleaved_images_mask_and_routing(tiny_backbones, smoke_budget):
    m = build("llavit", tiny_backbones, smoke_budget)
    inp = _two_image_inputs(m)
    want = torch.tensor([  # the per-image block rule of vlmlab.attention, rows = queries: a A1 A2 b B1 B2 c
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m.allowed(inp)[0], want)

    a, A1, A2, b, B1, B2, c = range(7)
    h0 = logits(m, inp)[0]
    for p in (B1, B2):  # perturbing any token of image B
        emb = inp["inputs_embeds"].clone()
        emb[0, p] += 1.0
        h = logits(m, inp, emb)[0]
        assert torch.allclose(h[[a, A1, A2, b]], h0[[a, A1, A2, b]], **SAME)  # never reaches a, A, b
        assert changed(h[B1 if p == B2 else B2], h0[B1 if p == B2 else B2])  # B is one bidirectional block
        assert changed(h[c], h0[c])
    emb = inp["inputs_embeds"].clone()
    emb[0, A2] += 1.0
    h = logits(m, inp, emb)[0]
    assert changed(h[A1], h0[A1]) and changed(h[b], h0[b]) and changed(h[B1], h0[B1])
    assert torch.allclose(h[a], h0[a], **SAME)

    # both images go through the visual QKV: changing W_Q^vis moves A and B, never a, b, c (layer 0 only sees it
    # at visual rows; the last layer's text rows then see changed visual states, so compare at layer 1)
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        for twins in m2.visual_qkv:
            twins["q"].weight.add_(0.5 * torch.randn_like(twins["q"].weight))
    with m.modality(inp["visual_mask"]), m2.modality(inp["visual_mask"]), torch.no_grad():
        mask = m.lm_attention_mask(inp, torch.float32)
        s0 = m.lm.model(inputs_embeds=inp["inputs_embeds"], attention_mask=mask, output_hidden_states=True)
        s1 = m2.lm.model(inputs_embeds=inp["inputs_embeds"], attention_mask=mask, output_hidden_states=True)
    h0, h1 = s0.hidden_states[1][0], s1.hidden_states[1][0]  # after LLM layer 0
    assert all(changed(h1[p], h0[p]) for p in (A1, A2, B1, B2))
    assert torch.allclose(h1[[a, b, c]], h0[[a, b, c]], **SAME)

    # per-sample routing: rows whose images sit at different absolute positions, batched, give each row's own
    # single-row result (a position-based router would route row 1 with row 0's positions)
    two = _two_image_inputs(m, rows=2, shift=(0, 2), seed=1)
    both = logits(m, two)
    for r in range(2):
        one = {k: v[r:r + 1] for k, v in two.items()}
        valid = two["attention_mask"][r].bool()
        assert torch.allclose(both[r][valid], logits(m, one)[0][valid], atol=1e-5, rtol=0)

    # the eager path (used by the attention diagnostics) gives the same result as SDPA under this mask
    impl = m.lm.config._attn_implementation
    m.lm.set_attn_implementation("eager")
    try:
        eager = logits(m, inp)
    finally:
        m.lm.set_attn_implementation(impl)
    assert torch.allclose(eager, logits(m, inp), atol=1e-5, rtol=0)


# ---- 3. QKV routing, one layer ------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["q", "k", "v"])
def test_qkv_routing_single_layer(one_layer_backbones, smoke_budget, batch, key):
    m = build("llavit", one_layer_backbones, smoke_budget)
    assert len(m.lm.model.layers) == 1
    inp = m.build_inputs(batch)
    h0 = logits(m, inp)
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        w = m2.visual_qkv[0][key].weight
        w.add_(0.5 * torch.randn_like(w))
    h = logits(m2, inp)
    vm = inp["visual_mask"]
    valid = inp["attention_mask"].bool()
    first = vm.float().argmax(1)  # [B] first visual position
    L = vm.shape[1]
    before = torch.arange(L)[None] < first[:, None]
    after = ~before & ~vm & valid
    moved = (h - h0).abs().amax(-1) > 1e-6  # [B, L]
    assert bool(moved[vm].all())  # every visual position changes
    assert not bool(moved[before].any())  # text before the image never does
    if key == "q":
        assert not bool(moved[after].any())  # W_Q^vis: visual queries only
    else:
        assert bool(moved[after].all())  # W_K^vis / W_V^vis: later text reads visual keys/values

    # the text weights route the other way: changing W^text never moves a visual row's query (W_Q) ...
    if key == "q":
        m3 = copy.deepcopy(m)
        with torch.no_grad():
            w = m3.lm.model.layers[0].self_attn.q_proj.weight
            w.add_(0.5 * torch.randn_like(w))
        moved = (logits(m3, inp) - h0).abs().amax(-1) > 1e-6
        text = (before | after)[:, 1:]  # position 0 attends only to itself: its query cannot matter
        assert not bool(moved[vm].any()) and bool(moved[:, 1:][text].all())


def test_text_only_input_gives_exact_zero_visual_gradients(one_layer_backbones, smoke_budget, world):
    m = build("llavit", one_layer_backbones, smoke_budget)
    st = m.stages()[1]
    set_trainable(m, st.trainable)
    b = world.batch("qa", "train", 0, 4, with_images=False)
    assert "pixel_values" not in b
    m.loss_lm(b).backward()
    for twins in m.visual_qkv:
        for lin in twins.values():
            for p in lin.parameters():
                assert p.grad is not None and torch.count_nonzero(p.grad) == 0  # exact zero, not just small
    q = m.lm.model.layers[0].self_attn.q_proj.weight
    assert q.grad is not None and q.grad.abs().sum() > 0  # the text weights do learn


# ---- 4. init equivalence ------------------------------------------------------------------------------------
def test_init_equivalence_with_llava(tiny_backbones, smoke_budget, batch):
    llava = build("llava", tiny_backbones, smoke_budget)  # penultimate block, causal
    base = llava(batch)["logits"]

    def llavit(**k):
        m = build("llavit", tiny_backbones, smoke_budget, {"layers": "global", **k})
        m.connector.load_state_dict(llava.connector.state_dict())
        with torch.no_grad():
            return m(batch)

    # copy init + causal + global == LLaVA. Bit-for-bit here; the routed projection multiplies the visual rows as
    # a separate (smaller) matmul, which a BLAS may round differently in the last bit, hence the 1e-6 tolerance
    assert torch.allclose(llavit(attention="causal")["logits"], base, **SAME)
    assert torch.equal(llavit(attention="causal", visual_qkv="shared")["logits"], base)

    out = llavit()  # bidirectional on
    vm = out["visual_mask"]
    first = int(vm[0].nonzero()[0])
    assert bool((vm.float().argmax(1) == first).all())  # the world puts <img> at the same place in every row
    assert torch.equal(out["logits"][:, :first], base[:, :first])  # identical before the image
    diff = (out["logits"] - base).abs().amax(-1)  # [B, L]
    valid = out["attention_mask"].bool()
    assert bool((diff[:, first:][valid[:, first:]] > 0).all())  # visual rows and everything after differ
    assert bool((diff[:, first] > 0).all())

    # control: random visual QKV breaks the equivalence even under causal attention
    assert not torch.allclose(llavit(attention="causal", visual_qkv_init="random")["logits"], base, **SAME)


# ---- 5. feature concat --------------------------------------------------------------------------------------
def test_feature_concat_on_channels(deep_backbones, smoke_budget, batch):
    d = deep_backbones.cl.dim
    llava = build("llava", deep_backbones, smoke_budget)
    n_llava = llava.visual_tokens(batch["pixel_values"])[0].shape[1]
    for layers, blocks in (("both", [0, 1, 2]), ("global", [2]), ("local", [0]), ("0,3", [0, 3])):
        m = build("llavit", deep_backbones, smoke_budget, {"layers": layers})
        assert m.blocks == blocks
        assert m.connector[0].in_features == len(blocks) * d  # projector input = |L| * d_vit
        f = m.features(batch["pixel_values"])
        singles = m.vision(batch["pixel_values"], layers=blocks)
        for i, s in enumerate(singles):  # block i's features sit in channel slice i, in ascending block order
            assert torch.equal(f[..., i * d:(i + 1) * d], s)
        vis, _ = m.visual_tokens(batch["pixel_values"])
        assert vis.shape == (len(batch["input_ids"]), n_llava, m.d_lm)  # token count unchanged
    # the global block is LLaVA's penultimate one
    g = build("llavit", deep_backbones, smoke_budget, {"layers": "global"})
    assert torch.equal(g.features(batch["pixel_values"]), llava.features(batch["pixel_values"]))
    # the paper's blocks 5/15/23 of 24 (hidden_states numbering) scaled by depth
    assert feature_blocks("both", 24) == [4, 14, 22]
    assert feature_blocks("both", 8) == [1, 4, 6]
    assert feature_blocks("both", 4) == [0, 1, 2]
    assert feature_blocks("both", 2) == [0]  # the smoke ViT: all three collapse onto block 0
    with pytest.raises(ValueError, match=r"layers.*4 blocks"):
        build("llavit", deep_backbones, smoke_budget, {"layers": "0,7"})


# ---- 6. parameter overhead ----------------------------------------------------------------------------------
def test_parameter_overhead_formula(bias_gqa_backbones, smoke_budget):
    cfg = bias_gqa_backbones.lm.config
    d, hd = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads
    d_q, d_kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    assert d_kv < d_q
    formula = cfg.num_hidden_layers * (d * d_q + 2 * d * d_kv + d_q + 2 * d_kv)  # §3.2, biases included
    m = build("llavit", bias_gqa_backbones, smoke_budget, {"layers": "global"})
    assert sum(p.numel() for p in m.visual_qkv.parameters()) == formula
    shared = build("llavit", bias_gqa_backbones, smoke_budget, {"layers": "global", "visual_qkv": "shared"})
    assert m.param_counts()["total"] - shared.param_counts()["total"] == formula  # no parameter counted twice
    llava = build("llava", bias_gqa_backbones, smoke_budget)
    assert shared.param_counts()["total"] == llava.param_counts()["total"]
    # the visual weights start as copies, biases included, and are distinct tensors
    for layer, twins in zip(m.lm.model.layers, m.visual_qkv):
        for key in "qkv":
            text, vis = getattr(layer.self_attn, f"{key}_proj"), twins[key]
            assert torch.equal(vis.weight, text.weight) and torch.equal(vis.bias, text.bias)
            assert vis.weight.data_ptr() != text.weight.data_ptr()
    # and the LLM's state-dict names stay LLaVA's (no shared tensors: safetensors-savable)
    lm_keys = {k for k in m.state_dict() if k.startswith("lm.")}
    assert lm_keys == {k for k in llava.state_dict() if k.startswith("lm.")}
    from safetensors.torch import save
    save({k: v.contiguous() for k, v in m.state_dict().items()})


# ---- 7. KV cache ---------------------------------------------------------------------------------------------
def test_kv_cache_image_chunk_prefill(tiny_backbones, smoke_budget, batch):
    m = build("llavit", tiny_backbones, smoke_budget)
    inp = m.build_inputs(batch)
    full = logits(m, inp)
    L = full.shape[1]
    valid = inp["attention_mask"].bool()
    # prefix + image prefilled as one chunk, then text decoded one token at a time
    cached = m.cached_logits(inp)
    assert torch.allclose(cached[valid], full[valid], atol=1e-5, rtol=0)
    # prefix text, then the image as its own chunk, then text token by token: same
    first, last = int(vis_pos(inp)[0]), int(vis_pos(inp)[-1])
    chunks = [first, last + 1 - first] + [1] * (L - last - 1)
    assert torch.allclose(m.cached_logits(inp, chunks)[valid], full[valid], atol=1e-5, rtol=0)
    # the pitfall: feeding the image one token at a time silently makes it causal
    one_by_one = m.cached_logits(inp, [1] * L)
    assert not torch.allclose(one_by_one[:, first], full[:, first], atol=1e-5, rtol=0)
    causal = build("llavit", tiny_backbones, smoke_budget, {"attention": "causal"})
    assert torch.allclose(causal.cached_logits(inp, [1] * L)[valid], logits(causal, inp)[valid], atol=1e-5, rtol=0)


# ---- stages, freezing, knobs, diagnostics -------------------------------------------------------------------
@pytest.mark.parametrize("stage_index", [0, 1])
def test_frozen_parameters_get_no_gradient(tiny_backbones, smoke_budget, world, stage_index):
    m = build("llavit", tiny_backbones, smoke_budget)
    st = m.stages()[stage_index]
    assert st.trainable == (("connector", "visual_qkv") if stage_index == 0 else ("connector", "lm", "visual_qkv"))
    assert st.task == ("describe", "qa")[stage_index]
    set_trainable(m, st.trainable)
    b = world.batch(st.task, "train", 0, 4)
    getattr(m, f"loss_{st.loss}")(b).backward()
    trainable = {id(p) for n in st.trainable for p in m.get_submodule(n).parameters()}
    # the last LLM layer's W_Q^vis only shapes that layer's outputs at visual rows, which nothing reads (no later
    # layer; visual positions carry no label): its gradient is exactly zero, by construction (paper's too)
    dead = {f"visual_qkv.{len(m.lm.model.layers) - 1}.q.weight", f"visual_qkv.{len(m.lm.model.layers) - 1}.q.bias"}
    for name, p in m.named_parameters():
        if name in dead:
            assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
        elif id(p) in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert len(list(m.visual_qkv.parameters())) == 3 * len(m.lm.model.layers)


def test_stage_learning_rates_and_training_moves_visual_qkv(tiny_backbones, smoke_budget, world):
    m = build("llavit", tiny_backbones, smoke_budget)
    b = smoke_budget
    s0, s1 = m.stages()
    assert s0.lr == {"visual_qkv": b.llm_lr} and s1.lr == {"lm": b.llm_lr, "visual_qkv": b.llm_lr}
    assert math.isclose(s0.share + s1.share, 1.0)
    text_before = copy.deepcopy(m.lm.state_dict())
    from vlmlab.runs import make_data

    train_stages(m, [dataclasses.replace(s0, share=2 / b.vlm_steps)], make_data(world, 4), b,
                 device=torch.device("cpu"), progress=False)
    drift = m.visual_qkv_drift()
    assert all(v > 0 for v in drift.values())  # the visual QKV moved away from the text QKV ...
    assert all(torch.equal(v, m.lm.state_dict()[k]) for k, v in text_before.items())  # ... the LLM did not
    assert m.stages()[0].trainable == ("connector", "visual_qkv")
    only_sft = build("llavit", tiny_backbones, smoke_budget, {"visual_qkv_stages": "instruct"})
    assert only_sft.stages()[0].trainable == ("connector",)
    shared = build("llavit", tiny_backbones, smoke_budget, {"visual_qkv": "shared"})
    assert [s.trainable for s in shared.stages()] == [("connector",), ("connector", "lm")]


def test_knob_errors(tiny_backbones, smoke_budget):
    with pytest.raises(ValueError, match=r"attention.*allowed values.*causal.*bidirectional"):
        build("llavit", tiny_backbones, smoke_budget, {"attention": "sideways"})
    with pytest.raises(ValueError, match=r"visual_qkv.*allowed values.*separate.*shared"):
        build("llavit", tiny_backbones, smoke_budget, {"visual_qkv": "tied"})
    with pytest.raises(ValueError, match=r"layers.*'global', 'local', 'both'"):
        build("llavit", tiny_backbones, smoke_budget, {"layers": "everything"})
    with pytest.raises(ValueError, match=r"visual_qkv_init.*visual_qkv='separate'.*allowed value is 'copy'"):
        build("llavit", tiny_backbones, smoke_budget, {"visual_qkv": "shared", "visual_qkv_init": "random"})
    with pytest.raises(ValueError, match=r"visual_qkv_stages.*visual_qkv='separate'"):
        build("llavit", tiny_backbones, smoke_budget, {"visual_qkv": "shared", "visual_qkv_stages": "instruct"})
    m = build("llavit", tiny_backbones, smoke_budget)
    with pytest.raises(RuntimeError, match="modality mask"):  # calling the routed LLM without a mask is an error
        m.lm(input_ids=torch.tensor([[1, 2, 3]]))


def test_diagnostics(tiny_backbones, smoke_budget, batch):
    bidir = build("llavit", tiny_backbones, smoke_budget)
    d = bidir.diagnostics(batch)
    n = bidir.vision.grid ** 2
    assert len(d["answer_to_image_attention_map"]) == n and 0 < d["answer_to_image_attention_mass"] <= 1
    assert d["visual_to_later_visual_attention_mass"] > 0.05
    assert d["visual_qkv_relative_diff"] == {"q": 0.0, "k": 0.0, "v": 0.0}  # copy init
    causal = build("llavit", tiny_backbones, smoke_budget, {"attention": "causal"})
    assert causal.diagnostics(batch)["visual_to_later_visual_attention_mass"] == 0.0
    with torch.no_grad():
        bidir.visual_qkv[0]["k"].weight.mul_(2.0)
    drift = bidir.visual_qkv_drift()
    assert drift["q"] == 0.0 and math.isclose(drift["k"], 1.0 / len(bidir.visual_qkv), rel_tol=1e-5)


# ---- end to end ----------------------------------------------------------------------------------------------
def test_smoke_run_end_to_end():
    from vlmlab.runs import RunConfig, run

    e = run(RunConfig.from_params(arch="llavit", budget="smoke", references=False), progress=False)
    rec = e.record
    for split in ("test", "compositional"):
        assert all(math.isfinite(v) for v in rec["metrics"][split].values())
    diag = rec["diagnostics"]
    for key in ("answer_to_image_attention_mass", "visual_to_later_visual_attention_mass",
                "visual_qkv_relative_diff", "visual_qkv_relative_diff_mean", "feature_blocks"):
        assert key in diag, key
    assert diag["visual_qkv_relative_diff_mean"] > 0  # trained: the visual QKV moved
    assert isinstance(e.model, LLaViT)
