"""Accuracy on a data source's examples per ``category``, scored as the world is: the argmax next token where
the answer starts, against the answer's first token."""
from __future__ import annotations

from collections import defaultdict

import torch

from ..world import World
from .batches import encode_examples
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
