"""Free-form answers: greedy decoding with a KV cache gives the tokens that recomputing the model's forward pass at
every step gives, for every architecture and each decoding path."""
from __future__ import annotations

import pytest
import torch

from vlmlab.archs import ARCHS, REFERENCES, build
from vlmlab.generate import decode, decoding_path, greedy, prompt_batch, prompt_ids
from vlmlab.world import World

CASES = [(a, {}) for a in ARCHS] + [(r, {}) for r in REFERENCES] + [
    ("llava", {"attention": "bidirectional"}), ("llavit", {"attention": "causal"}),
    ("hovle", {"pixel_shuffle": "post"}), ("vwlmm", {"pif": True})]


def _prompts(model, world, n=8):
    """The longest group of equal-length prompts among the first ``n`` test samples, as a batch."""
    samples = world.samples("test", 0, n)
    task = model.eval_task if model.eval_task in ("blind", "oracle") else "qa"
    ids = prompt_ids(world, task, samples)
    length = max({len(r) for r in ids}, key=lambda k: sum(len(r) == k for r in ids))
    rows = [i for i, r in enumerate(ids) if len(r) == length]
    pix = World.images([samples[i] for i in rows]) if model.uses_images else None
    return prompt_batch([ids[i] for i in rows], pix)


@pytest.mark.parametrize("arch, knobs", CASES, ids=lambda v: v if isinstance(v, str) else
                         ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_cached_decoding_gives_the_tokens_of_the_full_forward(arch, knobs, tiny_backbones, smoke_budget, world):
    torch.manual_seed(0)
    model = build(arch, tiny_backbones, smoke_budget, knobs).eval()
    batch = _prompts(model, world)
    path = decoding_path(model)
    cached = greedy(model, batch, 5)
    assert cached.shape == (len(batch["input_ids"]), 5)
    assert torch.equal(cached, greedy(model, batch, 5, use_cache=False)), path
    if path == "transformers":  # the own loop handles these models too: the same tokens as generate's
        assert torch.equal(cached, greedy(model, batch, 5, path="own loop"))


def test_each_design_decodes_on_the_path_its_llm_allows(tiny_backbones, smoke_budget):
    def path(arch, **knobs):
        return decoding_path(build(arch, tiny_backbones, smoke_budget, knobs))
    assert [path(a) for a in ("llava", "ovis", "vwlmm", "xformer", "blind")] == ["transformers"] * 5
    assert path("llava", attention="bidirectional") == "own loop"  # generate cannot pass the image-span mask
    assert path("llavit") == path("llavit", attention="causal") == "own loop"  # visual Q/K/V routed per token
    assert path("hovle") == "two caches"  # the embedding module's own cache


def test_decoding_stops_at_eos_and_pads_after_it(tiny_backbones, smoke_budget, world):
    """A model whose LM always says eos stops after one step; the rows come back padded to max_new_tokens."""
    model = build("llava", tiny_backbones, smoke_budget).eval()
    tok = world.tokenizer
    eos_only = torch.zeros(len(tok))
    eos_only[tok.eos_token_id] = 1.0
    model.lm.get_output_embeddings().register_forward_hook(lambda m, i, o: eos_only.expand_as(o).clone())
    batch = _prompts(model, world)
    for kw in ({}, {"use_cache": False}, {"path": "own loop"}):
        out = greedy(model, batch, 5, **kw)
        assert out[:, 0].eq(tok.eos_token_id).all() and out[:, 1:].eq(tok.pad_token_id).all(), kw
    assert decode(tok, out) == [""] * len(out)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        greedy(model, batch, 0)
