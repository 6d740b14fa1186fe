"""One retry policy, the catalog's (issue 19): rq never retries by itself; a failed attempt of the
file uses one of max_attempts and the file is queued again at once; a stop or a failed helper
process uses none. Real Redis, rq, SQLite, model and file; the failure itself is injected into the
job (it cannot be made to happen on demand), which the tests say where they do it."""

from __future__ import annotations

import pytest

from engine.errors import MediaError
from engine.vad_pool import VadWorkerError
from runner.catalog import models as m
from runner.queue import jobs
from runner.config import Settings, sqlite_url_for
from runner.catalog.db import RUNAWAY_FACTOR, Catalog
from runner.queue.embedded_redis import EmbeddedRedis
from runner.queue.jobqueue import connect, job_queue
from runner.catalog.report import build_report, format_report
from runner.queue.scanner import Scanner
from runner.queue.submit import submit
from runner.queue.worker import JobInterrupted, ScriptoriumWorker, _worker
from tests.test_runner_e2e import copy_in


@pytest.fixture
def rig(tmp_path, shared_audio_dir, cpu_transcriber):
    """A scanned real clip, its catalog and queue, and the worker context jobs run in."""
    folder = tmp_path / "media"
    copy_in(shared_audio_dir / "LDC93S1.wav", folder)
    settings = Settings(tmp_path / "data", sqlite_url_for(tmp_path / "data"), None)
    catalog = Catalog.open(settings.db_url)
    server = EmbeddedRedis(tmp_path / "redis")
    queue = job_queue(connect(server.start()), "scriptorium")
    summary = Scanner(catalog).scan([folder])
    submit(catalog, queue, summary.to_queue, {}, None)
    jobs.set_context(jobs.WorkerContext(settings, catalog, cpu_transcriber, "test-worker"))
    yield catalog, queue, summary.to_queue[0][0]
    jobs.set_context(None)
    catalog.close()
    server.stop()


def inject(monkeypatch, *failures):
    """The job's decoding raises each of `failures` in turn, then runs for real; returns the calls."""
    calls, real = [], jobs._run

    def fake(ctx, media, opts):
        calls.append(media.id)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return real(ctx, media, opts)

    monkeypatch.setattr(jobs, "_run", fake)
    return calls


def media(catalog: Catalog, media_id: int) -> m.MediaFile:
    with catalog.read() as session:
        row = session.get(m.MediaFile, media_id)
        session.expunge(row)
        return row


def work(queue, max_jobs: int | None = None) -> None:
    _worker(ScriptoriumWorker, queue, "retry-test").work(burst=True, max_jobs=max_jobs, logging_level="WARNING")


def test_a_transient_failure_uses_one_attempt_and_is_queued_again_at_once(rig, monkeypatch):
    catalog, queue, media_id = rig
    calls = inject(monkeypatch, *[MediaError("x.wav", "stalled read", permanent=False)] * 5)
    work(queue, max_jobs=1)
    row = media(catalog, media_id)
    assert (row.status.value, row.attempts) == ("queued", 1)
    assert len(queue) == 1, "not queued again after the failed attempt"
    assert "retrying (1 of 3 attempts failed)" in format_report(build_report(catalog))
    work(queue)
    row = media(catalog, media_id)
    assert len(calls) == 3, "exactly max_attempts runs: rq must not retry on its own"
    assert (row.status.value, row.attempts, len(queue)) == ("failed", 3, 0)
    assert "failed after 3 attempt(s)" in format_report(build_report(catalog))


def test_a_stop_uses_no_attempt(rig, monkeypatch):
    catalog, queue, media_id = rig
    calls = inject(monkeypatch, JobInterrupted("worker stopping"), JobInterrupted("worker stopping"))
    work(queue)
    row = media(catalog, media_id)
    assert len(calls) == 3 and (row.status.value, row.attempts) == ("done", 0)


def test_a_failed_helper_process_is_not_the_files_failure(rig, monkeypatch):
    """A dead VAD helper used to count as the file's failed attempt; now it uses none, but a file
    whose helper keeps failing still stops after RUNAWAY_FACTOR x max_attempts tries."""
    catalog, queue, media_id = rig
    calls = inject(monkeypatch, VadWorkerError("helper exited"), VadWorkerError("helper exited"))
    work(queue)
    row = media(catalog, media_id)
    assert len(calls) == 3 and (row.status.value, row.attempts) == ("done", 0)

    with catalog.write() as session:  # the same file again, from scratch
        row = session.get(m.MediaFile, media_id)
        row.status, row.errors_log, row.attempts = "queued", [], 0
        session.query(m.Transcript).delete()
    calls = inject(monkeypatch, *[VadWorkerError("helper exited")] * 20)
    submit(catalog, queue, [(media_id, 3.0)], {}, None)
    work(queue)
    row = media(catalog, media_id)
    assert len(calls) == RUNAWAY_FACTOR * 3 and (row.status.value, row.attempts) == ("failed", 0)


def test_a_permanent_failure_fails_at_once(rig, monkeypatch):
    catalog, queue, media_id = rig
    calls = inject(monkeypatch, MediaError("x.wav", "not audio"))
    work(queue)
    row = media(catalog, media_id)
    assert len(calls) == 1 and (row.status.value, row.attempts) == ("failed", 1)


def test_the_job_timeout_comes_from_the_workers_measured_pace(rig, monkeypatch, cpu_transcriber):
    """Not tiny.en's fixed 2x the audio: the worker times its model at start and sizes each job's
    timeout from it (10x its pace, at least TIMEOUT_FLOOR_S)."""
    from rq import get_current_job

    from runner.queue.pace import MARGIN, TIMEOUT_FLOOR_S, Pace

    catalog, queue, media_id = rig
    seen = []
    real = jobs._run
    monkeypatch.setattr(jobs, "_run", lambda ctx, media, opts: (seen.append(get_current_job().timeout),
                                                                real(ctx, media, opts))[1])
    pace = Pace.measure(cpu_transcriber.backend, cpu_transcriber.model.n_mels)
    assert 0.001 < pace.seconds_per_audio_second < 1.0  # tiny.en on this CPU: 1-100 ms per audio second
    monkeypatch.setattr(ScriptoriumWorker, "pace", Pace(2.0))  # a model 2x slower than real time here
    work(queue)
    duration = media(catalog, media_id).duration
    assert seen == [int(TIMEOUT_FLOOR_S + MARGIN * 2.0 * duration)]
    slow = Pace(2.0)
    slow.observe(3600, 360)  # easy files never shorten the timeout below the measured pace
    assert slow.seconds_per_audio_second == 2.0
    slow.observe(100, 1000)
    assert slow.seconds_per_audio_second > 2.0
