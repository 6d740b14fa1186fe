"""Worker processes: the model loaded once, jobs taken from Redis, heartbeats in the catalog."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import signal
import socket
import threading
import time

import redis
from rq import SimpleWorker
from sqlalchemy import select
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

from engine.api import Transcriber
from engine.backends import backend_for
from engine.backends.ctranslate2_backend import default_replicas
from engine.errors import ModelError
from engine.model_store import verify_model
from engine.models import resolve_model
from engine.options import RuntimeOptions, TranscribeOptions
from engine.scheduling import LOOKAHEAD
from engine.vad_pool import shared_pool
from runner.catalog import models as m
from runner.queue import jobs
from runner.config import Settings
from runner.catalog.db import Catalog
from runner.errors import JobInterrupted, RunnerError  # noqa: F401 - JobInterrupted: its old home
from runner.catalog.outputs import write_pending
from runner.queue.pace import Pace
from runner.queue.jobqueue import claim_queue, connect, is_pending, job_queue, wait_while_held
from runner.catalog.reconcile import requeue_orphans
from runner.catalog.status import Status
from runner.queue.submit import resubmit

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0
LISTENER_POLL_S = 0.5  # how long rq's command listener may sit in one read before it checks for a stop


class ScriptoriumWorker(SimpleWorker):
    """rq's in-process worker (no fork after the model is loaded) that stops between windows."""

    pace: Pace | None = None  # this worker's measured speed: each job's timeout comes from it

    def request_stop(self, signum, frame):
        jobs.STOP.set()
        return super().request_stop(signum, frame)

    def execute_job(self, job, queue):
        """Run the job with a timeout from this worker's pace; afterwards, a file the catalog still
        wants (a stop, a transient error with attempts left, a catalog outage) is queued again at
        once, with the options its job asked for. The catalog's attempt count is the one retry
        policy: rq never retries by itself."""
        media_id = (job.kwargs or {}).get("media_id")
        if self.pace is not None and media_id is not None:
            job.timeout = self.pace.timeout(_duration(media_id))
        try:
            return super().execute_job(job, queue)
        finally:
            if media_id is not None:
                _after_job(job, queue, media_id, self.pace)

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
    """Record a failed attempt of the file in the catalog, unless the failure is not the file's:
    a requested stop, a catalog outage (it could not be recorded anyway), a failed helper process.
    Either way the file is queued again after the job (ScriptoriumWorker.execute_job) while the
    catalog's attempts allow."""
    media_id = (job.kwargs or {}).get("media_id")
    if media_id is None or not jobs.has_context() or jobs.is_catalog_outage(exc_value):
        return True
    ctx = jobs.context()
    try:
        if exc_type is JobInterrupted:
            ctx.catalog.set_media_status(media_id, Status.queued)
        else:
            ctx.catalog.record_failure(media_id, f"{exc_type.__name__}: {exc_value}", False,
                                       ctx.settings.max_attempts, counted=not jobs.not_the_files_fault(exc_value))
    except Exception as exc:  # noqa: BLE001 - the catalog may be the thing that failed
        log.warning("media %s: cannot record failure: %s", media_id, exc)
    return True


def _duration(media_id: int) -> float | None:
    try:
        with jobs.context().catalog.read() as session:
            return session.scalar(select(m.MediaFile.duration).where(m.MediaFile.id == media_id))
    except Exception:  # noqa: BLE001 - a catalog outage: the floor timeout, the job waits for it
        return None


def _after_job(job, queue, media_id: int, pace: Pace | None) -> None:
    """Time the finished job into the pace; queue the file again if the catalog still wants it."""
    result = job.return_value() if hasattr(job, "return_value") else None
    if pace is not None and isinstance(result, dict) and result.get("status") == "done":
        pace.observe(result.get("audio_seconds"), result.get("wall"))
    server = jobs.context().server if jobs.has_context() else None
    if server is not None and server.broken is not None and not jobs.STOP.is_set():
        log.error("the window server failed (%s): this worker stops, its files go back to the queue", server.broken)
        os.kill(os.getpid(), signal.SIGTERM)  # the usual stop: every job ends between windows, then run_worker raises
    if isinstance(result, dict) and result.get("status") == "superseded":
        return  # the file belongs to the attempt that took it over
    try:
        ctx = jobs.context()
        with ctx.catalog.read() as session:
            status, outputs = session.execute(select(m.MediaFile.status, m.MediaFile.outputs_pending)
                                              .where(m.MediaFile.id == media_id)).one()
        # outputs a disk refused wait for the next worker, run or scan: at once, they would fail again
        if status in (Status.queued, Status.running) and outputs is None and not is_pending(queue, media_id):
            resubmit(ctx.catalog, queue, [media_id])
    except Exception as exc:  # noqa: BLE001 - catalog or Redis down: the next worker start re-queues it
        log.warning("media %s: not queued again after its job (%s); the next worker or run will", media_id, exc)


def run_worker(settings: Settings, compute: str = "cpu", threads: int = 0, model: str | None = None,
               burst: bool = False, batch: int = 1, runtime: RuntimeOptions | None = None) -> None:
    """Load the model, then work the queue until stopped (or until it is empty with burst).

    With batch > 1, 2 x `batch` job threads share the model through a window server, which decodes
    up to `batch` of their windows together (split into one call per model replica, run at once);
    with 1, jobs run one after another in this thread. `runtime` without replicas gets the
    device's and batch's default (default_replicas).
    """
    runtime = runtime or RuntimeOptions()
    vad = shared_pool(runtime.vad_processes)  # the pool the Transcriber below takes
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
    if runtime.replicas is None:
        replicas = default_replicas(compute, threads, batch) if backend == "ctranslate2" else 1
        runtime = dataclasses.replace(runtime, replicas=replicas)
    transcriber = Transcriber(model=spec, compute=compute, threads=threads, backend=backend, runtime=runtime)
    name = worker_name(transcriber.backend.compute)
    # batching: LOOKAHEAD x batch job threads, so each model call can take windows of one prompt length
    names = [name] if batch <= 1 else [f"{name}.{i}" for i in range(batch * LOOKAHEAD)]
    for each in names:
        catalog.heartbeat_worker(each, transcriber.backend.compute, socket.gethostname(), os.getpid())
    # one server for every job's options: windows share calls where their options agree
    server = transcriber.window_server(TranscribeOptions(), batch) if batch > 1 else None
    ScriptoriumWorker.pace = Pace.measure(transcriber.backend, spec.n_mels, len(names))
    log.info("pace %.3f s per audio second: a 1-hour file may take %d s", ScriptoriumWorker.pace.seconds_per_audio_second,
             ScriptoriumWorker.pace.timeout(3600))
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
        write_pending(catalog, settings)  # a worker killed after a transcript, before its files
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
    if server is not None and server.broken is not None:
        raise RunnerError(f"the window server failed ({server.broken}): this worker stopped; start it again")


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
