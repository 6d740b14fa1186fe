"""A forward-only cursor over a file's streamed audio, with voice activity computed as it arrives."""

from __future__ import annotations

import numpy as np

from engine.audio import stream_audio
from engine.constants import SAMPLE_RATE
from engine.vad import SpeechDetector


class AudioCursor:
    """Holds only the audio from the current seek on: memory stays flat however long the file."""

    def __init__(self, path: str, vad: bool, chunk_seconds: float = 30.0, duration_hint: float | None = None):
        self.path = str(path)
        self.duration_hint = duration_hint  # no probe here: ffmpeg's own errors name bad files
        self._stream = stream_audio(self.path, chunk_seconds=chunk_seconds)
        self.speech = SpeechDetector() if vad else None
        self._buffer = np.empty(0, np.float32)
        self._buffer_start = 0  # sample index of _buffer[0]
        self._keep_from = 0  # audio before this sample is never needed again
        self.eof = False

    @property
    def end(self) -> int:
        """Sample index just past the audio read so far."""
        return self._buffer_start + len(self._buffer)

    @property
    def duration(self) -> float:
        """Seconds: exact once the stream ended, the probed duration before."""
        return self.end / SAMPLE_RATE if self.eof else max(self.duration_hint or 0.0, self.end / SAMPLE_RATE)

    def read_until(self, sample: int) -> None:
        """Decode until `sample` is buffered or the stream ends, keeping nothing before the keep point."""
        chunks = [self._buffer]
        end = self.end
        while not self.eof and end < sample:
            chunk = next(self._stream, None)
            if chunk is None:
                self.eof = True
                if self.speech is not None:
                    self.speech.close()
                break
            if self.speech is not None:
                self.speech.feed(chunk)  # voice activity needs every sample, even skipped ones
            chunks.append(chunk)
            end += len(chunk)
            while len(chunks) > 1 and self._buffer_start + len(chunks[0]) <= self._keep_from:
                self._buffer_start += len(chunks.pop(0))  # resuming far into a file: stay flat
        self._buffer = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        self.forget_before(self._keep_from)

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) (stop clipped to what was read)."""
        return self._buffer[start - self._buffer_start: stop - self._buffer_start]

    def forget_before(self, sample: int) -> None:
        """Drop audio before `sample`: the loop never goes back."""
        self._keep_from = max(self._keep_from, sample)
        drop = min(max(0, sample - self._buffer_start), len(self._buffer))
        if drop:
            self._buffer = self._buffer[drop:].copy()
            self._buffer_start += drop

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close:
            close()
