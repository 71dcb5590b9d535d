"""A content-addressed on-disk cache for pretrained backbones.

An entry lives in ``<root>/<name>-<key>/`` where key is a hash of the config that produced it. It is written
into a temporary directory and renamed into place, and carries a ``MANIFEST.json`` with the sha256 of every
file; an entry whose manifest is missing or does not match its files is treated as absent and rebuilt.

Shipped entries: the repository carries the default budget's three entries under ``data/backbones/`` (the same
layout), so that a first run reads the backbones every measured table was read with instead of spending most of
its time building its own (data/backbones/README.md). They are looked up after the user's cache, never written
and never removed; ``VLMLAB_SHIPPED=0`` ignores them.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

CACHE_VERSION = 2  # bump when pretraining code changes what a key produces
DATA = Path(__file__).resolve().parents[3] / "data"  # the repository's data/ folder


def cache_root() -> Path:
    root = os.environ.get("VLMLAB_CACHE")
    if root:
        return Path(root)
    return DATA / "cache"


SHIPPED_ENV = "VLMLAB_SHIPPED"


def shipped_root() -> Path | None:
    """Where the repository's shipped backbones live (``data/backbones/``), or None when ``$VLMLAB_SHIPPED`` is 0
    (then every backbone comes from the cache or is built)."""
    env = os.environ.get(SHIPPED_ENV, "").strip()
    if env not in ("", "0", "1"):
        raise ValueError(f"{SHIPPED_ENV}={env!r}; allowed values: 0 (ignore the shipped backbones) or 1 (use them)")
    if env == "0":
        return None
    return DATA / "backbones"


def config_key(config: dict) -> str:
    blob = json.dumps({"v": CACHE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entry_dir(name: str, config: dict, root: Path | None = None) -> Path:
    return (root or cache_root()) / f"{name}-{config_key(config)}"


def is_valid(path: Path) -> bool:
    man = path / "MANIFEST.json"
    if not man.is_file():
        return False
    try:
        files = json.loads(man.read_text())["files"]
        return all((path / f).is_file() and _sha256(path / f) == h for f, h in files.items())
    except (ValueError, KeyError, OSError):
        return False


def fingerprint(path) -> str | None:
    """What a cache entry holds, independent of where the cache lives: the entry's name and the hash of its
    manifest (which hashes every file). Results computed from a backbone are keyed by this, so moving or copying
    the cache keeps them, and a rebuilt entry (new weights under the same name) retires them. Anything that is not
    a cache entry (a real checkpoint's path or timm name) is its own identity."""
    if path is None:
        return None
    man = Path(path) / "MANIFEST.json"
    if not man.is_file():
        return str(path)
    return f"{Path(path).name}@{hashlib.sha256(man.read_bytes()).hexdigest()[:16]}"


def lookup(name: str, config: dict, root: Path | None = None, *, read_only: bool = False) -> Path | None:
    """The entry's directory if it exists and is intact. A corrupt entry is reported, and removed unless
    ``read_only`` (a shipped entry belongs to the repository, not the cache)."""
    path = entry_dir(name, config, root)
    if not path.exists():
        return None
    if is_valid(path):
        return path
    if read_only:
        warnings.warn(f"the shipped backbone {path} does not match its manifest; it is ignored and a fresh one is "
                      f"built into the cache (`git checkout -- {path}` restores it)", stacklevel=2)
    else:
        warnings.warn(f"cache entry {path} is partial or corrupt; it will be rebuilt", stacklevel=2)
        shutil.rmtree(path, ignore_errors=True)
    return None


def lookup_shipped(name: str, config: dict, root: Path | None = None) -> Path | None:
    """The shipped entry (under ``root``, default :func:`shipped_root`) if present and intact; a damaged one (a
    partial checkout, a Git LFS pointer) is reported and left alone."""
    root = root or shipped_root()
    return None if root is None else lookup(name, config, root, read_only=True)


@contextlib.contextmanager
def build_lock(name: str, config: dict, root: Path | None = None):
    """Exclusive lock per entry: concurrent processes (sweep workers, notebooks) build an entry once; the others
    wait, then find it in the cache."""
    path = entry_dir(name, config, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def store(name: str, config: dict, write, root: Path | None = None) -> Path:
    """Call ``write(tmpdir)`` to fill a fresh directory, checksum it, then move it into place atomically."""
    final = entry_dir(name, config, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write(tmp)
        files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True, default=str))
        files["config.json"] = _sha256(tmp / "config.json")
        (tmp / "MANIFEST.json").write_text(json.dumps({"files": files}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
