"""Worker processes: the model loaded once, jobs taken from Redis, heartbeats in the catalog."""

from __future__ import annotations

import inspect
import logging
import os
import signal
import socket
import threading
import time

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

from engine.api import Transcriber
from engine.backends import backend_for
from engine.backends.ctranslate2_backend import default_replicas
from engine.errors import ModelError
from engine.model_store import verify_model
from engine.models import resolve_model
from engine.options import TranscribeOptions
from engine.scheduling import LOOKAHEAD
from engine.vad_pool import shared_pool
from runner import jobs
from runner.config import Settings
from runner.db import Catalog
from runner.errors import RunnerError
from runner.queue import claim_queue, connect, job_queue, wait_while_held
from runner.reconcile import requeue_orphans

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0
LISTENER_POLL_S = 0.5  # how long rq's command listener may sit in one read before it checks for a stop


class JobInterrupted(Exception):
    """The worker was asked to stop mid-file: the job goes back to the queue and resumes later."""


class ScriptoriumWorker(SimpleWorker):
    """rq's in-process worker (no fork after the model is loaded) that stops between windows."""

    def request_stop(self, signum, frame):
        jobs.STOP.set()
        return super().request_stop(signum, frame)

    def subscribe(self):
        """rq's command listener, woken every LISTENER_POLL_S instead of rq's 60 s, so that it ends
        soon after it is told to (redis-py 8 waits for it to end; see unsubscribe)."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=LISTENER_POLL_S, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def unsubscribe(self):
        """Tell the listener to end and go on without waiting for it. rq's own unsubscribe calls the
        listener's stop(), which since redis-py 8 joins the thread, blocked in rq's 60 s read: every
        burst worker (and so every `run`) ended a minute after its last file."""
        thread, self.pubsub_thread = self.pubsub_thread, None
        if thread is None:
            return
        try:
            self.pubsub.unsubscribe()
        except redis.exceptions.RedisError:
            pass  # Redis gone: the listener ends on its own error
        _stop_without_waiting(thread)


def _stop_without_waiting(thread) -> None:
    """Clear a redis-py PubSubWorkerThread's running flag: stop(timeout=0) on redis-py 8, which
    joins the thread in stop(); plain stop() before, which never joined."""
    if "timeout" in inspect.signature(thread.stop).parameters:
        thread.stop(timeout=0)
    else:
        thread.stop()


def worker_name(compute: str) -> str:
    return f"{socket.gethostname()}.{os.getpid()}.{compute}"


def _heartbeat(catalog: Catalog, names: list[str], compute: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            for name in names:
                catalog.heartbeat_worker(name, compute, socket.gethostname(), os.getpid())
        except Exception as exc:  # noqa: BLE001 - a catalog outage must not kill the worker
            log.warning("heartbeat failed: %s", exc)


def _on_failure(job, exc_type, exc_value, _tb) -> bool:
    """Record the attempt in the catalog (not for a requested stop); rq's Retry re-queues it.

    A catalog outage is not the file's fault: it costs the file no attempt (and could not be
    recorded anyway); the file stays queued or running, so the next worker start re-queues it.
    """
    if exc_type is JobInterrupted or not jobs.has_context() or jobs.is_catalog_outage(exc_value):
        return True
    media_id = (job.kwargs or {}).get("media_id")
    if media_id is not None:
        ctx = jobs.context()
        try:
            ctx.catalog.record_failure(media_id, f"{exc_type.__name__}: {exc_value}", False,
                                       ctx.settings.max_attempts)
        except Exception as exc:  # noqa: BLE001 - the catalog may be the thing that failed
            log.warning("media %s: cannot record failure: %s", media_id, exc)
    return True


def run_worker(settings: Settings, compute: str = "cpu", threads: int = 0, model: str | None = None,
               burst: bool = False, batch: int = 1) -> None:
    """Load the model, then work the queue until stopped (or until it is empty with burst).

    With batch > 1, 2 x `batch` job threads share the model through a window server, which decodes
    up to `batch` of their windows together (split into one call per model replica, run at once);
    with 1, jobs run one after another in this thread.
    """
    vad = shared_pool()
    if vad is not None:
        vad.start()  # the voice activity helpers load while the model does, not when the first file opens
    spec = resolve_model(model, settings.models_dir)
    problems = verify_model(spec)  # a model with a manifest must still match it
    if problems:
        raise ModelError(spec.name, f"fails verification, refusing to load it ({'; '.join(problems)}); "
                                    f"see 'scriptorium models verify {spec.name}'")
    catalog = Catalog.open(settings.db_url)
    connection = connect(settings.redis_url)
    # refused before loading the model: a queue bound to another catalog names other media ids
    claim_queue(connection, settings.queue_name, catalog.identity(), catalog.url.render_as_string(hide_password=True))
    backend = backend_for(compute)
    replicas = default_replicas(compute, threads, batch) if backend == "ctranslate2" else 1
    transcriber = Transcriber(model=spec, compute=compute, threads=threads, backend=backend, replicas=replicas)
    name = worker_name(transcriber.backend.compute)
    # batching: LOOKAHEAD x batch job threads, so each model call can take windows of one prompt length
    names = [name] if batch <= 1 else [f"{name}.{i}" for i in range(batch * LOOKAHEAD)]
    for each in names:
        catalog.heartbeat_worker(each, transcriber.backend.compute, socket.gethostname(), os.getpid())
    # one server for every job's options: windows share calls where their options agree
    server = transcriber.window_server(TranscribeOptions(), batch) if batch > 1 else None
    jobs.set_context(jobs.WorkerContext(settings, catalog, transcriber, name, server))
    queue = job_queue(connection, settings.queue_name)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(catalog, names, transcriber.backend.compute, stop),
                     daemon=True).start()
    level = logging.getLevelName(logging.getLogger().level)
    try:
        if burst:  # a `run` that started this worker before its scan: wait for its jobs
            wait_while_held(connection, settings.queue_name)
        requeue_orphans(catalog, queue)
        if server is None:
            _worker(ScriptoriumWorker, queue, name).work(burst=burst, logging_level=level)
        else:
            _work_in_threads([_worker(ThreadWorker, queue, n) for n in names], burst, level)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        # rq gives up on a job whose end it cannot record; the catalog holds every committed window
        raise RunnerError(f"lost the queue's Redis ({exc}): this worker stops; its unfinished file is "
                          "re-queued by the next worker or run and resumes at its last window") from exc
    finally:
        stop.set()
        catalog.close()


def _worker(cls, queue, name: str):
    return cls([queue], connection=queue.connection, serializer=JSONSerializer, name=name,
               exception_handlers=[_on_failure], disable_default_exception_handler=False)


class ThreadWorker(ScriptoriumWorker):
    """One of several job threads of a batching worker: the main thread owns the signals."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        pass


def _work_in_threads(workers: list, burst: bool, level: str) -> None:
    """Run each worker in a thread; on SIGTERM or SIGINT stop taking jobs and end between windows."""
    threads = [threading.Thread(target=w.work, kwargs={"burst": burst, "logging_level": level}, daemon=True)
               for w in workers]
    stopping = threading.Event()

    def request_stop(signum, _frame):
        jobs.STOP.set()
        stopping.set()
        for w in workers:
            w._stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if stopping.is_set() and not any(w.get_current_job_id() for w in workers):
            break  # idle threads may be blocked on the queue: leave them
        time.sleep(0.2)
    for w in workers:
        try:
            w.register_death()
        except Exception:  # noqa: BLE001 - Redis may be gone; its keys expire anyway
            pass
