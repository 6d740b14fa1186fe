"""A burst worker leaves within 2 s of its last job: real Redis, real rq, the clock read, nothing mocked.

With redis-py 8, rq's listener stop() joins a thread blocked in a 60 s read, so every burst
worker (and every `run`) ended a minute after its last file (issue 18).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


from runner.catalog import models as m
from runner.config import sqlite_url_for
from runner.catalog.db import Catalog

from runner.queue.embedded_redis import EmbeddedRedis
from runner.queue.jobqueue import connect, job_queue
from runner.queue.worker import ScriptoriumWorker, ThreadWorker, _worker, _work_in_threads

EXIT_LIMIT_S = 2.0


def _queue_with_jobs(url: str, count: int):
    queue = job_queue(connect(url), "scriptorium")
    for _ in range(count):
        # two seconds' work; the clock starts when the last one ends. Idle threads (more threads than
        # jobs, as in a batching worker given a few files) were the ones that stalled.
        queue.enqueue_call("time.sleep", args=(2,))
    return queue


def _finished_at(queue) -> float:
    """When the queue's last job ended, as time.time()."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    jobs = Job.fetch_many(queue.finished_job_registry.get_job_ids(), connection=queue.connection,
                          serializer=JSONSerializer)
    return max(j.ended_at.timestamp() for j in jobs if j is not None)


def test_batching_worker_threads_exit_within_two_seconds_of_their_last_job(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        queue = _queue_with_jobs(url, 2)
        workers = [_worker(ThreadWorker, queue, f"exit-test.{i}") for i in range(16)]  # `--batch 8`
        _work_in_threads(workers, burst=True, level="WARNING")
        left = time.time()
        assert len(queue.finished_job_registry) == 2
        assert left - _finished_at(queue) < EXIT_LIMIT_S
    finally:
        server.stop()


def test_single_worker_exits_within_two_seconds_of_its_last_job(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        queue = _queue_with_jobs(url, 1)
        worker = _worker(ScriptoriumWorker, queue, "exit-test.single")
        worker.work(burst=True, logging_level="WARNING")
        left = time.time()
        assert len(queue.finished_job_registry) == 1
        assert left - _finished_at(queue) < EXIT_LIMIT_S
    finally:
        server.stop()


def test_worker_command_exits_within_two_seconds_of_its_last_file(tmp_path, ffmpeg):
    """The user's path: `scriptorium scan` then `scriptorium worker --batch 8 --burst` on a 60 s
    file; the worker process ends within 2 s of the catalog's finish time for that file."""
    folder = tmp_path / "a"
    folder.mkdir()
    wav = folder / "s.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "60", f"file:{wav}")
    old = time.time() - 3600
    os.utime(wav, (old, old))
    data = tmp_path / "D"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cli = [sys.executable, "-m", "runner.commands.cli"]
    subprocess.run([*cli, "scan", str(folder), "--data", str(data)], check=True, env=env, capture_output=True)
    proc = subprocess.run([*cli, "worker", "--batch", "8", "--burst", "--data", str(data)], env=env,
                          capture_output=True, text=True, timeout=120)
    left = time.time()
    assert proc.returncode == 0, proc.stderr
    with Catalog.open(sqlite_url_for(data)) as cat, cat.read() as session:
        transcript = session.query(m.Transcript).one()
        assert transcript.status.value == "done"
        finished = transcript.finished_at.timestamp()
    # outputs are written after finished_at; all of it, and the exit, within the limit
    assert left - finished < EXIT_LIMIT_S, f"worker left {left - finished:.1f} s after its last file"
