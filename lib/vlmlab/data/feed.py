"""Training batches from a data source's examples, for every stage of an architecture."""
from __future__ import annotations

import numpy as np

from ..world import World
from .batches import encode_examples
from .examples import Example


def make_source_data(examples: list[Example], world: World, batch_size: int, seed: int, *, rank: int = 0,
                     ranks: int = 1):
    """Training batch ``step`` of a task, drawn from ``examples`` in a seeded order reshuffled every epoch.

    A source holds conversations only, so every image-reading stage (alignment too) trains on them in the QA
    prompt, and the question-only task ("blind") on their questions. Of ``ranks`` processes, ``rank`` gets its
    consecutive ``batch_size / ranks`` examples of each batch."""
    n = len(examples)
    per = batch_size // ranks
    orders: dict[int, np.ndarray] = {}

    def order(epoch: int) -> np.ndarray:
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([seed, 11, epoch]).permutation(n)
        return orders[epoch]

    def data(task: str, step: int) -> dict:
        idx = [step * batch_size + rank * per + i for i in range(per)]
        chosen = [examples[int(order(i // n)[i % n])] for i in idx]
        blind = task == "blind"
        return encode_examples(world, "blind" if blind else "qa", chosen, with_images=not blind)
    return data
