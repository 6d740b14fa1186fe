"""A `run` holds its queue while it scans, so that workers it started early wait for the jobs (real Redis)."""

from __future__ import annotations

import threading
import time

import pytest

from runner.queue import jobqueue as q
from runner.queue.embedded_redis import EmbeddedRedis


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


def test_a_burst_worker_waits_for_a_held_queue_then_works_it(tmp_path, shared_audio_dir):
    """The real `worker --burst`: started while its queue is held (as `run` starts it before scanning),
    it loads the model and waits; the file queued meanwhile is done once the hold ends. Without the
    hold it would find the queue empty and exit at once."""
    import shutil
    import subprocess

    from runner.catalog.db import Catalog
    from runner.queue.scanner import Scanner
    from tests.test_runner_e2e import REPO, _env, cli_cmd, settle

    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    db_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy2(shared_audio_dir / "LDC93S1.wav", folder / "LDC93S1.wav")
    settle(folder / "LDC93S1.wav")
    try:
        conn = q.connect(url)
        hold = q.held(conn, "scriptorium")
        hold.__enter__()
        worker = subprocess.Popen(cli_cmd("worker", "--burst", "--compute", "cpu", "--threads", "1",
                                          "--data", str(tmp_path), "--db", db_url, "--redis", url),
                                  cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        try:
            time.sleep(8)  # imports and model load take ~3 s here
            assert worker.poll() is None, "the burst worker left a held queue: " + worker.stdout.read().decode()
            catalog = Catalog.open(db_url)
            summary = Scanner(catalog, None).scan([folder])
            assert len(summary.to_queue) == 1, summary.line()
            for media_id, duration in summary.to_queue:
                q.enqueue(q.job_queue(conn, "scriptorium"), media_id, {}, None, duration)
            hold.__exit__(None, None, None)
            assert worker.wait(timeout=120) == 0, worker.stdout.read().decode()
            assert catalog.transcript_segments(summary.to_queue[0][0]), "the queued file was not transcribed"
            catalog.close()
        finally:
            if worker.poll() is None:
                worker.kill()
    finally:
        server.stop()
