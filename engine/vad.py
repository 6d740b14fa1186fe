"""Voice activity: Silero VAD's speech probability per 32 ms frame, and which frames are speech.

Used to skip windows with no speech and to cut long silences out of windows, so that no
segment can start, end or stretch inside one. Silero runs in helper processes (engine.vad_pool)
or in this one (engine.silero).
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

import numpy as np

from engine.constants import SAMPLE_RATE
from engine.silero import FRAME, LocalFrames

if TYPE_CHECKING:
    from engine.vad_pool import VadPool

__all__ = ["FRAME", "SpeechDetector", "speech_mask"]


class SpeechDetector:
    """Runs streamed audio through Silero VAD and keeps one speech probability per frame.

    `process`/`finish` (the model's side) may run in a reader thread while `record`/`frames`
    (the keeper's side) run in the decoding thread.
    """

    def __init__(self, pool: VadPool | None = None):
        # The model side runs in one of `pool`'s helper processes (engine.vad_pool), else in this one.
        self._frames = LocalFrames() if pool is None else pool.stream()
        self.probs = array("f")

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the whole frames of `audio`; a partial tail waits for the next call."""
        return self._frames.process(audio)

    def finish(self) -> np.ndarray:
        """The partial last frame's probability (zero-padded), then the model goes back to the pool."""
        return self._frames.finish()

    def release(self) -> None:
        """Return the model to the pool (once); no more `process` after this."""
        self._frames.release()

    def record(self, probs: np.ndarray) -> None:
        """Keep probabilities computed by `process`, in stream order."""
        self.probs.extend(probs.astype(np.float32, copy=False).tolist())

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Speech probabilities of frames [start, stop) that are known so far."""
        return np.frombuffer(self.probs, dtype=np.float32)[start:stop].copy()  # no view may pin the array


def speech_mask(probs: np.ndarray, threshold: float, pad_frames: int, min_silence_frames: int,
                hysteresis: float = 0.0) -> np.ndarray:
    """Frames that count as speech: every run above threshold - hysteresis that reaches the
    threshold somewhere (soft speech around a clear word stays speech), padded, short gaps filled."""
    speech = _hysteresis(probs, threshold, max(threshold - hysteresis, 0.01))
    if pad_frames and speech.any():
        kernel = np.ones(2 * pad_frames + 1, dtype=np.int32)
        speech = np.convolve(speech.astype(np.int32), kernel, mode="same") > 0
    return _fill_short_gaps(speech, min_silence_frames)


def _hysteresis(probs: np.ndarray, high: float, low: float) -> np.ndarray:
    """Runs of frames >= low that hold at least one frame >= high."""
    above = probs >= low
    if not above.any():
        return above
    run = np.cumsum(np.concatenate([[above[0]], above[1:] & ~above[:-1]]))  # run number, per frame
    strong = np.zeros(int(run[-1]) + 1, dtype=bool)
    strong[run[(probs >= high) & above]] = True
    return above & strong[run]


def _fill_short_gaps(speech: np.ndarray, min_frames: int) -> np.ndarray:
    """Silences shorter than min_frames between two speech runs become speech."""
    out = speech.copy()
    idx = np.flatnonzero(np.diff(speech.astype(np.int8)))
    # boundaries: a run of False between two True runs
    starts = [i + 1 for i in idx if not speech[i + 1]]
    for s in starts:
        e = s
        while e < len(speech) and not speech[e]:
            e += 1
        if s > 0 and e < len(speech) and e - s < min_frames:
            out[s:e] = True
    return out


def frames_of(seconds: float) -> int:
    """Number of VAD frames in `seconds`."""
    return int(round(seconds * SAMPLE_RATE / FRAME))
