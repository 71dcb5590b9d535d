"""Image-question-answer data beyond the built-in world: LLaVA-format JSON files and Hugging Face ``datasets``
directories, read into one :class:`Example` type and checked row by row before any training."""
from .examples import DataError, Example

__all__ = ["DataError", "Example"]
