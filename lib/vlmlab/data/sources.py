"""The ``data`` and ``eval_data`` parameters of a run: ``"world"`` (the built-in world), a LLaVA-format JSON
file or a ``datasets`` ``save_to_disk`` directory; what a source is, its examples, and the held-out split."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .examples import DataError, Example
from .hf import is_hf_dir, read_hf
from .llava import read_llava

WORLD = "world"
HELD_OUT = 0.1  # the share of the training data held out for evaluation when no eval_data is named


@dataclass(frozen=True)
class Source:
    spec: str  # as the user gave it
    format: str  # "llava" or "hf"
    path: Path
    fingerprint: str  # of the annotation file (llava) or of the dataset's arrow files (hf)

    def describe(self) -> dict:
        return {"source": str(self.path), "format": self.format, "sha256": self.fingerprint}


def _sha256(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def resolve(name: str, spec: str) -> Source:
    """The source a ``data``/``eval_data`` value names; raises ValueError naming the parameter when it names none."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".json":
        return Source(spec, "llava", path.resolve(), _sha256([path]))
    if is_hf_dir(path):
        info = path / "dataset_info.json"
        return Source(spec, "hf", path.resolve(), _sha256(sorted(path.glob("*.arrow")) + ([info] if info.is_file() else [])))
    why = "does not exist" if not path.exists() else "is neither a .json file nor a datasets save_to_disk directory"
    raise ValueError(f"parameter {name!r}: {spec!r} {why}; expected {WORLD!r}, a LLaVA-format .json file or a "
                     f"directory written by datasets' save_to_disk")


@lru_cache(maxsize=8)
def _read(fmt: str, path: Path, fingerprint: str, image_root: str | None) -> tuple[Example, ...]:
    # keyed by the content's fingerprint: the check before training and the run read a file once
    return tuple(read_llava(path, image_root) if fmt == "llava" else read_hf(path))


def examples(source: Source, image_root: str | None = None) -> list[Example]:
    """The source's examples, every row checked (:class:`DataError` names the file and the row)."""
    return list(_read(source.format, source.path, source.fingerprint, image_root))


def held_out(exs: list[Example], seed: int, where="data", share: float = HELD_OUT) -> tuple[list[Example], list[Example]]:
    """(train, eval): a seeded ``share`` of the examples held out for evaluation, at least one on each side;
    the examples of one row (``id``, ``id#1``...) stay on one side, so no image is both trained and evaluated on."""
    rows = sorted({e.id.split("#")[0] for e in exs})
    if len(rows) < 2:
        raise DataError(where, None,
                        f"{len(rows)} row(s): holding out {share:.0%} for evaluation needs at least 2 rows; "
                        f"name an eval_data")
    rng = np.random.default_rng([seed, 7])
    k = min(len(rows) - 1, max(1, round(share * len(rows))))
    test = {rows[i] for i in rng.permutation(len(rows))[:k]}
    return [e for e in exs if e.id.split("#")[0] not in test], [e for e in exs if e.id.split("#")[0] in test]


def describe_split(train: Source, eval_source: Source | None, seed: int, n_train: int, n_eval: int) -> dict:
    """What the record says about the data a run used."""
    ev = (eval_source.describe() if eval_source is not None
          else {"source": f"held-out {HELD_OUT:.0%} of the training data, seed {seed}", "format": train.format})
    return {"train": {**train.describe(), "examples": n_train}, "eval": {**ev, "examples": n_eval}}


def check_sources(data, eval_data, image_root) -> tuple[Source | None, Source | None]:
    """The sources of a run's parameters, their every row checked now (before any training); (None, None) for
    the world."""
    for name, v in (("data", data), ("eval_data", eval_data), ("image_root", image_root)):
        if v is not None and not isinstance(v, str):
            raise TypeError(f"parameter {name!r} must be a string, got {v!r} ({type(v).__name__})")
    if data == WORLD:
        if eval_data or image_root:
            raise ValueError(f"parameters 'eval_data' and 'image_root' apply to data other than {WORLD!r} (the "
                             f"world evaluates on its own test and compositional splits); got "
                             f"eval_data={eval_data!r}, image_root={image_root!r}")
        return None, None
    if image_root and not Path(image_root).is_dir():
        raise ValueError(f"parameter 'image_root': {image_root!r} is not a directory")
    train = resolve("data", data)
    examples(train, image_root or None)
    ev = resolve("eval_data", eval_data) if eval_data else None
    if ev is not None:
        examples(ev, image_root or None)
    return train, ev


__all__ = ["WORLD", "HELD_OUT", "Source", "resolve", "examples", "held_out", "describe_split", "check_sources"]
