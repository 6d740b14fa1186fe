"""The one status vocabulary shared by the job queue's metadata and the catalog's status columns."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """Where a media file (or a transcript) stands; stored as its plain string value."""

    new = "new"
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    skipped = "skipped"

    def __str__(self) -> str:
        return self.value
