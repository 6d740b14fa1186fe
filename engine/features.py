"""Whisper's log-mel spectrogram in numpy, bit-for-bit in spirit with openai/whisper.

Conventions: 16 kHz input, n_fft=400, hop=160, periodic Hann window, reflect
padding (center=True), power spectrum with the last frame dropped, a Slaney mel
filterbank (librosa's htk=False, norm='slaney'), log10 clamped at 1e-10, a floor
8 (i.e. 80 dB) below the maximum, then (x + 4) / 4.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from engine.constants import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE

_N_BINS = N_FFT // 2 + 1  # 201 rfft bins
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann

# Slaney mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney (librosa htk=False) Hz -> mel."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    mel[log_part] = _MIN_LOG_MEL + np.log(hz[log_part] / _MIN_LOG_HZ) / _LOGSTEP
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Slaney (librosa htk=False) mel -> Hz."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = mel >= _MIN_LOG_MEL
    hz[log_part] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel[log_part] - _MIN_LOG_MEL))
    return hz


@lru_cache(maxsize=None)
def mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank [n_mels, 201] float32 (read-only, cached).

    Same as librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels), which Whisper ships as mel_filters.npz.
    """
    if int(n_mels) != n_mels or n_mels <= 0:
        raise ValueError(f"n_mels must be a positive integer, got {n_mels!r}")
    fft_freqs = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], int(n_mels) + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # constant energy per band
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


def _power_spectrum(audio: np.ndarray) -> np.ndarray:
    """|STFT|^2 as [frames, 201] float32, frames = len // hop (the last centred frame dropped)."""
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:-1]
    spec = np.fft.rfft(frames * _WINDOW, axis=-1)  # complex64 on numpy >= 2
    power = np.square(spec.real, dtype=np.float32)
    power += np.square(spec.imag, dtype=np.float32)
    return power


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """Whisper log-mel [n_mels, len(audio + padding) // 160] float32 of 16 kHz mono audio.

    `padding` zeros are appended first; the 80 dB floor is relative to this whole input's maximum.
    """
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if padding:
        x = np.pad(x, (0, int(padding)))
    if len(x) // HOP_LENGTH == 0:
        return np.zeros((n_mels, 0), dtype=np.float32)
    mel = mel_filters(n_mels) @ _power_spectrum(x).T  # [n_mels, frames]
    log_spec = np.log10(np.maximum(mel, 1e-10, out=mel), out=mel)
    np.maximum(log_spec, log_spec.max() - 8.0, out=log_spec)
    log_spec += 4.0
    log_spec /= 4.0
    return log_spec


def window_features(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """Features of one window of at most 30 s: zero-pad to N_SAMPLES, take [n_mels, N_FRAMES]."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(x) > N_SAMPLES:
        raise ValueError(f"a window holds at most {N_SAMPLES} samples, got {len(x)}")
    x = np.pad(x, (0, N_SAMPLES - len(x)))
    return log_mel_spectrogram(x, n_mels)[:, :N_FRAMES]


__all__ = ["mel_filters", "log_mel_spectrogram", "window_features"]
