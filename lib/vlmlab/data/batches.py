"""Examples of a data source -> the tokenized batches vlmlab's models take (as ``World.batch`` makes them)."""
from __future__ import annotations

import torch

from ..world import QA, Sample, World
from .examples import Example
from .images import load_image

OTHER = "other"  # the category of an example whose source names none


def as_sample(ex: Example, world: World, image: bool = True) -> Sample:
    """A world :class:`Sample` carrying the example's image and question: the QA prompt reads nothing else."""
    pixels = load_image(ex.image, world.config.image_size) if image else None
    qa = QA(ex.question, ex.answer, ex.category or OTHER, tuple(ex.answers or ()))
    return Sample(pixels, (), qa, "data", 0, world.config)


def encode_examples(world: World, task: str, examples: list[Example], with_images: bool = True) -> dict:
    """The batch of ``examples`` for a QA-format task ("qa", or "blind" without images), keys as ``World.batch``."""
    if task not in ("qa", "blind"):
        raise ValueError(f"task={task!r}: a data source holds images, questions and answers only, so it feeds the "
                         f"'qa' and 'blind' prompts")
    samples = [as_sample(ex, world, with_images) for ex in examples]
    out = world.encode(task, samples)
    if with_images:
        out["pixel_values"] = World.images(samples)
    out["category"] = [s.qa.category for s in samples]
    out["n_answers"] = torch.tensor([len(s.qa.answers) for s in samples])
    out["answer_sets"] = [s.qa.answers for s in samples]
    return out
