"""A file's language, detected once: on its first 30 s of speech, before any window is decoded.

A multilingual model without a language option used to detect on each chain's first window: every
part of a long file and every resumed job could pick another language, and a silent or musical
intro could decide it (what users of every Whisper runner complain about). Here the VAD finds the
file's first speech as the long-form loop would, the first 30 s of it are joined (faster-whisper's
detect_language with vad_filter joins speech chunks too) and detected on once; every part, and every
resume given FileTask.language, uses that.
"""

from __future__ import annotations

import numpy as np

from engine.backends.base import Backend
from engine.constants import N_SAMPLES
from engine.features import window_features
from engine.transcribe import LongFormDecoder


def speech_sample(decoder: LongFormDecoder, limit: int = N_SAMPLES) -> np.ndarray | None:
    """Up to `limit` samples of the file's first speech: the windows the long-form loop would take
    (silence skipped, long pauses cut out), joined; the whole start without the VAD. None: no speech.
    Closes the decoder's audio."""
    pieces: list[np.ndarray] = []
    total = 0
    try:
        while total < limit:
            span = decoder.next_span()
            if span is None:
                break
            seek, stop = span
            piece = decoder.audio.slice(seek, stop)[:limit - total].copy()
            pieces.append(piece)
            total += len(piece)
            decoder.seek = stop
    finally:
        decoder.audio.close()
    return np.concatenate(pieces) if pieces else None


def detect_language(backend: Backend, decoder: LongFormDecoder, n_mels: int) -> tuple[str, float] | None:
    """(language, probability) of the file `decoder` reads, from its first speech; None: no speech."""
    audio = speech_sample(decoder)
    if audio is None:
        return None
    encoded = backend.encode(window_features(audio, n_mels)[None])
    (ranked,) = backend.detect_language(encoded)
    language, probability = ranked[0]
    return language, float(probability)
