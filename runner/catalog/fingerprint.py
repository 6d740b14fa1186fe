"""A media file's content hash: how the scanner recognises moved and copied files, and how a job
checks that the bytes it is about to transcribe are the ones the scan saw."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_hash(path: Path) -> str:
    """sha256 of the file's bytes: identifies moved and copied files."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
