"""Directories written by Hugging Face ``datasets`` (``Dataset.save_to_disk``): an image column (``image``, or
``images`` holding one image per row) and either ``conversations`` (LLaVA turns ``{"from", "value"}``),
``messages`` (chat turns ``{"role": "user"|"assistant", "content"}``) or ``question`` and ``answer`` columns;
optional ``category`` (a string) and ``answers`` (the answer set). Rows are numbered from 0, as ``dataset[row]``.
"""
from __future__ import annotations

import json
from pathlib import Path

from .examples import DataError, Example, every_row, row_labels
from .llava import PLACEHOLDER, question_text

IMAGE_COLUMNS = ("image", "images")
TEXT_SCHEMAS = (("conversations",), ("messages",), ("question", "answer"))
_CHAT_ROLES = ("user", "assistant")


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def _content_text(content) -> str:
    """A chat turn's text: a string, or the text parts of a list of ``{"type": "text"|"image", ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return " ".join(p.get("text") or "" for p in content if p.get("type") == "text")
    raise ValueError(f"a turn's 'content' must be a string or a list of parts, got {content!r}")


def _pairs(row: dict, schema: tuple) -> list[tuple[str, str]]:
    """(question, answer) pairs of one row, or a ValueError saying what the row lacks."""
    if schema == ("question", "answer"):
        q, a = row["question"], row["answer"]
        if not isinstance(q, str) or not isinstance(a, str):
            raise ValueError(f"'question' and 'answer' must be strings, got {q!r} and {a!r}")
        return [(question_text(q), a.strip())]
    turns = row[schema[0]]
    llava = schema == ("conversations",)
    role_key, text_key, roles = ("from", "value", ("human", "gpt")) if llava else ("role", "content", _CHAT_ROLES)
    if not isinstance(turns, list) or len(turns) < 2 or len(turns) % 2:
        raise ValueError(f"{schema[0]!r} must be a list of {roles[0]}/{roles[1]} turn pairs (an even number, at "
                         f"least 2), got {turns!r}"[:300])
    texts = []
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get(role_key) != roles[t % 2]:
            got = turn.get(role_key) if isinstance(turn, dict) else turn
            raise ValueError(f"turn {t}: {role_key!r} is {got!r}, expected {roles[t % 2]!r} (turns alternate "
                             f"{roles[0]}, {roles[1]})")
        texts.append(turn.get(text_key) if llava else _content_text(turn.get(text_key)))
        if not isinstance(texts[-1], str):
            raise ValueError(f"turn {t}: expected a string {text_key!r}, got {texts[-1]!r}")
    if llava and (PLACEHOLDER not in texts[0] or any(PLACEHOLDER in x for x in texts[1:])):
        raise ValueError(f"expected one {PLACEHOLDER} placeholder, in turn 0 (the first human turn)")
    return [(question_text(texts[k]), texts[k + 1].strip()) for k in range(0, len(texts), 2)]


def _image(row: dict, column: str):
    img = row[column]
    if column == "images":
        if not isinstance(img, list) or len(img) != 1:
            raise ValueError(f"'images' must hold exactly one image per row, got {len(img) if isinstance(img, list) else img!r}")
        img = img[0]
    if img is None:
        raise ValueError(f"no image in column {column!r}")
    if not hasattr(img, "convert"):
        raise ValueError(f"column {column!r} holds {type(img).__name__}, expected an image (a datasets Image feature)")
    return img


def _no_data_files(path: Path) -> bool:
    try:
        return json.loads((path / "state.json").read_text()).get("_data_files") == []
    except (OSError, ValueError, AttributeError):
        return False


def read_hf(path: str | Path) -> list[Example]:
    """Every example of a ``save_to_disk`` directory, after checking every row; a bad schema or row raises
    :class:`DataError` naming the directory, the first bad row and what was expected: none is dropped."""
    from datasets import load_from_disk

    path = Path(path)
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if is_hf_dir(p))
        raise DataError(path, None, f"a DatasetDict of splits {splits}; name one split's directory, e.g. "
                                    f"{path / (splits[0] if splits else 'train')}")
    if _no_data_files(path):  # datasets itself fails on loading an empty saved dataset
        raise DataError(path, None, "no rows; expected a non-empty dataset")
    try:
        ds = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(path, None, f"not a datasets save_to_disk directory ({e})") from None
    cols = set(ds.column_names)
    image_col = next((c for c in IMAGE_COLUMNS if c in cols), None)
    schema = next((s for s in TEXT_SCHEMAS if set(s) <= cols), None)
    if image_col is None or schema is None:
        raise DataError(path, None, f"columns {sorted(cols)}; expected an image column ({' or '.join(IMAGE_COLUMNS)}) "
                                    f"and 'conversations', 'messages' or 'question' + 'answer'")
    if len(ds) == 0:
        raise DataError(path, None, "no rows; expected a non-empty dataset")
    def row_examples(row, i):
        img = _image(row, image_col)
        category, answers = row_labels(row)
        rid = str(row["id"]) if row.get("id") is not None else str(i)
        out = []
        for k, (q, a) in enumerate(_pairs(row, schema)):
            if not q or not a:
                raise ValueError(f"pair {k}: an empty {'question' if not q else 'answer'}")
            out.append(Example(rid if k == 0 else f"{rid}#{k}", img, q, a, category, answers))
        return out

    return every_row(path, ds, row_examples)
