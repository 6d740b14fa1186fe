"""Conditions for the independent evaluation set (`make_eval_set.py`): levels, noise, music beds, phone
band, and the final encoding. Signals are float32 at evalset_sources.SR (16 kHz) until `encode` writes
them at the file's own rate, channels and codec with ffmpeg (bit-exact flags: the same input gives
the same bytes). Every random draw comes from a numpy Generator the caller seeds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from evalset_sources import SR, need

FRAME = SR // 50  # 20 ms


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


def active_db(x: np.ndarray) -> float:
    """RMS level (dBFS, full scale = 1.0) of the frames within 35 dB of the loudest: speech without its pauses."""
    n = len(x) // FRAME
    if n == 0:
        return -120.0
    power = np.mean(x[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1) + 1e-20
    db = 10 * np.log10(power)
    return float(10 * np.log10(np.mean(power[db > db.max() - 35])))


def at_level(x: np.ndarray, db: float) -> np.ndarray:
    """x scaled so that its active level is db dBFS."""
    return (x * 10 ** ((db - active_db(x)) / 20)).astype(np.float32)


def peak_to(x: np.ndarray, db: float) -> np.ndarray:
    """x scaled so that its peak is db dBFS."""
    return (x * (10 ** (db / 20) / (np.abs(x).max() + 1e-12))).astype(np.float32)


def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) noise of RMS 1."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    shape = {"white": np.ones_like(f), "pink": 1 / np.sqrt(f), "brown": 1 / f}[kind]
    shape[f < 20] = 0  # nothing below 20 Hz (a real recording's DC blocker)
    out = np.fft.irfft(spectrum * shape, n)
    return (out / (np.sqrt(np.mean(out ** 2)) + 1e-12)).astype(np.float32)


def hum(n: int, base: float = 50.0) -> np.ndarray:
    """Mains hum with its odd harmonics, RMS 1."""
    t = np.arange(n) / SR
    out = sum(np.sin(2 * np.pi * base * k * t) / k for k in (1, 3, 5, 7))
    return (out / np.sqrt(np.mean(out ** 2))).astype(np.float32)


def under(speech: np.ndarray, bed: np.ndarray, db_below: float) -> np.ndarray:
    """speech with bed (noise or music, looped or cut to its length) mixed db_below dB under the
    speech's active level (the SNR)."""
    bed = np.resize(bed, len(speech)).astype(np.float32)
    bed_db = 10 * np.log10(np.mean(bed.astype(np.float64) ** 2) + 1e-20)
    return (speech + bed * 10 ** ((active_db(speech) - db_below - bed_db) / 20)).astype(np.float32)


def bandpass(x: np.ndarray, low: float, high: float, slope_hz: float = 100.0) -> np.ndarray:
    """Keep low..high Hz (raised-cosine edges slope_hz wide), done in the frequency domain."""
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SR)
    gain = np.clip((f - (low - slope_hz)) / slope_hz, 0, 1) * np.clip(((high + slope_hz) - f) / slope_hz, 0, 1)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    return np.fft.irfft(spectrum * gain, len(x)).astype(np.float32)


# --------------------------------------------------------------------------- music made here

_NOTE = {"C": -9, "D": -7, "E": -5, "F": -4, "G": -2, "A": 0, "B": 2}


def _hz(note: str, octave: int) -> float:
    return 440.0 * 2 ** ((_NOTE[note] + 12 * (octave - 4)) / 12)


def chord_bed(seconds: float, rng: np.random.Generator, bpm: float = 96.0) -> np.ndarray:
    """A pad of held chords (C, G, A minor, F; each a bar) with a bass line: soft saw-like tones, RMS 1."""
    chords = [("C", "E", "G"), ("G", "B", "D"), ("A", "C", "E"), ("F", "A", "C")]
    bar = 4 * 60 / bpm
    n = int(seconds * SR)
    out = np.zeros(n, dtype=np.float64)
    t_bar = np.arange(int(bar * SR)) / SR
    env = np.minimum(1, t_bar / 0.08) * np.exp(-t_bar / (bar * 1.5))
    detune = rng.uniform(-1.5, 1.5, size=3)
    for k, start in enumerate(range(0, n, len(t_bar))):
        names = chords[k % 4]
        tone = np.zeros_like(t_bar)
        for j, name in enumerate(names):
            f = _hz(name, 4) + detune[j]
            tone += sum(np.sin(2 * np.pi * f * h * t_bar) / h for h in (1, 2, 3, 4))
        tone += 1.5 * np.sin(2 * np.pi * _hz(names[0], 2) * t_bar)
        piece = (tone * env)[: n - start]
        out[start:start + len(piece)] += piece
    return (out / np.sqrt(np.mean(out ** 2))).astype(np.float32)


def drum_bed(seconds: float, rng: np.random.Generator, bpm: float = 110.0) -> np.ndarray:
    """Drum-like noise bursts: a kick (falling sine) on beats 1 and 3, a snare (noise, 150 ms) on 2 and 4,
    hi-hats (high-passed noise, 40 ms) on every eighth. RMS 1."""
    n = int(seconds * SR)
    out = np.zeros(n, dtype=np.float64)
    beat = 60 / bpm

    def put(at: float, sound: np.ndarray) -> None:
        i = int(at * SR)
        if i < n:
            out[i:i + len(sound)] += sound[: n - i]

    t = np.arange(int(0.25 * SR)) / SR
    kick = np.sin(2 * np.pi * (50 + 90 * np.exp(-t / 0.03)) * t) * np.exp(-t / 0.09)
    for k in range(int(seconds / beat) + 1):
        if k % 2 == 0:
            put(k * beat, 1.2 * kick)
        else:
            tn = np.arange(int(0.15 * SR)) / SR
            put(k * beat, 0.6 * rng.standard_normal(len(tn)) * np.exp(-tn / 0.04))
        for half in (0.0, 0.5):
            th = np.arange(int(0.04 * SR)) / SR
            hat = np.diff(rng.standard_normal(len(th) + 1)) * np.exp(-th / 0.01)
            put((k + half) * beat, 0.25 * hat)
    return (out / np.sqrt(np.mean(out ** 2))).astype(np.float32)


# --------------------------------------------------------------------------- writing

CODECS = {  # suffix -> ffmpeg output arguments
    ".wav": ["-c:a", "pcm_s16le"],
    ".flac": ["-c:a", "flac"],
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    ".ogg": ["-c:a", "libvorbis", "-q:a", "3"],
    ".opus": ["-c:a", "libopus", "-b:a", "24k"],
    ".m4a": ["-c:a", "aac", "-b:a", "64k"],
}


def encode(signal: np.ndarray, path: Path, sample_rate: int, codec: str | None = None) -> None:
    """Write signal (n,) mono or (n, 2) stereo at SR to path at sample_rate; codec overrides the suffix's
    default (e.g. "pcm_mulaw" for a .wav). Samples beyond full scale are clipped, as a recorder would."""
    need("ffmpeg")
    channels = 1 if signal.ndim == 1 else signal.shape[1]
    data = np.clip(signal, -1.0, 1.0).astype("<f4").tobytes()
    args = list(CODECS[path.suffix]) if codec is None else ["-c:a", codec]
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(SR),
           "-ac", str(channels), "-i", "-", "-ar", str(sample_rate), *args, "-map_metadata", "-1",
           "-fflags", "+bitexact", "-flags:a", "+bitexact", str(path)]
    proc = subprocess.run(cmd, input=data, capture_output=True)
    if proc.returncode:
        raise RuntimeError(f"ffmpeg writing {path.name}: {proc.stderr.decode(errors='replace')[-400:]}")
