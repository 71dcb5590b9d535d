"""VQA accuracy per question category and split (and per wording within a category), and the chance level each
category's answer sets imply."""
from __future__ import annotations

from collections import defaultdict

import torch

from .world import CATEGORIES, SEMANTIC, STRUCTURAL, World

EVAL_SPLITS = ("test", "compositional")


def summarize(per_cat: dict[str, float]) -> dict[str, float]:
    """Add family means (semantic, structural) and the overall mean over categories."""
    out = dict(per_cat)
    for fam, cats in (("semantic", SEMANTIC), ("structural", STRUCTURAL)):
        vals = [per_cat[c] for c in cats if c in per_cat]
        if vals:
            out[fam] = sum(vals) / len(vals)
    vals = [per_cat[c] for c in CATEGORIES if c in per_cat]
    out["overall"] = sum(vals) / len(vals)
    return out


def _means(hits: dict) -> dict:
    return {k: sum(v) / len(v) for k, v in hits.items()}


def _by_wording(hits: dict) -> dict[str, dict[str, float]]:
    """{category: {wording: accuracy}} for the categories asked in more than one wording."""
    out = defaultdict(dict)
    for (cat, w), acc in sorted(_means(hits).items()):
        out[cat][w] = acc
    return {c: ws for c, ws in out.items() if len(ws) > 1}


@torch.no_grad()
def evaluate(model, world: World, n_per_category: int, batch_size: int = 256, splits=EVAL_SPLITS,
             precision: str = "fp32") -> dict:
    """{split: {category | semantic | structural | overall: accuracy}} plus ``chance`` per category, and
    ``wordings``: {split | "chance": {category: {wording: accuracy}}} for the categories asked in more than one
    wording (``vlmlab.world.wording``), whose mean can hide a gap between its wordings.

    A prediction is the argmax over the whole vocabulary at the position before the first answer token. ``valid``:
    {split: {category: share}} of predictions that are (the first token of) an answer in the question's answer
    set, so that a format error is not read as a perception error.
    """
    from .device import autocast

    model.eval()
    n = n_per_category * len(world.categories)
    result, chance, chance_w, wordings, valid = {}, defaultdict(list), defaultdict(list), {}, {}
    first = {}  # answer word -> its first token, as World.encode tokenizes a target

    def first_token(a: str) -> int:
        if a not in first:
            first[a] = world.tokenizer(" " + a, add_special_tokens=False)["input_ids"][0]
        return first[a]

    for split in splits:
        hits, hits_w, ok_set = defaultdict(list), defaultdict(list), defaultdict(list)
        for start in range(0, n, batch_size):
            batch = world.batch(model.eval_task, split, start, min(batch_size, n - start),
                                with_images=model.uses_images)
            with autocast(model.device, precision):
                pred = model.answer_logits(batch).argmax(-1).cpu()
            gold = batch["labels"][torch.arange(len(pred)), batch["answer_pos"]]
            for cat, w, ok, k, p, answers in zip(batch["category"], batch["wording"], (pred == gold).tolist(),
                                                 batch["n_answers"].tolist(), pred.tolist(), batch["answer_sets"]):
                hits[cat].append(ok)
                ok_set[cat].append(p in {first_token(a) for a in answers})
                hits_w[cat, w].append(ok)
                if split == "test":
                    chance[cat].append(1.0 / k)
                    chance_w[cat, w].append(1.0 / k)
        result[split] = summarize(_means(hits))
        valid[split] = summarize(_means(ok_set))
        wordings[split] = _by_wording(hits_w)
    result["chance"] = summarize(_means(chance))
    wordings["chance"] = _by_wording(chance_w)
    result["wordings"] = wordings
    result["valid"] = valid
    return result
