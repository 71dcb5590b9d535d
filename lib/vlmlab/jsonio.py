"""Torch-free JSON helpers shared by runs and sweeps (the sweep driver must not pay torch's import time)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

PENDING = ".pending"  # where a run's notebook writes its record until the whole notebook has executed


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON to a temporary file beside ``path``, fsync, then rename: readers never see half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def params_hash(params: dict) -> str:
    """A short, stable hash of a parameter dict (names run directories)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


class RecordError(ValueError):
    """A ``record.json`` that does not parse or lacks what every record holds; the message names the file."""


# what every run record holds (vlmlab.runs.run writes more): the tools read these without checking again
RECORD_KEYS = {"config": dict, "metrics": dict, "chance": dict, "params": dict}
CONFIG_KEYS = ("arch", "seed", "budget", "knobs")


def load_record(path: str | Path) -> dict:
    """The run record in the file ``path``; raises :class:`RecordError` (naming the file) when it cannot be read,
    is not a JSON object, or lacks a key of :data:`RECORD_KEYS` or of its config (:data:`CONFIG_KEYS`)."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: unreadable ({e})") from None
    except ValueError as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(rec, dict):
        raise RecordError(f"{path}: a record is a JSON object, got {type(rec).__name__}")
    for key, typ in RECORD_KEYS.items():
        if not isinstance(rec.get(key), typ):
            raise RecordError(f"{path}: not a run record: key {key!r} is missing or not a {typ.__name__} (a record "
                              f"holds {sorted(RECORD_KEYS)})")
    missing = [k for k in CONFIG_KEYS if k not in rec["config"]]
    if missing:
        raise RecordError(f"{path}: not a run record: its config lacks {missing}")
    if not isinstance(rec["config"]["knobs"], dict):
        raise RecordError(f"{path}: not a run record: its config's 'knobs' is not a dict")
    return rec


def read_record(run_dir: str | Path) -> dict | None:
    """The record of a run directory if its ``record.json`` is a valid run record (:func:`load_record`), else
    None: the one test of whether a run is complete."""
    try:
        return load_record(Path(run_dir) / "record.json")
    except RecordError:
        return None
