"""The one record every data source yields, and the error a bad source raises."""
from __future__ import annotations

from dataclasses import dataclass


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
