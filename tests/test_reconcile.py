"""Releasing the jobs of dead workers never releases a live one (real Redis, real rq, real SQLite)."""

from __future__ import annotations

from rq.executions import Execution

from runner.config import sqlite_url_for
from runner.catalog.db import Catalog
from runner.queue.embedded_redis import EmbeddedRedis
from runner.queue.jobqueue import connect, enqueue, is_pending, job_queue
from runner.catalog.reconcile import release_abandoned


def test_a_job_being_taken_is_not_released(tmp_path):
    """rq registers a started execution before it writes the worker's name on the job. A worker
    starting in between read the job as one of a dead worker, released it and queued it again: two
    workers then decoded the same file (seen with two batching workers started together)."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        queue = job_queue(connect(url), "scriptorium")
        enqueue(queue, 7, {}, None, 10.0)
        job = queue.fetch_job("media-7")
        with queue.connection.pipeline() as pipe:  # the first half of rq's prepare_execution
            Execution.create(job, 60, pipeline=pipe)  # rq 3 also takes worker_name=; rq 2.0 does not
            pipe.execute()
        job.set_status("started")
        with Catalog.open(sqlite_url_for(tmp_path)) as catalog:
            assert release_abandoned(catalog, queue) == 0
        assert is_pending(queue, 7)
    finally:
        server.stop()
