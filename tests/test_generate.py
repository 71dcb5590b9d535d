"""Free-form answers: greedy decoding with a KV cache gives the tokens that recomputing the model's forward pass at
every step gives, for every architecture and each decoding path; answers are scored by normalized exact match;
``max_new_tokens`` is checked with the run's other parameters."""
from __future__ import annotations

import json

import pytest
import torch

from vlmlab.archs import ARCHS, REFERENCES, build
from vlmlab.data import Example
from vlmlab.data.answers import exact_match_scores, normalize_answer
from vlmlab.generate import decode, decoding_path, greedy, prompt_batch, prompt_ids
from vlmlab.runs import RunConfig
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


def test_answers_are_normalized_as_vqa_normalizes_them():
    cases = {"The Two Dogs.": "2 dogs", "T-shirt": "t shirt", "yes!": "yes", "1,000": "1000", "3.5": "3.5",
             "dont know": "don't know", "  A  red circle ": "red circle", "(left)": "left", "none": "0"}
    assert {k: normalize_answer(k) for k in cases} == cases
    exs = [Example("a", None, "q", "Two", "count"), Example("b", None, "q", "red", "color"),
           Example("c", None, "q", "blue", "color"), Example("d", None, "q", "yes")]
    scores = exact_match_scores(exs, ["2.", "Red", "green", "yes"])
    assert scores == {"color": 0.5, "count": 1.0, "other": 1.0, "overall": 2.5 / 3}


def test_max_new_tokens_is_checked_with_the_run_parameters(tmp_path):
    from vlmlab.export import export_world

    export_world(tmp_path, "test", "llava", per_category=1)
    data = str(tmp_path / "test.json")
    assert RunConfig.from_params(budget="smoke", data=data, max_new_tokens=3).resolved()["max_new_tokens"] == 3
    assert "max_new_tokens" not in RunConfig.from_params(budget="smoke").resolved()  # the world's keys as before
    with pytest.raises(TypeError, match=r"parameter 'max_new_tokens' must be an int, got '3'"):
        RunConfig.from_params(budget="smoke", data=data, max_new_tokens="3")
    with pytest.raises(ValueError, match=r"parameter 'max_new_tokens'=0; allowed values: 1\.\.1024"):
        RunConfig.from_params(budget="smoke", data=data, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"parameter 'max_new_tokens'=8 applies to data other than 'world'"):
        RunConfig.from_params(budget="smoke", max_new_tokens=8)


@pytest.mark.slow
def test_a_data_source_run_scores_its_generated_answers(tmp_path, capsys):
    """A LLaVA-format file from the CLI: the record's metrics are the exact match of the generated answers, shown
    with them, beside the one-word score."""
    from vlmlab.cli import main
    from vlmlab.data.answers import exact_match
    from vlmlab.export import export_world

    export_world(tmp_path / "data", "train", "llava", per_category=2)
    out = tmp_path / "run"
    assert main(["run", "--budget", "smoke", "--data", str(tmp_path / "data" / "train.json"), "--max-new-tokens", "3",
                 "--in-process", "--out", str(out)]) == 0
    assert "exact match of its generated answers" in capsys.readouterr().out
    rec = json.loads((out / "record.json").read_text())
    gen = rec["generation"]
    assert rec["config"]["max_new_tokens"] == gen["max_new_tokens"] == 3 and gen["decoding"] == "transformers"
    assert set(rec["first_token"]["eval"]) == set(rec["metrics"]["eval"])
    shown = gen["examples"]
    assert len(shown) == rec["data"]["eval"]["examples"] and all(len(e["generated"].split()) <= 3 for e in shown)
    by_cat = {}
    for e in shown:
        by_cat.setdefault(e["category"], []).append(exact_match(e["generated"], e["answer"]))
    assert {c: sum(v) / len(v) for c, v in by_cat.items()} == {
        c: v for c, v in rec["metrics"]["eval"].items() if c != "overall"}
