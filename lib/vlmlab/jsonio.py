"""Torch-free JSON helpers shared by runs and sweeps (the sweep driver must not pay torch's import time)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


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
