"""Torch-free checks of user parameters shared by runs, sweeps and the CLI: each raises before any work starts,
with a message that names the parameter (or the file) and what is allowed."""
from __future__ import annotations

import os
from pathlib import Path

SEED_MAX = 2 ** 63 - 1  # torch.manual_seed and numpy's generators take seeds up to a signed 64-bit int


def article(word: str) -> str:
    """'an int', 'a str': the indefinite article a type name takes."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def check_seed(name: str, value) -> int:
    """A seed is an int in 0..2**63-1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"parameter {name!r} must be an int in 0..{SEED_MAX}, got {value!r} "
                        f"({type(value).__name__})")
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"parameter {name!r} must be an int in 0..{SEED_MAX} (2**63-1), got {value}")
    return value


def check_output_dir(name: str, path) -> None:
    """An output directory may exist or not, but neither it nor a parent may be a file, and the nearest existing
    one must be writable: otherwise the record would be lost after the run's training."""
    if path is None or path == "":
        return
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"parameter {name!r} must be a directory path (str), got {path!r} ({type(path).__name__})")
    p = Path(path).expanduser()
    for q in (p, *p.parents):
        if q.exists() or q.is_symlink():
            if not q.is_dir():
                what = "is" if q == p else f"lies under {q}, which is"
                raise ValueError(f"parameter {name!r}: {p} {what} an existing file, not a directory; give a "
                                 "directory path (it is created if missing)")
            if not os.access(q, os.W_OK | os.X_OK):
                raise ValueError(f"parameter {name!r}: {q} is not writable; give a directory this user can write")
            record = p / "record.json"
            if q == p and record.exists() and not record.is_file():
                raise ValueError(f"parameter {name!r}: {record} exists and is not a file; remove it or give "
                                 "another directory")
            return
