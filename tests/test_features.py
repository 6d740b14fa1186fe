"""engine.features: Whisper log-mel matches faster-whisper's reference numerically, with exact shapes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine.audio import load_audio
from engine.constants import N_FRAMES, N_SAMPLES, SAMPLE_RATE
from engine.features import log_mel_spectrogram, mel_filters, window_features

# Both implementations run float32 FFTs of the same frames; the observed gap is ~1e-7
# (one float32 ulp after log10), so 1e-3 leaves ample room for other numpy/BLAS builds.
TOLERANCE = 1e-3
N_MELS = [80, 128]
CLIPS = ["jfk.flac", "LDC93S1.wav", "realpython_jackhammer.wav", "gb0.wav"]


@pytest.fixture(scope="module")
def reference_extractor():
    """faster-whisper's FeatureExtractor class (a dev dependency), skipping when it is absent."""
    module = pytest.importorskip("faster_whisper.feature_extractor")
    return module.FeatureExtractor


@pytest.fixture(scope="module")
def clips(shared_audio_dir) -> dict[str, np.ndarray]:
    """Decoded real speech, 16 kHz mono float32."""
    return {name: load_audio(shared_audio_dir / name) for name in CLIPS}


@pytest.mark.parametrize("n_mels", N_MELS)
def test_mel_filters_match_reference(reference_extractor, n_mels):
    """Our Slaney filterbank equals faster-whisper's librosa port (librosa.filters.mel, norm='slaney')."""
    ours = mel_filters(n_mels)
    theirs = reference_extractor.get_mel_filters(SAMPLE_RATE, 400, n_mels=n_mels).astype(np.float32)
    assert ours.shape == (n_mels, 201) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n_mels", N_MELS)
def test_mel_filters_properties(n_mels):
    """Triangles are non-negative, every band has weight, the result is cached and read-only."""
    bank = mel_filters(n_mels)
    assert (bank >= 0).all() and (bank.sum(axis=1) > 0).all()
    assert mel_filters(n_mels) is bank
    with pytest.raises(ValueError):
        bank[0, 0] = 1.0
    with pytest.raises(ValueError):
        mel_filters(0)


@pytest.mark.parametrize("n_mels", N_MELS)
@pytest.mark.parametrize("name", CLIPS)
@pytest.mark.parametrize("padding", [0, 160, N_SAMPLES])
def test_log_mel_matches_faster_whisper(reference_extractor, clips, name, n_mels, padding):
    """Same log-mel as faster_whisper.FeatureExtractor on the same real speech and padding."""
    audio = clips[name]
    theirs = reference_extractor(feature_size=n_mels)(audio, padding=padding)
    ours = log_mel_spectrogram(audio, n_mels=n_mels, padding=padding)
    assert ours.shape == theirs.shape == (n_mels, (len(audio) + padding) // 160)
    assert ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < TOLERANCE


@pytest.mark.parametrize("n_mels", N_MELS)
def test_window_features_match_faster_whisper(reference_extractor, clips, n_mels):
    """A window zero-padded to 30 s gives the reference's first 3000 frames, for short and full windows."""
    extractor = reference_extractor(feature_size=n_mels)
    for window in (clips["jfk.flac"], clips["gb0.wav"][N_SAMPLES : 2 * N_SAMPLES]):
        padded = np.pad(window, (0, N_SAMPLES - len(window)))
        theirs = extractor(padded, padding=0)[:, :N_FRAMES]
        ours = window_features(window, n_mels)
        assert ours.shape == (n_mels, N_FRAMES)
        assert np.abs(ours - theirs).max() < TOLERANCE


@pytest.mark.parametrize("n_mels", N_MELS)
@pytest.mark.parametrize("length", [0, 1, 159, 160, 401, 12345, N_SAMPLES - 1, N_SAMPLES])
def test_window_features_shape(n_mels, length):
    """Any window up to 30 s yields exactly [n_mels, 3000] float32."""
    rng = np.random.default_rng(length)
    feats = window_features(rng.standard_normal(length).astype(np.float32) * 0.1, n_mels)
    assert feats.shape == (n_mels, N_FRAMES) and feats.dtype == np.float32
    assert np.isfinite(feats).all()


def test_window_longer_than_30s_is_refused():
    """More than N_SAMPLES samples is a caller bug, not something to truncate silently."""
    with pytest.raises(ValueError):
        window_features(np.zeros(N_SAMPLES + 1, dtype=np.float32), 80)


def test_log_mel_shapes_and_dtypes():
    """Frame count is len // 160; float64 input is accepted; tiny inputs give zero frames."""
    audio = np.zeros(11 * SAMPLE_RATE, dtype=np.float64)
    assert log_mel_spectrogram(audio).shape == (80, 1100)
    assert log_mel_spectrogram(audio, n_mels=128, padding=N_SAMPLES).shape == (128, 4100)
    assert log_mel_spectrogram(audio).dtype == np.float32
    assert log_mel_spectrogram(np.zeros(100, dtype=np.float32)).shape == (80, 0)


def test_silence_is_the_floor():
    """Digital silence sits at the clamp: (log10(1e-10) + 4) / 4 = -1.5 everywhere."""
    feats = window_features(np.zeros(SAMPLE_RATE, dtype=np.float32), 80)
    np.testing.assert_allclose(feats, -1.5, atol=1e-6)


def test_window_features_speed(clips):
    """One full 30 s window is fast (well under 30 ms here; the bound is loose for slow CI)."""
    window = clips["gb0.wav"][:N_SAMPLES]
    window_features(window, 80)
    best = min(_timed(window_features, window, 80) for _ in range(7))
    assert best < 0.1, f"window_features took {best * 1000:.1f} ms"


def _timed(fn, *args) -> float:
    """Seconds one call takes."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start
