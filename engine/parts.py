"""Cutting a long file into parts that decode as independent chains of windows.

A lone long file is one chain: each window waits for the one before it (its seek, its prompt),
so batching across files cannot speed it up. Cut at quiet points into parts, it becomes several
chains that are batched with each other (a 30-minute file in 8 parts: 2.2x faster-whisper on 2
cores instead of 1.3x). Each cut costs one break in the previous-text context, at a pause. The
cuts depend only on the file and the options, never on the batch size or the machine, so batched
and sequential decoding still give the same text.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.audio import stream_audio
from engine.constants import SAMPLE_RATE
from engine.vad import FRAME

MAX_PARTS = 8  # enough chains to fill calls of 8 windows on 2 model replicas
SEARCH_SECONDS = 10.0  # a cut goes to the quietest point within this of its even place
QUIET_FRAMES = 12  # loudness is averaged over this many VAD frames (0.38 s) to find a pause

Span = tuple[int, int | None]  # [start, stop) in samples; stop None: the end of the file


def part_count(duration: float | None, part_seconds: float | None) -> int:
    """How many parts a file of `duration` seconds is decoded in: parts of at least part_seconds."""
    if not part_seconds or not duration:
        return 1
    return max(1, min(MAX_PARTS, int(duration // part_seconds)))


def plan(path: str, duration: float | None, part_seconds: float | None) -> tuple[Span, ...]:
    """The parts of a file: one span (0, None) unless it is at least twice part_seconds long.

    Cuts sit at the quietest moment near even divisions of the file; a cut that cannot be placed
    (the probed duration was too long) is left out, so the last part runs to the real end.
    MediaError if the file cannot be decoded there.
    """
    count = part_count(duration, part_seconds)
    if count == 1:
        return ((0, None),)
    places = [int(duration * SAMPLE_RATE * k / count) for k in range(1, count)]
    with ThreadPoolExecutor(4) as pool:  # each search is mostly ffmpeg's start-up: 0.56 s -> 0.2 s for 7
        found = list(pool.map(lambda place: quiet_point(path, place), places))
    cuts: list[int] = []
    min_gap = int(part_seconds * SAMPLE_RATE) // 2
    for cut in found:
        if cut is not None and cut - (cuts[-1] if cuts else 0) >= min_gap:
            cuts.append(cut)
    bounds: list[int | None] = [0, *cuts, None]
    return tuple(zip(bounds[:-1], bounds[1:]))


def quiet_point(path: str, around: int) -> int | None:
    """The sample (on a VAD frame boundary) at the middle of the quietest QUIET_FRAMES within
    SEARCH_SECONDS of `around`; None when the file has no full search range there."""
    reach = int(SEARCH_SECONDS * SAMPLE_RATE) // FRAME * FRAME
    low = max(0, (around // FRAME) * FRAME - reach)
    audio = np.concatenate(list(stream_audio(path, chunk_seconds=2 * SEARCH_SECONDS, start=low,
                                             stop=low + 2 * reach)) or [np.empty(0, np.float32)])
    frames = len(audio) // FRAME
    if frames < 2 * reach // FRAME:
        return None
    loudness = audio[:frames * FRAME].reshape(frames, FRAME).var(axis=1)  # var: a DC offset is no sound
    smooth = np.convolve(loudness, np.ones(QUIET_FRAMES) / QUIET_FRAMES, mode="valid")
    middle = int(np.argmin(smooth)) + QUIET_FRAMES // 2
    return low + middle * FRAME
