"""What a run trains and evaluates on, behind one interface: the built-in world, or a data source's examples
with its evaluation set (``eval_data``, else a seeded held-out share of the training data)."""
from __future__ import annotations

from ..generate import DEFAULT_MAX_NEW_TOKENS
from ..world import World
from .evaluate import SPLIT, evaluate_examples, free_form_scores, generate_examples
from .feed import make_source_data
from .sources import WORLD, check_sources, describe_split, examples, held_out


def _scoring_hash() -> str:
    """The source of what scores a data source (this package and the decoding): a cached record computed by older
    code is not reused; the world's keys do not include it, so its cached models stay valid."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted((root / "data").glob("*.py")) + [root / "generate.py"]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class WorldData:
    """The built-in world: training batches of its train split, evaluation on its test and compositional splits."""

    is_world = True

    def __init__(self, seed: int):
        self.seed = seed

    def batches(self, world: World, budget, *, rank: int = 0, ranks: int = 1):
        from ..runs import make_data

        return make_data(world, budget.vlm_batch, budget.vlm_grounding, rank=rank, ranks=ranks)

    def evaluate(self, model, world: World, budget, precision: str) -> tuple[dict, dict, dict]:
        """(metrics with "chance", per-wording accuracies, valid-answer shares), as the record stores them."""
        from ..evaluate import evaluate

        metrics = evaluate(model, world, budget.eval_per_category, budget.eval_batch, precision=precision)
        return metrics, metrics.pop("wordings"), metrics.pop("valid")

    def diagnostic_batch(self, model, world: World, n: int) -> dict:
        return world.batch(model.eval_task, "test", 0, n)

    def key(self) -> None:
        return None  # the world is keyed by the code and the seed already

    def record_extras(self) -> dict:
        return {}  # the world keeps its one-word scoring, and its records their keys

    def describe(self) -> dict:
        return {"train": {"source": WORLD, "split": "train"},
                "eval": {"source": WORLD, "splits": ["test", "compositional"]}}


class SourceData:
    """A LLaVA-format file or a ``datasets`` directory, and its evaluation set."""

    is_world = False

    N_SHOWN = 8  # evaluation examples whose generated answers the record shows

    def __init__(self, data: str, eval_data: str | None, image_root: str | None, seed: int,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
        self.train_source, self.eval_source = check_sources(data, eval_data, image_root)
        exs = examples(self.train_source, image_root)
        if self.eval_source is not None:
            self.train, self.eval = exs, examples(self.eval_source, image_root)
        else:
            self.train, self.eval = held_out(exs, seed, self.train_source.path)
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.extras: dict = {}

    def batches(self, world: World, budget, *, rank: int = 0, ranks: int = 1):
        return make_source_data(self.train, world, budget.vlm_batch, self.seed, rank=rank, ranks=ranks)

    def evaluate(self, model, world: World, budget, precision: str) -> tuple[dict, dict, dict]:
        """Free-form answers scored by normalized exact match (the metrics and the valid-answer rate), and the
        world's one-word score beside them (``record_extras``)."""
        from ..generate import decoding_path

        first = evaluate_examples(model, self.eval, world, budget.eval_batch, precision)
        self.per_category = first["examples"]
        answers = generate_examples(model, self.eval, world, self.max_new_tokens, budget.eval_batch, precision)
        scores = free_form_scores(self.eval, answers)
        self.extras = {
            "first_token": {SPLIT: first[SPLIT]},  # the world's one-word score: argmax first answer token
            "generation": {"max_new_tokens": self.max_new_tokens, "decoding": decoding_path(model),
                           "scoring": "normalized exact match (VQAv2 answer normalization)",
                           "examples": [{"id": ex.id, "category": ex.category, "question": ex.question,
                                         "answer": ex.answer, "generated": a}
                                        for ex, a in zip(self.eval[:self.N_SHOWN], answers)]},
        }
        return {SPLIT: scores[SPLIT], "chance": first["chance"]}, {}, scores["valid"]

    def diagnostic_batch(self, model, world: World, n: int) -> dict:
        from .batches import encode_examples

        return encode_examples(world, "blind" if model.eval_task == "blind" else "qa", self.eval[:n],
                               with_images=model.uses_images)

    def key(self) -> dict:
        """What a cached model trained on this data depends on besides the config: the files' contents."""
        return {"train": self.train_source.fingerprint,
                "eval": self.eval_source.fingerprint if self.eval_source else f"held-out seed {self.seed}",
                "scoring": _scoring_hash()}

    def record_extras(self) -> dict:
        """What the record adds for a data source after :meth:`evaluate`: the one-word score and the generation."""
        return self.extras

    def describe(self) -> dict:
        return describe_split(self.train_source, self.eval_source, self.seed, len(self.train), len(self.eval))


def run_data(data: str, eval_data: str | None, image_root: str | None, seed: int,
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
    return WorldData(seed) if data == WORLD else SourceData(data, eval_data, image_root, seed, max_new_tokens)
