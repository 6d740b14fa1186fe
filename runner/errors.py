"""Typed errors of the runner: each carries what failed and the reason, never a bare traceback."""

from __future__ import annotations


class RunnerError(Exception):
    """Base of every error the runner raises on purpose."""


class CatalogError(RunnerError):
    """The catalog database is unusable for a request (missing row, drift, wrong state)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class JobInterrupted(RunnerError):
    """The worker was asked to stop mid-file: the job goes back to the queue and resumes later."""


class Superseded(CatalogError):
    """Another attempt took this transcript over (its job was released as a dead worker's and run
    again): this attempt's writes are refused and it stops, leaving the transcript to the other."""

    def __init__(self, transcript_id: int, owner: str | None):
        self.transcript_id = transcript_id
        self.owner = owner
        super().__init__(f"transcript {transcript_id} was taken over by another attempt"
                         f"{f' on {owner}' if owner else ''}; this attempt stops")


class SearchError(RunnerError):
    """A full-text query cannot be run; `query` is the user's text, `reason` says why."""

    def __init__(self, query: str, reason: str):
        self.query = query
        self.reason = reason
        super().__init__(f"search {query!r}: {reason}")
