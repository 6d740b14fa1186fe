"""How long a job may run on this worker: from the model's speed measured here, not a fixed
multiple of the audio (tiny.en's 2x was hours too short for large-v3 on a CPU, and far too long
for tiny.en on a GPU)."""

from __future__ import annotations

import threading
import time

import numpy as np

TIMEOUT_FLOOR_S = 300  # start-up, probing and a first window that falls back fit in this, whatever the file
MARGIN = 10.0  # a job may run this many times slower than this worker's pace before it counts as hung
# One window's whole decode (beam search, word alignment) against its encoder call: 1.2-2.0 s
# against 0.2-0.4 s for tiny.en int8 on 2 cores; the first estimate, until real jobs are timed.
DECODE_PER_ENCODE = 8.0
WINDOW_S = 30.0


class Pace:
    """Wall seconds a job takes per second of its audio on this worker (`jobs_at_once` jobs
    sharing the model slow each down), measured once at start and then from finished jobs."""

    def __init__(self, seconds_per_audio_second: float):
        self._prior = seconds_per_audio_second
        self._rate = seconds_per_audio_second
        self._lock = threading.Lock()

    @classmethod
    def measure(cls, backend, n_mels: int, jobs_at_once: int = 1) -> Pace:
        """Time one encoder call on a silent window (it costs the same as on speech)."""
        window = np.zeros((1, n_mels, 3000), np.float32)
        backend.encode(window)  # the first call pays for allocations
        started = time.perf_counter()
        backend.encode(window)
        per_window = (time.perf_counter() - started) * DECODE_PER_ENCODE
        return cls(per_window / WINDOW_S * max(1, jobs_at_once))

    @property
    def seconds_per_audio_second(self) -> float:
        return self._rate

    def timeout(self, audio_seconds: float | None) -> int:
        """The job timeout for a file of this length."""
        return int(TIMEOUT_FLOOR_S + MARGIN * self._rate * (audio_seconds or 0.0))

    def observe(self, audio_seconds: float | None, wall_seconds: float | None) -> None:
        """Fold a finished job's pace in (never below the start-up estimate: a run of easy files
        must not shorten the timeout of a hard one)."""
        if not audio_seconds or not wall_seconds or audio_seconds < 1.0:
            return
        with self._lock:
            self._rate = max(self._prior, 0.7 * self._rate + 0.3 * wall_seconds / audio_seconds)
