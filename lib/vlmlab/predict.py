"""vlmlab's own models answering a data source's questions, written as the ``PREDICTIONS.jsonl`` that
``vlmlab score`` reads (one ``{"id", "answer"}`` per line), as any other model's would be."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .data.batches import encode_examples
from .data.examples import Example
from .world import World


@torch.no_grad()
def predict(model, examples: list[Example], world: World, batch_size: int = 256,
            precision: str = "fp32") -> list[dict]:
    """One answer per example, in order: the argmax next token where the evaluator takes it, written as the
    answer of the question's answer set that token starts (as the evaluator scores it), else as the token's text."""
    from .device import autocast

    if model.eval_task not in ("qa", "blind"):
        raise ValueError(f"a {type(model).__name__} is evaluated on the {model.eval_task!r} prompt, which a data "
                         f"source cannot feed (it holds images, questions and answers only)")
    tok = world.tokenizer
    model.eval()
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = encode_examples(world, model.eval_task, chunk, with_images=model.uses_images)
        with autocast(model.device, precision):
            pred = model.answer_logits(batch).argmax(-1).cpu().tolist()
        for ex, p in zip(chunk, pred):
            starts = {tok(" " + a, add_special_tokens=False)["input_ids"][0]: a for a in ex.answers or ()}
            out.append({"id": ex.id, "answer": starts.get(p, tok.decode([p]).strip())})
    return out


def write_predictions(path: str | Path, predictions: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return path
