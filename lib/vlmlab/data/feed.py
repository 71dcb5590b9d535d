"""Training batches from a data source's examples, for every stage of an architecture."""
from __future__ import annotations

import numpy as np

from ..world import World
from .batches import encode_examples
from .examples import Example


def make_source_data(examples: list[Example], world: World, batch_size: int, seed: int):
    """Training batch ``step`` of a task, drawn from ``examples`` in a seeded order reshuffled every epoch.

    A source holds conversations only, so every image-reading stage (alignment too) trains on them in the QA
    prompt, and the question-only task ("blind") on their questions."""
    n = len(examples)
    orders: dict[int, np.ndarray] = {}

    def order(epoch: int) -> np.ndarray:
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([seed, 11, epoch]).permutation(n)
        return orders[epoch]

    def data(task: str, step: int) -> dict:
        idx = [step * batch_size + i for i in range(batch_size)]
        chosen = [examples[int(order(i // n)[i % n])] for i in idx]
        blind = task == "blind"
        return encode_examples(world, "blind" if blind else "qa", chosen, with_images=not blind)
    return data
