"""Where hololm keeps derived data (token arrays, trained tokenizers) and how entries are named:
`~/.cache/hololm` unless the environment variable HOLOLM_CACHE says otherwise, entries named by
a stable hash of everything that determines their content."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HASH_BLOCK_SIZE = 1 << 20


def default_cache_dir() -> Path:
    return Path(os.environ.get("HOLOLM_CACHE") or "~/.cache/hololm").expanduser()


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def stable_hash(*parts: object) -> str:
    """Hex digest of the parts' reprs: the same across runs, processes and machines, unlike
    Python's `hash`, which is salted per process."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def files_fingerprint(paths: list[Path], root: Path) -> str:
    """Hash of each file's path relative to `root` and of its bytes. Content, not size and
    mtime: a copy that keeps both (`cp -p`, rsync, a restored mtime) must not pass for the
    original, or the token cache and resume checks would trust stale data."""
    return stable_hash([(path.relative_to(root).as_posix(), file_digest(path))
                        for path in paths])


def file_digest(path: Path) -> str:
    """Hex digest of the file's bytes, read in blocks (a large table costs no memory)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(HASH_BLOCK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()
