"""A worker's exit does not wait on rq's command listener (a real embedded Redis)."""

from __future__ import annotations

from runner.embedded_redis import EmbeddedRedis
from runner.queue import connect, job_queue
from runner.worker import ThreadWorker, _worker, _work_in_threads


def test_burst_workers_stop_their_listener_without_waiting_for_it(tmp_path):
    """rq joins its pubsub listener for up to 1 s, and the listener, blocked in a 60 s read, often
    misses the unsubscribe: that second was the end of every `run`. Ours stops it and goes on."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    joined: list = []

    class Spied(ThreadWorker):
        def subscribe(self):
            super().subscribe()
            self.pubsub_thread.join = lambda *a, **k: joined.append(self.name)

    try:
        queue = job_queue(connect(url), "scriptorium")
        workers = [_worker(Spied, queue, f"exit-test.{i}") for i in range(4)]
        _work_in_threads(workers, burst=True, level="WARNING")
        assert joined == []
        assert all(not w.pubsub_thread._running.is_set() for w in workers), "listeners still running"
    finally:
        server.stop()
