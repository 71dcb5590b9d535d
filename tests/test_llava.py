"""The base VLM interface and the LLaVA baseline: splicing, stages and freezing, attention types, knobs."""
from __future__ import annotations

import pytest
from conftest import assert_only_trainable_get_gradients, run_stage_backward
import torch

from vlmlab.archs import build, splice


def test_splice_places_visual_tokens_at_placeholder():
    ids = torch.tensor([[1, 5, 9, 7, 0], [1, 9, 5, 5, 7]])  # 9 = placeholder
    text = ids.clone()
    vis = torch.tensor([[100, 101, 102], [200, 201, 202]])
    out = splice(text, ids, 9, vis)
    assert out.tolist() == [[1, 5, 100, 101, 102, 7, 0], [1, 200, 201, 202, 5, 5, 7]]


def test_build_inputs_lengths_and_labels(tiny_backbones, smoke_budget, batch):
    m = build("llava", tiny_backbones, smoke_budget)
    inp = m.build_inputs(batch)
    n_vis = m.vision.grid ** 2
    L = batch["input_ids"].shape[1]
    assert inp["inputs_embeds"].shape[1] == L - 1 + n_vis
    assert (inp["labels"][inp["visual_mask"]] == -100).all()
    assert int(inp["visual_mask"].sum(1).unique()) == n_vis
    # supervised-token count is unchanged by the merge
    assert int((inp["labels"] != -100).sum()) == int((batch["labels"] != -100).sum())
    # the answer position still points at the answer token
    rows = torch.arange(len(inp["labels"]))
    assert torch.equal(inp["labels"][rows, inp["answer_pos"]], batch["labels"][rows, batch["answer_pos"]])


@pytest.mark.parametrize("stage_index", [0, 1])
def test_frozen_parameters_get_no_gradient(tiny_backbones, smoke_budget, world, stage_index):
    m = build("llava", tiny_backbones, smoke_budget)
    st = m.stages()[stage_index]
    run_stage_backward(m, st, world)
    assert_only_trainable_get_gradients(m, st)


def _visual_outputs(m, batch, perturb_index):
    inp = m.build_inputs(batch)
    h0 = m.lm.model(inputs_embeds=inp["inputs_embeds"], attention_mask=m.lm_attention_mask(inp, torch.float32)).last_hidden_state
    emb = inp["inputs_embeds"].clone()
    pos = inp["visual_mask"][0].nonzero().flatten()
    emb[0, pos[perturb_index]] += 1.0
    inp2 = dict(inp, inputs_embeds=emb)
    h1 = m.lm.model(inputs_embeds=emb, attention_mask=m.lm_attention_mask(inp2, torch.float32)).last_hidden_state
    return h0[0], h1[0], pos


def test_attention_type_knob(tiny_backbones, smoke_budget, batch):
    causal = build("llava", tiny_backbones, smoke_budget, {"attention": "causal"})
    h0, h1, pos = _visual_outputs(causal, batch, perturb_index=-1)
    assert torch.allclose(h0[: pos[-1]], h1[: pos[-1]])  # nothing before the last patch moves
    bidir = build("llava", tiny_backbones, smoke_budget, {"attention": "bidirectional"})
    h0, h1, pos = _visual_outputs(bidir, batch, perturb_index=-1)
    assert not torch.allclose(h0[pos[0]], h1[pos[0]])  # the first patch sees the last one
    assert torch.allclose(h0[: pos[0]], h1[: pos[0]])  # text before the image never does


def test_knob_errors_name_the_knob_and_allowed_values(tiny_backbones, smoke_budget):
    with pytest.raises(ValueError, match=r"knobs=\['table_size'\].*llava.*connector_depth"):
        build("llava", tiny_backbones, smoke_budget, {"table_size": 8})
    with pytest.raises(ValueError, match=r"attention.*allowed values.*causal.*bidirectional"):
        build("llava", tiny_backbones, smoke_budget, {"attention": "sideways"})
    with pytest.raises(TypeError, match=r"connector_depth.*int"):
        build("llava", tiny_backbones, smoke_budget, {"connector_depth": "2"})
    with pytest.raises(ValueError, match=r"arch='nope'.*allowed values.*llava"):
        build("nope", tiny_backbones, smoke_budget)


def test_cell_words_follow_each_visual_token_with_its_cell(tiny_backbones, smoke_budget, batch):
    m = build("llava", tiny_backbones, smoke_budget, {"cell_words": True})
    plain = build("llava", tiny_backbones, smoke_budget)
    plain.connector.load_state_dict(m.connector.state_dict())
    vis, _ = m.visual_tokens(batch["pixel_values"])
    ref, _ = plain.visual_tokens(batch["pixel_values"])
    N = ref.shape[1]
    assert vis.shape[1] == 3 * N
    assert torch.equal(vis[:, 0::3], ref)  # the visual tokens, unchanged, every third position
    g = m.vision.grid
    vocab = m.tokenizer.get_vocab()
    i = g + 2  # row 1, column 2 of a 4 x 4 grid
    emb = m.text_embeds(torch.tensor([vocab["r1"], vocab["c2"]]))
    assert torch.equal(vis[0, 3 * i + 1], emb[0]) and torch.equal(vis[0, 3 * i + 2], emb[1])
