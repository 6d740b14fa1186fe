"""A forward-only cursor over a file's streamed audio, with voice activity computed as it arrives.

Decoding (ffmpeg) and voice activity run in a reader thread up to two 40 s chunks ahead of the
decoder, so they overlap with the model's work instead of adding to it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from typing import Iterator

import numpy as np

from engine import audio, vad_pool
from engine.audio import stream_audio
from engine.constants import SAMPLE_RATE
from engine.errors import HelperError, MediaError
from engine.vad import FRAME, SpeechDetector
from engine.vad_pool import VadPool

log = logging.getLogger(__name__)

_AHEAD = 2  # chunks read ahead: 2 x 40 s x 4 bytes x 16 kHz = 5.1 MB per file in flight
# A window needs voice activity up to 30 s + min_silence + speech_pad (6.0 s by default) past its
# seek, and the seek first jumps over leading silence: with 40 s chunks a file whose speech starts
# in its first 4.0 s has its first window after one chunk's VAD. A second chunk waits for every other
# file's first (engine.vad_pool's turns): at 34 s, 0.7 s of lead-in kept the longest file of 40
# waiting 4-5 s for its first window; at 40 s it was ready after 1.1 s.
CHUNK_SECONDS = 40.0
_SLICE_S = 0.25  # longest single wait of the decoding thread here: rq's timeout is raised between slices
_JOIN_S = 2.0  # a stopped reader ends within a slice: no job waits longer for one that does not


class _Reader:
    """Pulls (chunk, speech probabilities) from the stream in a thread; errors surface in `get`."""

    _END = object()

    def __init__(self, stream: Iterator[np.ndarray], speech: SpeechDetector | None, path: str,
                 stall_s: float | None = None):
        self.path = path
        self._stream = stream
        self._queue: queue.Queue = queue.Queue(maxsize=_AHEAD)
        self._stop = threading.Event()
        # A backstop for what the stream cannot bound itself (a plain WAV read on a hung mount): ffmpeg's
        # stall and the VAD helper's reply each fail sooner, with their own reason.
        self._bound = (audio.READ_STALL_S if stall_s is None else stall_s) + vad_pool.VAD_REPLY_S + vad_pool.START_S
        self._thread = threading.Thread(target=self._run, args=(stream, speech), daemon=True,
                                        name=f"audio-reader {path[-40:]}")
        self._thread.start()

    def _run(self, stream, speech) -> None:
        try:
            for chunk in stream:
                if not self._put((chunk, speech.process(chunk) if speech else None)):
                    return
            self._put((self._END, speech.finish() if speech else None))
        except vad_pool.VadWorkerError as exc:  # the helper's fault, not the file's
            self._put(HelperError(self.path, str(exc)))
        except BaseException as exc:  # noqa: BLE001 - handed to the decoding thread, raised there
            self._put(exc)
        finally:
            if speech is not None:
                speech.release()
            close = getattr(stream, "close", None)
            if close:
                close()  # reaps ffmpeg when stopped early

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        """The next (chunk, probabilities); chunk is _END after the last one. Raises the reader's error,
        or a transient MediaError when nothing comes for as long as ffmpeg and the VAD helper may take."""
        deadline = time.monotonic() + self._bound
        while True:
            try:
                item = self._queue.get(timeout=_SLICE_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise MediaError(self.path, "the audio reader ended without a result", permanent=False) from None
                if time.monotonic() >= deadline:
                    self.stop()
                    raise MediaError(self.path, f"no audio for {self._bound:g} s (stalled read: a hung "
                                                "network mount?)", permanent=False) from None
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        """Ask the thread to end and kill ffmpeg (it is reaped within a slice); does not wait."""
        self._stop.set()
        kill = getattr(self._stream, "kill", None)
        if kill:
            kill()

    def close(self) -> None:
        """Stop the thread (ffmpeg is killed) and wait for it a moment; one still in a VAD call or a file
        read is left to end on its own (the VAD call within its bound)."""
        self.stop()
        deadline = time.monotonic() + _JOIN_S
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(_SLICE_S)
        if self._thread.is_alive():
            log.warning("%s: audio reader still busy %.0f s after close; left to end on its own", self.path, _JOIN_S)


class AudioCursor:
    """Holds only the audio from the current seek on: memory stays flat however long the file."""

    def __init__(self, path: str, vad: bool, chunk_seconds: float = CHUNK_SECONDS, duration_hint: float | None = None,
                 start: int = 0, stop: int | None = None, stall_s: float | None = None,
                 vad_pool: VadPool | None = None):
        """Samples [start, stop) of the file (a part of it, engine.parts), indexed as in the whole file;
        `start` must be a multiple of the VAD frame, so that frames line up with the whole file's.
        No audio for `stall_s` (default engine.audio.READ_STALL_S) fails the file (MediaError).
        Voice activity runs in `vad_pool`'s helper processes, or in this process without one."""
        if start % FRAME:
            raise ValueError(f"a cursor starts on a VAD frame boundary ({FRAME} samples), not at {start}")
        self.path = str(path)
        self.duration_hint = duration_hint  # no probe here: ffmpeg's own errors name bad files
        # bad paths raise here, at once
        stream = stream_audio(self.path, chunk_seconds=chunk_seconds, start=start, stop=stop, stall_s=stall_s)
        self.speech = SpeechDetector(vad_pool) if vad else None
        self._reader = _Reader(stream, self.speech, self.path, stall_s)
        weakref.finalize(self, self._reader.stop)  # an abandoned cursor does not leave ffmpeg running
        self._buffer = np.empty(0, np.float32)
        self.start = start
        self._buffer_start = start  # sample index of _buffer[0]
        self._keep_from = start  # audio before this sample is never needed again
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
        """Take decoded audio until `sample` is buffered or the stream ends, keeping nothing before the keep point."""
        chunks = [self._buffer]
        end = self.end
        while not self.eof and end < sample:
            chunk, probs = self._reader.get()
            if self.speech is not None:
                self.speech.record(probs)  # voice activity covers every sample, even skipped ones
            if chunk is _Reader._END:
                self.eof = True
                break
            chunks.append(chunk)
            end += len(chunk)
            while len(chunks) > 1 and self._buffer_start + len(chunks[0]) <= self._keep_from:
                self._buffer_start += len(chunks.pop(0))  # resuming far into a file: stay flat
        self._buffer = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        self.forget_before(self._keep_from)

    def speech_frames(self, first: int, stop: int) -> np.ndarray:
        """Speech probabilities of the file's VAD frames [first, stop) known so far."""
        base = self.start // FRAME
        return self.speech.frames(max(first - base, 0), max(stop - base, 0))

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
        """Stop the reader (ffmpeg is reaped) and give the VAD model back."""
        self._reader.close()
