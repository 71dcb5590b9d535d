"""LLaVA-format JSON files: a list of rows ``{"id", "image", "conversations": [{"from": "human"|"gpt",
"value"}...]}``, the image placeholder ``<image>`` in the first human turn, the image path relative to the file
(or to ``image_root``). Optional ``category`` (a string) and ``answers`` (the answer set, a list of strings).

Rows are numbered from 0, as in ``json.load(file)[row]``. Each human/gpt pair of a row is one :class:`Example`;
the second and later pairs of a row get the ids ``<id>#1``, ``<id>#2``...
"""
from __future__ import annotations

import json
from pathlib import Path

from .examples import DataError, Example, every_row, row_labels
from .images import check_image

PLACEHOLDER = "<image>"
ROLES = ("human", "gpt")


def question_text(value: str) -> str:
    """The human turn without its image placeholder, whitespace collapsed."""
    return " ".join(value.replace(PLACEHOLDER, " ").split())


def _row_examples(row, i: int, base: Path) -> list[Example]:
    """The examples of one row, or a ValueError saying what the row lacks (the caller adds file and row)."""
    if not isinstance(row, dict):
        raise ValueError(f"expected an object with 'id', 'image' and 'conversations', got {type(row).__name__}")
    missing = [k for k in ("id", "image", "conversations") if k not in row]
    if missing:
        raise ValueError(f"missing {missing}; expected keys 'id', 'image' and 'conversations'")
    rid, image, conv = row["id"], row["image"], row["conversations"]
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise ValueError(f"'id' must be a string or an int, got {rid!r}")
    if not isinstance(image, str) or not image:
        raise ValueError(f"'image' must be a non-empty path string, got {image!r}")
    if not isinstance(conv, list) or len(conv) < 2 or len(conv) % 2:
        raise ValueError("'conversations' must be a list of human/gpt turn pairs (an even number, at least 2)")
    for t, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {t}: expected {{'from': ..., 'value': <string>}}, got {turn!r}")
        if turn.get("from") != ROLES[t % 2]:
            raise ValueError(f"turn {t}: 'from' is {turn.get('from')!r}, expected {ROLES[t % 2]!r} (turns alternate "
                             f"human, gpt)")
    placeholders = [t for t, turn in enumerate(conv) if PLACEHOLDER in turn["value"]]
    if placeholders != [0] or conv[0]["value"].count(PLACEHOLDER) != 1:
        raise ValueError(f"expected one {PLACEHOLDER} placeholder, in turn 0 (the first human turn); found it in "
                         f"turns {placeholders}" if placeholders else f"no {PLACEHOLDER} placeholder in turn 0")
    category, answers = row_labels(row)
    path = base / image
    check_image(path)  # raises naming what is wrong with the file
    out = []
    for k in range(0, len(conv), 2):
        q, a = question_text(conv[k]["value"]), conv[k + 1]["value"].strip()
        if not q or not a:
            raise ValueError(f"turns {k}-{k + 1}: an empty {'question' if not q else 'answer'}")
        out.append(Example(str(rid) if k == 0 else f"{rid}#{k // 2}", path, q, a, category, answers))
    return out


def read_llava(path: str | Path, image_root: str | Path | None = None) -> list[Example]:
    """Every example of a LLaVA-format JSON file, after checking every row; a bad row raises :class:`DataError`
    naming the file, the first bad row and what was expected (and how many more rows are bad): none is dropped."""
    path = Path(path)
    base = Path(image_root) if image_root is not None else path.parent
    try:
        rows = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, None, "no such file") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(path, None, f"not valid JSON ({e}); expected a list of LLaVA conversation rows") from None
    if not isinstance(rows, list):
        raise DataError(path, None, f"expected a JSON list of rows, got {type(rows).__name__}")
    if not rows:
        raise DataError(path, None, "no rows; expected a non-empty list of LLaVA conversation rows")
    return every_row(path, rows, lambda row, i: _row_examples(row, i, base))
