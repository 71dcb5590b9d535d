"""HoVLE fidelity checks on random-weight tiny backbones, plus knobs and a smoke run.

1 causality in both stacks, 2 token counts, 3 shuffle locality, 4 distillation-loss properties, 5 freezing per
stage, 6 bypass of the LLM's input table, 7 cache consistency of two-cache incremental decoding.
"""
from __future__ import annotations

import math

import pytest
from conftest import assert_only_trainable_get_gradients, run_stage_backward
import torch

from vlmlab.archs import build
from vlmlab.archs.hovle import SHARES, distill_loss_fn, pixel_shuffle
from vlmlab.train import set_trainable

CELL = 5  # the teacher's patch 5 = the 16-px cell at (row 1, col 1) of the 4x4 grid


def _model(bb, budget, **knobs):
    torch.manual_seed(0)
    return build("hovle", bb, budget, knobs).eval()


def _perturb_cell(pixels, cell, grid, size):
    """Change the pixels of one ViT cell (raster index) of every image."""
    r, c = divmod(cell, grid)
    p = pixels.clone()
    p[:, :, r * size:(r + 1) * size, c * size:(c + 1) * size] += 0.5
    return p


# ---- 2. token counts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", ["pre", "post"])
def test_token_counts(tiny_backbones, smoke_budget, batch, shuffle):
    m = _model(tiny_backbones, smoke_budget, pixel_shuffle=shuffle)
    vit = tiny_backbones.cl
    assert m.embed.patch == tiny_backbones.cl.patch // 2  # 8-px module patches
    assert m.embed.grid == 2 * vit.grid  # an 8x8 grid in the 64-px world
    n_patch = m.embed.patches(batch["pixel_values"]).shape[1]
    assert n_patch == (vit.img_size // m.embed.patch) ** 2 == 4 * vit.grid ** 2  # 64 before the shuffle
    assert m.embed.shuffle(m.embed.patches(batch["pixel_values"])).shape[1] == vit.grid ** 2  # 16 after
    inp = m.build_inputs(batch)
    L = batch["input_ids"].shape[1]
    n = vit.grid ** 2
    assert m.teacher_tokens(batch["pixel_values"]).shape[1] == n  # token-aligned with the teacher
    # LLM sequence: `<img>` marker + 16 image slots per image in both modes
    assert inp["inputs_embeds"].shape[1] == L + n
    assert inp["visual_mask"].sum(1).tolist() == [n] * len(batch["input_ids"])
    assert inp["marker_mask"].sum(1).tolist() == [1] * len(batch["input_ids"])
    # module sequence: 16 slots ("pre") or the 64 un-shuffled patches ("post", HoVLE-HD)
    assert inp["module"]["inputs"].shape[1] == L + (n if shuffle == "pre" else n_patch)
    assert inp["module"]["visual_mask"].sum(1).unique().tolist() == [n if shuffle == "pre" else n_patch]
    # labels/answers survive the merge
    rows = torch.arange(len(inp["labels"]))
    assert torch.equal(inp["labels"][rows, inp["answer_pos"]], batch["labels"][rows, batch["answer_pos"]])
    assert int((inp["labels"] != -100).sum()) == int((batch["labels"] != -100).sum())
    assert (inp["labels"][inp["visual_mask"] | inp["marker_mask"]] == -100).all()


# ---- 3. shuffle locality ------------------------------------------------------------------------------------
def test_pixel_shuffle_locality_arange_encoded():
    g, d = 8, 3
    R, C = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    x = torch.stack([R.flatten(), C.flatten(), torch.arange(g * g)], -1).float()[None]  # [1, 64, 3]: (row, col, k)
    y = pixel_shuffle(x, g).view(1, (g // 2) ** 2, 4, d)  # [1, 16, 4 sub-patches, 3]
    for k in range(16):
        r, c = divmod(k, g // 2)  # token k = 4r + c
        got = {(int(a), int(b)) for a, b in y[0, k, :, :2].tolist()}
        assert got == {(2 * r + dy, 2 * c + dx) for dy in (0, 1) for dx in (0, 1)}, k
        assert [tuple(map(int, t)) for t in y[0, k, :, :2].tolist()] == [
            (2 * r, 2 * c), (2 * r, 2 * c + 1), (2 * r + 1, 2 * c), (2 * r + 1, 2 * c + 1)]


def test_perturbing_one_cell_moves_only_its_image_token(tiny_backbones, smoke_budget, batch):
    m = _model(tiny_backbones, smoke_budget)
    pix = batch["pixel_values"]
    base, _ = m.visual_tokens(pix)
    moved, _ = m.visual_tokens(_perturb_cell(pix, CELL, tiny_backbones.cl.grid, tiny_backbones.cl.patch))
    changed = (moved - base).abs().amax(dim=(0, 2)) > 1e-6  # [16]
    assert changed.nonzero().flatten().tolist() == [CELL]


# ---- 1. causality in both stacks ----------------------------------------------------------------------------
def _module_out(m, batch):
    return m.build_inputs(batch)["module"]["outputs"][0]  # [L_module, d]


@pytest.mark.parametrize("shuffle", ["pre", "post"])
def test_module_causal_over_patches(tiny_backbones, smoke_budget, batch, shuffle):
    """Perturbing patch 5's pixels leaves every module output before its first slot unchanged (patch 0 too)."""
    m = _model(tiny_backbones, smoke_budget, pixel_shuffle=shuffle)
    b2 = dict(batch, pixel_values=_perturb_cell(batch["pixel_values"], CELL, tiny_backbones.cl.grid,
                                                tiny_backbones.cl.patch))
    y0, y1 = _module_out(m, batch), _module_out(m, b2)
    slots = m.build_inputs(batch)["module"]["visual_mask"][0].nonzero().flatten()
    if shuffle == "pre":
        j = slots[CELL]
    else:  # the first 8-px patch of cell (1,1): module patch (2,2) of the 8x8 grid
        j = slots[2 * m.embed.grid + 2]
    assert j > slots[0]
    assert torch.allclose(y0[:j], y1[:j], atol=1e-6)  # includes image slot 0 (patch 0)
    assert not torch.allclose(y0[j], y1[j], atol=1e-4)
    assert not torch.allclose(y0[-1], y1[-1], atol=1e-4)  # later text sees the change


def test_module_causal_over_text(tiny_backbones, smoke_budget, batch):
    m = _model(tiny_backbones, smoke_budget)
    ids = batch["input_ids"].clone()
    L0 = int(batch["attention_mask"][0].sum())
    t = L0 - 3  # a question word after the image
    ids[0, t] = (ids[0, t] + 7) % len(tiny_backbones.tokenizer)
    y0, y1 = _module_out(m, batch), _module_out(m, dict(batch, input_ids=ids))
    j = t + m.n_image_tokens  # its position after the image span
    assert torch.allclose(y0[:j], y1[:j], atol=1e-6)
    assert not torch.allclose(y0[j], y1[j], atol=1e-4)


def test_llm_stack_causal_and_end_to_end(tiny_backbones, smoke_budget, batch):
    m = _model(tiny_backbones, smoke_budget)
    inp = m.build_inputs(batch)
    vpos = inp["visual_mask"][0].nonzero().flatten()
    h0 = m.lm.model(inputs_embeds=inp["inputs_embeds"], attention_mask=inp["attention_mask"]).last_hidden_state
    emb = inp["inputs_embeds"].clone()
    emb[0, vpos[CELL]] += 1.0
    h1 = m.lm.model(inputs_embeds=emb, attention_mask=inp["attention_mask"]).last_hidden_state
    assert torch.allclose(h0[0, : vpos[CELL]], h1[0, : vpos[CELL]], atol=1e-6)
    assert not torch.allclose(h0[0, vpos[CELL]], h1[0, vpos[CELL]], atol=1e-4)
    # both stacks together: logits before image token 5 ignore cell 5's pixels
    b2 = dict(batch, pixel_values=_perturb_cell(batch["pixel_values"], CELL, tiny_backbones.cl.grid,
                                                tiny_backbones.cl.patch))
    l0, l1 = m.forward(batch)["logits"][0], m.forward(b2)["logits"][0]
    assert torch.allclose(l0[: vpos[CELL]], l1[: vpos[CELL]], atol=1e-6)
    assert not torch.allclose(l0[vpos[CELL]:], l1[vpos[CELL]:], atol=1e-4)


def test_bidirectional_embed_attention_knob(tiny_backbones, smoke_budget, batch):
    """Not in the paper: within the image span, patch 0 sees patch 5; text before the image and the LLM don't."""
    m = _model(tiny_backbones, smoke_budget, embed_attention="bidirectional")
    b2 = dict(batch, pixel_values=_perturb_cell(batch["pixel_values"], CELL, tiny_backbones.cl.grid,
                                                tiny_backbones.cl.patch))
    y0, y1 = _module_out(m, batch), _module_out(m, b2)
    slots = m.build_inputs(batch)["module"]["visual_mask"][0].nonzero().flatten()
    assert not torch.allclose(y0[slots[0]], y1[slots[0]], atol=1e-4)  # patch 0 sees patch 5
    assert torch.allclose(y0[: slots[0]], y1[: slots[0]], atol=1e-6)  # text before the image (and `<img>`) don't
    # the LLM stays causal: its mask is the plain 2-D padding mask
    inp = m.build_inputs(batch)
    assert m.lm_attention_mask(inp, torch.float32).dim() == 2


# ---- 4. distillation loss -----------------------------------------------------------------------------------
def test_distill_loss_values_and_scale_invariance():
    torch.manual_seed(0)
    x, z = torch.randn(10, 16), torch.randn(10, 16)
    assert math.isclose(float(distill_loss_fn("neg_cosine", z, z)), -1.0, abs_tol=1e-6)  # unshifted: -1 at x = z
    for s in (0.1, 3.7, 50.0):
        assert math.isclose(float(distill_loss_fn("neg_cosine", s * x, z)), float(distill_loss_fn("neg_cosine", x, z)),
                            abs_tol=1e-6)
    assert float(distill_loss_fn("neg_cosine", -x, x)) == pytest.approx(1.0)
    for kind in ("mse", "smooth_l1"):
        assert float(distill_loss_fn(kind, z, z)) == 0.0
        assert float(distill_loss_fn(kind, 3.7 * x, z)) != pytest.approx(float(distill_loss_fn(kind, x, z)))


@pytest.mark.parametrize("which", ["both", "image", "text"])
def test_distill_loss_only_at_image_and_text_positions(tiny_backbones, smoke_budget, world, which):
    m = _model(tiny_backbones, smoke_budget, distill=which)
    b = world.batch("scene_lm", "train", 0, 4)  # Stage I's text corpus
    parts = m.distill_parts(b)
    x = parts["x"]
    x.retain_grad()
    kind = m.knobs.distill_loss
    total = 0.0
    if which in ("both", "image"):
        total = total + distill_loss_fn(kind, parts["x_img"].flatten(0, 1), parts["z_img"].flatten(0, 1))
    if which in ("both", "text"):
        total = total + distill_loss_fn(kind, parts["x_txt"], parts["z_txt"])
    total.backward()
    g = x.grad.abs().sum(-1)  # [B, L']
    inp = parts["inputs"]
    img, marker, pad = inp["visual_mask"], inp["marker_mask"], inp["attention_mask"] == 0
    text = ~img & ~marker & ~pad
    assert pad.any() and marker.any()
    assert (g[marker] == 0).all() and (g[pad] == 0).all()  # `<img>` and padding never count
    assert ((g[img] > 0).all() if which != "text" else (g[img] == 0).all())
    assert ((g[text] > 0).all() if which != "image" else (g[text] == 0).all())
    # the stage's own loss equals the recomputed one, and targets are frozen
    assert float(m.loss_distill(b).detach()) == pytest.approx(float(total.detach()), abs=1e-6)
    assert not parts["z_img"].requires_grad and not parts["z_txt"].requires_grad


def test_distill_targets_unpaired_and_context_free(tiny_backbones, smoke_budget, world):
    m = _model(tiny_backbones, smoke_budget)
    b = world.batch("scene_lm", "train", 0, 4)
    parts = m.distill_parts(b)
    # layout: "<bos> image : <img> [16 slots] scene : ..." -- the text corpus gets the inference prompt's image span
    tok = tiny_backbones.tokenizer
    ids = parts["inputs"]["input_ids"][0]
    assert tok.convert_ids_to_tokens(ids[:4].tolist()) == ["<bos>", "scene", ":", "<img>"]
    assert parts["inputs"]["visual_mask"][0, 4: 4 + m.n_image_tokens].all()
    assert torch.equal(ids[4 + m.n_image_tokens:], b["input_ids"][0, 1:])
    rolled = b["pixel_values"].roll(1, dims=0)
    assert torch.allclose(parts["z_img"], m.teacher_tokens(rolled))  # z_I of another sample's image
    assert not torch.allclose(parts["z_img"], m.teacher_tokens(b["pixel_values"]))
    ids = parts["inputs"]["input_ids"][parts["text_mask"]]
    assert torch.equal(parts["z_txt"], m.lm.get_input_embeddings().weight[ids])  # the LLM's row of the same id


def test_distillation_steps_raise_the_cosines(tiny_backbones, smoke_budget, world):
    """A real property of Stage I: a few optimiser steps on the loss move module outputs towards the targets."""
    m = _model(tiny_backbones, smoke_budget)
    params = set_trainable(m, ("embed",))
    opt = torch.optim.Adam(params, lr=1e-2)
    b = world.batch("describe", "train", 0, 4)
    with torch.no_grad():
        p0 = m.distill_parts(b)
        c0 = torch.cosine_similarity(p0["x_img"], p0["z_img"], dim=-1).mean()
    for _ in range(6):
        opt.zero_grad()
        m.loss_distill(b).backward()
        opt.step()
    with torch.no_grad():
        p1 = m.distill_parts(b)
        c1 = torch.cosine_similarity(p1["x_img"], p1["z_img"], dim=-1).mean()
    assert c1 > c0 + 0.3


# ---- 5. freezing per stage ----------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["teacher", "distill", "align", "instruct"])
def test_freezing_per_stage(tiny_backbones, smoke_budget, world, stage):
    m = _model(tiny_backbones, smoke_budget)
    m.train()
    st = {s.name: s for s in m.stages()}[stage]
    run_stage_backward(m, st, world)
    assert_only_trainable_get_gradients(m, st)
    trainable = {id(p) for n in st.trainable for p in m.get_submodule(n).parameters()}
    embed = {id(p) for p in m.embed.parameters()}
    lm = {n: p for n, p in m.lm.named_parameters()}
    teacher = {id(p) for p in m.teacher.parameters()}
    if stage == "teacher":
        assert trainable == teacher
    else:
        assert not trainable & teacher  # the teacher is frozen after its stage
        assert embed <= trainable  # patch embedding, position embedding, shuffle MLP, text table, layers
        assert m.embed.shuffle_mlp[0].weight.grad.abs().sum() > 0
    if stage in ("teacher", "distill", "align"):
        assert all(p.grad is None for p in lm.values())  # LLM frozen in Stage I/II
    else:  # Stage III: the whole LLM trains, except its input table, which HoVLE bypasses
        assert all(p.grad is not None for n, p in lm.items() if n != "model.embed_tokens.weight")
        assert lm["model.embed_tokens.weight"].grad is None


def test_stage_shares_and_trainable_sets(tiny_backbones, smoke_budget):
    names = {"both": ["teacher", "distill", "align", "instruct"], "image": ["teacher", "distill", "align", "instruct"],
             "text": ["distill", "align", "instruct"], "none": ["align", "instruct"]}
    for which, want in names.items():
        sts = _model(tiny_backbones, smoke_budget, distill=which).stages()
        assert [s.name for s in sts] == want
        assert sum(s.share for s in sts) == pytest.approx(1.0)
        assert sts[-1].share == SHARES["instruct"]  # instruction tuning gets the same steps in every ablation
        assert sts[-1].task == "qa"
        assert [s.task for s in sts[:-1]] == ["scene_lm" if s.name == "distill" else "describe" for s in sts[:-1]]
        assert all("teacher" not in s.trainable for s in sts if s.name != "teacher")


# ---- 6. bypass of the LLM's input embedding table -----------------------------------------------------------
def test_llm_input_table_is_bypassed(tiny_backbones, smoke_budget, batch):
    m = _model(tiny_backbones, smoke_budget)
    assert not m.lm.config.tie_word_embeddings  # the check assumes untied input/output embeddings (as InternLM2)
    before = m.forward(batch)["logits"]
    with torch.no_grad():
        m.lm.get_input_embeddings().weight.zero_()
    assert torch.equal(m.forward(batch)["logits"], before)
    with torch.no_grad():  # control: the module's own table does feed the LLM
        m.embed.text.weight.mul_(2.0)
    assert not torch.allclose(m.forward(batch)["logits"], before, atol=1e-4)


# ---- 7. cache consistency -----------------------------------------------------------------------------------
@pytest.mark.parametrize("knobs", [{}, {"pixel_shuffle": "post", "embed_attention": "bidirectional"},
                                   {"normalize_output": True}])
def test_two_cache_decoding_matches_full_forward(tiny_backbones, smoke_budget, world, knobs):
    m = _model(tiny_backbones, smoke_budget, **knobs)
    full = world.batch("qa", "test", 0, 3)
    for i in range(3):
        L = int(full["attention_mask"][i].sum())
        one = {k: full[k][i: i + 1, :L] for k in ("input_ids", "attention_mask", "labels")}
        one["pixel_values"] = full["pixel_values"][i: i + 1]
        ref = m.forward(one)["logits"][0]  # [L + 16, V]
        k = L - 4  # prefill the image and most of the prompt, then feed 4 tokens one by one
        pre = {kk: v[:, :k] for kk, v in one.items() if kk != "pixel_values"}
        pre["pixel_values"] = one["pixel_values"]
        logits, state = m.prefill(pre)
        n = m.n_image_tokens
        assert torch.allclose(logits[0], ref[: k + n], atol=1e-5)
        for t in range(k, L):
            step = m.decode_step(one["input_ids"][:, t: t + 1], state)[0]
            assert torch.allclose(step, ref[t + n], atol=1e-5), (i, t)


def test_generate_runs_greedy(tiny_backbones, smoke_budget, world):
    m = _model(tiny_backbones, smoke_budget)
    b = world.batch("qa", "test", 0, 1)
    b = {k: (v[:, : int(b["answer_pos"][0])] if k in ("input_ids", "attention_mask") else v) for k, v in b.items()}
    out = m.generate(b, max_new_tokens=3)
    assert out.shape == (1, 3)
    first = m.forward(b)["logits"][0, -1].argmax()
    assert int(out[0, 0]) == int(first)
    with pytest.raises(ValueError, match="unpadded"):
        m.prefill(world.batch("qa", "test", 0, 8))


# ---- knobs --------------------------------------------------------------------------------------------------
def test_init_and_normalisation_knobs(tiny_backbones, smoke_budget, batch):
    lm_table = tiny_backbones.lm.get_input_embeddings().weight
    assert torch.equal(_model(tiny_backbones, smoke_budget).embed.text.weight, lm_table)
    assert not torch.allclose(_model(tiny_backbones, smoke_budget, text_init="random").embed.text.weight, lm_table)
    m = _model(tiny_backbones, smoke_budget, layer_init="copy")
    for a, b in zip(m.embed.layers, tiny_backbones.lm.model.layers):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    m = _model(tiny_backbones, smoke_budget, normalize_output=True)
    inp = m.build_inputs(batch)
    norms = inp["inputs_embeds"].norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    for n_layers in (0, 1, 3):
        assert len(_model(tiny_backbones, smoke_budget, n_embed_layers=n_layers).embed.layers) == n_layers


def test_knob_errors(tiny_backbones, smoke_budget):
    with pytest.raises(ValueError, match=r"embed_attention.*n_embed_layers"):
        build("hovle", tiny_backbones, smoke_budget, {"embed_attention": "bidirectional", "n_embed_layers": 0})
    with pytest.raises(ValueError, match=r"pixel_shuffle.*n_embed_layers"):
        build("hovle", tiny_backbones, smoke_budget, {"pixel_shuffle": "post", "n_embed_layers": 0})
    n_lm = tiny_backbones.lm.config.num_hidden_layers
    with pytest.raises(ValueError, match=r"layer_init.*n_embed_layers"):
        build("hovle", tiny_backbones, smoke_budget, {"layer_init": "copy", "n_embed_layers": n_lm + 1})
    with pytest.raises(ValueError, match=r"distill_loss.*allowed values.*neg_cosine"):
        build("hovle", tiny_backbones, smoke_budget, {"distill_loss": "kl"})
    with pytest.raises(ValueError, match=r"n_embed_layers.*between 0 and 16"):
        build("hovle", tiny_backbones, smoke_budget, {"n_embed_layers": 17})
    with pytest.raises(TypeError, match=r"normalize_output.*bool"):
        build("hovle", tiny_backbones, smoke_budget, {"normalize_output": 1})


# ---- end to end ---------------------------------------------------------------------------------------------
def test_smoke_run_end_to_end():
    from vlmlab.runs import RunConfig, run

    e = run(RunConfig.from_params(arch="hovle", budget="smoke", references=False), progress=False)
    rec = e.record
    for split in ("test", "compositional"):
        assert all(math.isfinite(v) for v in rec["metrics"][split].values())
    assert [s["name"] for s in rec["stages"]] == ["teacher", "distill", "align", "instruct"]
    diag = rec["diagnostics"]
    for key in ("distill_cos_image", "distill_cos_text", "module_norm_image", "module_norm_text",
                "lm_embed_norm_text", "teacher_norm_image", "answer_to_image_attention_mass"):
        assert math.isfinite(diag[key]), key
    assert len(diag["distill_cos_image_map"]) == e.model.n_image_tokens


def test_stage_i_at_its_own_scale_runs_outside_the_vlm_budget(tiny_backbones, smoke_budget):
    from vlmlab.train import stage_plan

    base = _model(tiny_backbones, smoke_budget).stages()
    sts = _model(tiny_backbones, smoke_budget, teacher_steps=7, distill_steps=5, distill_batch=32).stages()
    assert [(s.steps, s.batch) for s in sts] == [(7, None), (5, 32), (None, None), (None, None)]
    # align and instruction tuning keep their steps: only Stage I changes
    assert stage_plan(sts, smoke_budget)[:2] == [7, 5]
    assert stage_plan(sts, smoke_budget)[2:] == stage_plan(base, smoke_budget)[2:]
    with pytest.raises(ValueError, match=r"distill_batch.*between 0 and 4096"):
        _model(tiny_backbones, smoke_budget, distill_batch=-1)
