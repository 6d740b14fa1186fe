"""The job queue: rq on Redis, jobs as JSON (never pickle), one job per media file."""

from __future__ import annotations

import json

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from runner.errors import RunnerError

JOB_FUNC = "runner.jobs.transcribe_media"
MIN_TIMEOUT_S = 600
TIMEOUT_PER_AUDIO_SECOND = 2.0  # generous: a slow CPU worker runs tiny.en at 10x real time or better


def connect(url: str) -> redis.Redis:
    """A Redis client for `url` (redis://, rediss:// with TLS, unix://)."""
    extra = {} if url.startswith("unix://") else {"socket_keepalive": True}
    return redis.Redis.from_url(url, health_check_interval=30, **extra)


def job_queue(connection: redis.Redis, name: str = "scriptorium") -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def job_id(media_id: int) -> str:
    """One job id per media file, so enqueueing twice never makes two jobs."""
    return f"media-{media_id}"


def job_timeout(duration: float | None) -> int:
    """Seconds a job may run: long files get long timeouts."""
    return int(max(MIN_TIMEOUT_S, (duration or 0) * TIMEOUT_PER_AUDIO_SECOND))


def is_pending(queue: Queue, media_id: int) -> bool:
    """True if the file's job waits in the queue or runs on a worker."""
    try:
        job = Job.fetch(job_id(media_id), connection=queue.connection, serializer=JSONSerializer)
    except Exception:  # noqa: BLE001 - NoSuchJobError, or a job rq can no longer read
        return False
    return job.get_status(refresh=False) in ("queued", "started", "deferred", "scheduled")


def enqueue(queue: Queue, media_id: int, options: dict, model: str | None, duration: float | None) -> str:
    """Queue the transcription of one media file unless it is already pending."""
    if is_pending(queue, media_id):
        return job_id(media_id)
    job = queue.enqueue_call(
        JOB_FUNC, kwargs={"media_id": media_id, "options": options, "model": model},
        timeout=job_timeout(duration), job_id=job_id(media_id), result_ttl=3600, failure_ttl=7 * 86400,
        retry=Retry(max=3), description=f"transcribe media {media_id}")
    return job.id


class ForeignQueueError(RunnerError):
    """The queue was claimed by another catalog: its jobs name media ids of that catalog."""


def owner_key(queue_name: str) -> str:
    """The Redis key naming the catalog a queue belongs to."""
    return f"scriptorium:{queue_name}:catalog"


def queue_owner(connection: redis.Redis, queue_name: str) -> dict | None:
    """{"id": identity, "catalog": URL without password} of the queue's catalog, or None if unclaimed."""
    raw = connection.get(owner_key(queue_name))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"id": raw.decode(errors="replace"), "catalog": "?"}


def claim_queue(connection: redis.Redis, queue_name: str, identity: str, shown: str) -> None:
    """Bind the queue to this catalog on first use; refuse a queue bound to another one.

    Jobs carry media ids only, so a worker reading another catalog's queue would transcribe the
    wrong files (or none) and record them in the wrong place.
    """
    key = owner_key(queue_name)
    connection.set(key, json.dumps({"id": identity, "catalog": shown}), nx=True)
    owner = queue_owner(connection, queue_name)
    if owner is not None and owner.get("id") != identity:
        raise ForeignQueueError(
            f"queue '{queue_name}' on this Redis belongs to the catalog {owner.get('catalog')} "
            f"({owner.get('id')}), not to {shown} ({identity}): workers of different catalogs must not share a "
            f"queue. Give this catalog its own Redis database, or, if that catalog is gone for good, delete the "
            f"key '{key}' (redis-cli DEL {key}).")
