"""The one record every data source yields, and the error a bad source raises."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable


class DataError(ValueError):
    """A data file that cannot be used: the message names the file, the row and what was expected (a
    ``ValueError``, so that the CLI prints it as one line)."""

    def __init__(self, source, row, problem: str):
        where = f"{source}" if row is None else f"{source}, row {row}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Example:
    """One image with one question and its answer. ``image`` is a file path or an in-memory PIL image;
    ``category`` groups the scores (None where the source has none); ``answers`` is the answer set the answer was
    drawn from where it is known (the world's exports), which fixes chance."""

    id: str
    image: object
    question: str
    answer: str
    category: str | None = None
    answers: tuple[str, ...] | None = None


def row_labels(row: dict) -> tuple[str | None, tuple[str, ...] | None]:
    """A row's optional ``category`` (a string) and ``answers`` (a non-empty list of strings), checked; a
    ValueError says what is wrong (the caller adds the file and the row)."""
    category, answers = row.get("category"), row.get("answers")
    if category is not None and not isinstance(category, str):
        raise ValueError(f"'category' must be a string, got {category!r}")
    if answers is not None and not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
        raise ValueError(f"'answers' must be a non-empty list of strings, got {answers!r}")
    return category, tuple(answers) if answers else None


def every_row(source, rows: Iterable, row_examples: Callable[[object, int], list[Example]]) -> list[Example]:
    """The examples of every row (``row_examples(row, i)``), after checking all of them: a row whose check raises a
    ValueError makes this raise :class:`DataError` naming the source, the first bad row and how many more are
    bad, so that no bad row is ever dropped silently."""
    out, bad = [], []
    for i, row in enumerate(rows):
        try:
            out += row_examples(row, i)
        except ValueError as e:
            bad.append((i, e))
    if bad:
        i, e = bad[0]
        more = f" ({len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise DataError(source, i, f"{e}{more}")
    return out
