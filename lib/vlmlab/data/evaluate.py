"""Scores on a data source's examples per ``category``: free-form answers by normalized exact match (greedy
decoding, :mod:`vlmlab.generate`; the headline), and the world's one-word score, the argmax next token where the
answer starts against the answer's first token (for comparison with the world's tables)."""
from __future__ import annotations

from collections import defaultdict

import torch

from ..world import World
from .answers import exact_match_scores, normalize_answer
from .batches import OTHER, as_sample, encode_examples
from .examples import Example

SPLIT = "eval"  # the one split of a data source's record: {"eval": {category | "overall": accuracy}}


def _means(d: dict) -> dict:
    out = {k: sum(v) / len(v) for k, v in sorted(d.items())}
    out["overall"] = sum(out.values()) / len(out)  # the mean over categories, as the world's overall
    return out


@torch.no_grad()
def evaluate_examples(model, examples: list[Example], world: World, batch_size: int = 256,
                      precision: str = "fp32") -> dict:
    """{"eval": accuracies, "chance": accuracies, "valid": {"eval": shares}, "examples": {category: n}}. Chance
    and the share of answers inside the answer set are reported for the categories whose examples all carry an
    answer set (``answers``), and are empty otherwise."""
    from ..device import autocast

    model.eval()
    hits, sets, chance = defaultdict(list), defaultdict(list), defaultdict(list)
    first = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = encode_examples(world, model.eval_task if model.eval_task == "blind" else "qa", chunk,
                                with_images=model.uses_images)
        with autocast(model.device, precision):
            pred = model.answer_logits(batch).argmax(-1).cpu()
        gold = batch["labels"][torch.arange(len(pred)), batch["answer_pos"]]
        for cat, ok, p, answers in zip(batch["category"], (pred == gold).tolist(), pred.tolist(), batch["answer_sets"]):
            hits[cat].append(ok)
            if answers:
                for a in answers:
                    first.setdefault(a, world.tokenizer(" " + a, add_special_tokens=False)["input_ids"][0])
                sets[cat].append(p in {first[a] for a in answers})
                chance[cat].append(1.0 / len(answers))
    full = [c for c in hits if len(sets[c]) == len(hits[c])]
    return {SPLIT: _means(hits), "chance": _means({c: chance[c] for c in full}) if full else {},
            "valid": {SPLIT: _means({c: sets[c] for c in full})} if full else {},
            "examples": {c: len(v) for c, v in sorted(hits.items())}}


@torch.no_grad()
def generate_examples(model, examples: list[Example], world: World, max_new_tokens: int, batch_size: int = 64,
                      precision: str = "fp32", chunk: int = 1024) -> list[str]:
    """The model's greedy free-form answer to each example, in order; images are loaded ``chunk`` examples at a
    time, so that a large evaluation set is never held in memory at once."""
    from ..generate import generate_answers

    out: list[str] = []
    for start in range(0, len(examples), chunk):
        samples = [as_sample(ex, world, model.uses_images) for ex in examples[start:start + chunk]]
        out += generate_answers(model, world, samples, max_new_tokens, batch_size, precision)
    return out


def free_form_scores(examples: list[Example], answers: list[str]) -> dict:
    """{"eval": exact-match shares per category, "valid": {"eval": shares of normalized answers inside the answer
    set}} (valid only where every example of a category carries an answer set, as :func:`evaluate_examples`)."""
    sets = defaultdict(list)
    for ex, a in zip(examples, answers, strict=True):
        if ex.answers:
            sets[ex.category or OTHER].append(normalize_answer(a) in {normalize_answer(x) for x in ex.answers})
    n = defaultdict(int)
    for ex in examples:
        n[ex.category or OTHER] += 1
    full = {c: v for c, v in sets.items() if len(v) == n[c]}
    return {SPLIT: exact_match_scores(examples, answers, OTHER), "valid": {SPLIT: _means(full)} if full else {}}
