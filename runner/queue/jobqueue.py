"""The job queue: rq on Redis, jobs as JSON (never pickle), one job per media file."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import threading
import time
import uuid
from typing import Iterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from runner.errors import RunnerError

JOB_FUNC = "runner.queue.jobs.transcribe_media"
MIN_TIMEOUT_S = 600
TIMEOUT_PER_AUDIO_SECOND = 2.0  # generous: a slow CPU worker runs tiny.en at 10x real time or better


CONNECT_TIMEOUT_S = 10  # an unreachable host fails in seconds, not after the system's TCP timeout
TLS_FILES = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")  # rediss:// options naming files


class QueueUnreachable(RunnerError):
    """The queue's Redis cannot be used: `url` (password hidden) names it, `reason` says why."""

    def __init__(self, url: str, reason: str):
        self.url = shown_url(url)
        self.reason = reason
        super().__init__(f"Redis at {self.url}: {reason}")


def shown_url(url: str) -> str:
    """The URL with its password replaced by ***, fit for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def connect(url: str) -> redis.Redis:
    """A Redis client for `url` (redis://, rediss:// with TLS, unix://), checked with one PING.

    TLS options ride in the query: rediss://:PASSWORD@host:6379/0?ssl_ca_certs=/etc/ssl/queue-ca.pem.
    """
    for name, values in parse_qs(urlsplit(url).query).items():
        if name in TLS_FILES and not os.path.exists(values[0]):
            raise QueueUnreachable(url, f"{name} file {values[0]} not found")
    extra = {} if url.startswith("unix://") else {"socket_keepalive": True,
                                                   "socket_connect_timeout": CONNECT_TIMEOUT_S}
    try:
        client = redis.Redis.from_url(url, health_check_interval=30, **extra)  # the URL's own options win
        client.ping()
    except (redis.RedisError, OSError, ValueError, TypeError) as exc:
        raise QueueUnreachable(url, _reason(url, exc)) from None
    return client


def _reason(url: str, exc: Exception) -> str:
    """One line saying why a connection failed, with the fix for the usual TLS and password mistakes."""
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, redis.AuthenticationError):
        return f"password refused ({text}); the password goes in the URL: rediss://:PASSWORD@host:port/db"
    if isinstance(exc.__context__, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        verify = getattr(exc.__context__, "verify_message", None) or text
        if "mismatch" in verify:
            return f"its TLS certificate is for another host ({verify}); use a host name the certificate lists"
        return f"its TLS certificate is not trusted ({verify}); name the CA that signed it: ?ssl_ca_certs=/path/ca.pem"
    if isinstance(exc, TypeError):  # redis-py passes unknown query options on as keyword arguments
        return f"unknown option in the URL ({text})"
    if url.startswith("redis://") and ("reset by peer" in text or "closed by server" in text):
        return f"{text}; if that port speaks TLS, the URL starts with rediss://"
    return text


def job_queue(connection: redis.Redis, name: str = "scriptorium") -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def job_id(media_id: int) -> str:
    """One job id per media file, so enqueueing twice never makes two jobs."""
    return f"media-{media_id}"


def job_timeout(duration: float | None) -> int:
    """Seconds a job may run before a worker takes it (its worker then sets it from its measured
    pace, runner.queue.pace); this one only bounds rq's bookkeeping of a job nobody runs."""
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
        description=f"transcribe media {media_id}")  # no rq Retry: the catalog's attempts decide
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


HOLD_TTL_S = 60  # a held queue whose `run` died unseen frees itself within a minute


def hold_key(queue_name: str) -> str:
    """The Redis set of the runs still filling a queue (each adds a token while it scans)."""
    return f"scriptorium:{queue_name}:hold"


def is_held(connection: redis.Redis, queue_name: str) -> bool:
    return bool(connection.exists(hold_key(queue_name)))


@contextlib.contextmanager
def held(connection: redis.Redis, queue_name: str) -> Iterator[None]:
    """Hold the queue while this block fills it: burst workers started early (`run` starts its
    pool before it scans, so model loading overlaps the scan) wait for the jobs instead of
    finding an empty queue and exiting. The hold is refreshed until the block ends."""
    key, token = hold_key(queue_name), uuid.uuid4().hex
    done = threading.Event()

    def refresh() -> None:
        while not done.wait(HOLD_TTL_S / 3):
            try:
                connection.pexpire(key, int(HOLD_TTL_S * 1000))
            except redis.RedisError:
                pass  # the workers see the queue gone anyway

    connection.pipeline().sadd(key, token).pexpire(key, int(HOLD_TTL_S * 1000)).execute()
    threading.Thread(target=refresh, name="queue-hold", daemon=True).start()
    try:
        yield
    finally:
        done.set()
        connection.srem(key, token)


def wait_while_held(connection: redis.Redis, queue_name: str, poll: float = 0.05) -> float:
    """Block a burst worker until no run is filling the queue; returns the seconds waited."""
    started = time.monotonic()
    while is_held(connection, queue_name):
        time.sleep(poll)
    return time.monotonic() - started
