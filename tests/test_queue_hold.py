"""A `run` holds its queue while it scans, so that workers it started early wait for the jobs (real Redis)."""

from __future__ import annotations

import threading
import time

import pytest

from runner import queue as q
from runner.embedded_redis import EmbeddedRedis


@pytest.fixture
def redis_conn(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        yield q.connect(url)
    finally:
        server.stop()


def test_workers_wait_until_the_last_run_releases_the_queue(redis_conn):
    assert q.wait_while_held(redis_conn, "hold-test") < 0.05  # not held: no wait at all
    first, second = q.held(redis_conn, "hold-test"), q.held(redis_conn, "hold-test")
    first.__enter__()
    second.__enter__()
    waited: list[float] = []
    waiter = threading.Thread(target=lambda: waited.append(q.wait_while_held(redis_conn, "hold-test")))
    waiter.start()
    time.sleep(0.3)
    first.__exit__(None, None, None)
    time.sleep(0.3)
    assert waiter.is_alive(), "released while another run still held the queue"
    second.__exit__(None, None, None)
    waiter.join(5)
    assert not waiter.is_alive() and 0.5 < waited[0] < 2.0
    assert not q.is_held(redis_conn, "hold-test")
    assert not q.is_held(redis_conn, "other-queue")


def test_the_hold_is_refreshed_while_held_and_expires_when_its_run_is_gone(redis_conn, monkeypatch):
    monkeypatch.setattr(q, "HOLD_TTL_S", 0.3)
    with q.held(redis_conn, "hold-test"):
        time.sleep(1.0)  # three lifetimes of the key
        assert q.is_held(redis_conn, "hold-test")
    # a run killed without its `finally`: the key is not refreshed and lapses
    redis_conn.pipeline().sadd(q.hold_key("hold-test"), "dead-run").pexpire(q.hold_key("hold-test"), 300).execute()
    assert q.is_held(redis_conn, "hold-test")
    assert q.wait_while_held(redis_conn, "hold-test") < 1.0
    assert not q.is_held(redis_conn, "hold-test")


def test_an_error_inside_the_hold_still_releases_it(redis_conn):
    with pytest.raises(RuntimeError):
        with q.held(redis_conn, "hold-test"):
            raise RuntimeError("scan failed")
    assert not q.is_held(redis_conn, "hold-test")
