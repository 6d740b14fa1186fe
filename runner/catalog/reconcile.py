"""Bring the queue back in line with the catalog: jobs of dead workers and files without a job."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket

from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import select

from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.queue.jobqueue import is_pending
from runner.queue.submit import resubmit
from runner.catalog.status import Status

log = logging.getLogger(__name__)
DEAD_AFTER_S = 60.0


def _pid_alive(pid: int) -> bool:
    """True if the process runs; a zombie (killed, not yet reaped by its new parent) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def worker_dead(catalog: Catalog, name: str | None, now: dt.datetime | None = None) -> bool:
    """A worker is dead if its process is gone (same host) or its heartbeat is older than a minute."""
    if not name:
        return True
    with catalog.read() as session:
        info = session.get(m.WorkerInfo, name)
    if info is None:
        return True
    if info.host == socket.gethostname() and not _pid_alive(info.pid):
        return True
    now = now or m.utcnow()
    return (now - info.last_seen).total_seconds() > DEAD_AFTER_S


def release_abandoned(catalog: Catalog, queue: Queue) -> int:
    """Started jobs whose worker died go back to the queue (they resume from their last window)."""
    registry = StartedJobRegistry(queue=queue)
    released = 0
    for job_id in registry.get_job_ids():
        try:
            job = Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer)
        except Exception:  # noqa: BLE001 - gone or unreadable: the catalog re-queues its file
            queue.connection.zrem(registry.key, *[k for k in queue.connection.zrange(registry.key, 0, -1)
                                                  if k.decode().startswith(job_id + ":")])
            continue
        if not job.worker_name:
            continue  # being taken: rq registers the start before it names the worker (a live job)
        if worker_dead(catalog, job.worker_name):
            registry.remove_executions(job)
            job.delete()
            released += 1
            log.info("released job %s of dead worker %s", job_id, job.worker_name)
    return released


def requeue_orphans(catalog: Catalog, queue: Queue) -> int:
    """Enqueue every queued or running file that has no live job, with the options and model its
    job asked for (recorded by runner.queue.submit); returns how many."""
    release_abandoned(catalog, queue)
    with catalog.read() as session:
        ids = session.scalars(select(m.MediaFile.id)
                              .where(m.MediaFile.status.in_([Status.queued, Status.running]))).all()
    return resubmit(catalog, queue, [i for i in ids if not is_pending(queue, i)])
