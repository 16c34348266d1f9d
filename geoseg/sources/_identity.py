"""A content-derived identity of input files: what a job's fingerprint says about its inputs.

Timestamps are not content: a file rewritten with the same bytes (``geoseg example`` run twice,
a copy, a fresh download) keeps its identity, and a changed file gets a new one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from geoseg._remote import filesystem, is_url, url_name

__all__ = ["content_identity", "FULL_HASH_BYTES", "relative_hint"]


def relative_hint(path: Path) -> str:
    """`` (relative to /the/working/dir)`` for a relative path, "" otherwise (or where the
    working directory itself is gone)."""
    if Path(path).is_absolute():
        return ""
    try:
        return f" (relative to {os.getcwd()})"
    except OSError:
        return " (relative to a working directory that no longer exists)"

FULL_HASH_BYTES = 64 << 20
"""Files up to this size (64 MiB: every MRI volume, small scenes) are hashed whole."""

_SAMPLE = 1 << 20
_SAMPLES = 64


def _file_digest(path: Path | str, h: hashlib._Hash) -> None:
    if isinstance(path, str):  # an object URL: the same digest from ranged reads
        fs = filesystem(path)
        size, name, opened = int(fs.size(path)), url_name(path), fs.open(path, "rb", block_size=_SAMPLE)
    else:
        size, name, opened = path.stat().st_size, path.name, path.open("rb")
    h.update(f"{name}:{size};".encode())
    with opened as f:
        if size <= FULL_HASH_BYTES:
            while chunk := f.read(1 << 22):
                h.update(chunk)
            return
        # Larger files: 64 evenly spaced 1 MiB samples, the first at the head (the TIFF header and
        # its tile offsets and byte counts, which change with any compressed tile) and the last
        # at the tail. A change that leaves every sampled byte and the size alone goes unseen:
        # the documented limit of a sampled identity (docs/design.md).
        step = (size - _SAMPLE) / (_SAMPLES - 1)
        for k in range(_SAMPLES):
            f.seek(int(k * step))
            h.update(f.read(_SAMPLE))


def content_identity(paths: Sequence[Path | str], salt: str = "") -> str:
    """sha256 over the names, sizes and bytes of ``paths`` (sampled for files over 64 MiB).

    A ``str`` is an object URL (``s3://...``): the same bytes give the same identity whether
    local or in an object store, so a job's fingerprint does not depend on where its inputs lie.

    Raises:
        OSError: a file that cannot be read (callers turn it into a one-line SourceError).
    """
    h = hashlib.sha256(salt.encode())
    for p in paths:
        _file_digest(p if isinstance(p, str) and is_url(p) else Path(p), h)
    return h.hexdigest()
