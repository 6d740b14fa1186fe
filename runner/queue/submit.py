"""Putting files on the queue. What each file's job asks for (options, model) is recorded in the
catalog first, so that every later re-queue (a worker's start, `run`, `retry`, `doctor`) asks for
the same thing instead of the defaults."""

from __future__ import annotations

from collections.abc import Iterable

from rq import Queue
from sqlalchemy import select, update

from engine.options import TranscribeOptions
from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.queue.jobqueue import enqueue

CHUNK = 500  # ids per statement: well under SQLite's bound-parameter limit


def submit(catalog: Catalog, queue: Queue, items: Iterable[tuple[int, float | None]], options: dict,
           model: str | None) -> int:
    """Record the request of each (media id, duration) and queue its job; returns how many."""
    items = list(items)
    for chunk in _chunks([i for i, _ in items]):
        with catalog.write() as session:
            session.execute(update(m.MediaFile).where(m.MediaFile.id.in_(chunk))
                            .values(job_options=options, job_model=model),
                            execution_options={"synchronize_session": False})
    for media_id, duration in items:
        enqueue(queue, media_id, options, model, duration)
    return len(items)


def resubmit(catalog: Catalog, queue: Queue, media_ids: Iterable[int]) -> int:
    """Queue these files again, each with its recorded request (the defaults where none was recorded)."""
    defaults, count = TranscribeOptions().to_dict(), 0
    for chunk in _chunks(list(media_ids)):
        with catalog.read() as session:
            rows = session.execute(select(m.MediaFile.id, m.MediaFile.duration, m.MediaFile.job_options,
                                          m.MediaFile.job_model).where(m.MediaFile.id.in_(chunk))).all()
        for media_id, duration, options, model in rows:
            enqueue(queue, media_id, options or defaults, model, duration)
        count += len(rows)
    return count


def _chunks(ids: list[int], size: int = CHUNK) -> Iterable[list[int]]:
    return (ids[i:i + size] for i in range(0, len(ids), size))
