"""Sampled fallback attempts are first run for TRIAL_TOKENS: a looping one is judged there, any other
run again to its end. Real model, real audio: apollo11.mp3's second window is a hallucination
loop at every temperature below 1.0 (the same words to the 224-token limit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine import decoding
from engine.decoding import TRIAL_TOKENS, DecodedWindow, _attempt_with_trial, _best, decode_rounds
from engine.options import TranscribeOptions


@pytest.fixture(scope="module")
def calls(cpu_transcriber, shared_audio_dir):
    """Every generate call of apollo11.mp3's transcript: (encoded, prompts, options, generations)."""
    backend = cpu_transcriber.backend
    real = backend.generate
    seen = []

    def spy(encoded, prompts, options):
        out = real(encoded, prompts, options)
        seen.append((np.array(encoded), [list(p) for p in prompts], options, out))
        return out

    backend.generate = spy
    try:
        # with the VAD settings of before (0.4 s of speech pad, 3 s silences cut out, no hysteresis) a
        # window of this 8 kHz radio clip loops at T=0; the defaults of now cut it elsewhere
        before = TranscribeOptions(speech_pad=0.4, min_silence=3.0, vad_hysteresis=0.0)
        transcript = cpu_transcriber.transcribe(shared_audio_dir / "apollo11.mp3", before)
    finally:
        del backend.generate
    assert transcript.segments
    return seen


def _looping(calls):
    """The first call at temperature 0 whose best hypothesis ran to the length limit."""
    for encoded, prompts, options, out in calls:
        if options.temperature == 0 and len(out[0].tokens) >= 200:
            return encoded, prompts
    pytest.fail("apollo11.mp3 no longer has a window that loops at temperature 0")


def test_the_looping_window_falls_back_through_trial_runs(calls):
    sampled = [(o, out) for _, _, o, out in calls if o.temperature > 0]
    assert sampled, "the looping window did not fall back"
    trials = [out[0] for o, out in sampled if o.max_new_tokens == TRIAL_TOKENS]
    assert trials and all(len(g.tokens) <= TRIAL_TOKENS for g in trials)


def test_the_last_temperature_always_runs_whole(cpu_transcriber, calls):
    """When every attempt fails, the last one may be kept: it is never a trial run."""
    encoded, prompts = _looping(calls)
    options = TranscribeOptions(temperatures=(0.0, 0.2))
    backend, seen = cpu_transcriber.backend, []
    real = backend.generate

    def spy(enc, prm, opts):
        seen.append(opts)
        return real(enc, prm, opts)

    backend.generate = spy
    try:
        rounds = list(decode_rounds(backend, encoded, prompts, options, cpu_transcriber.tokenizer(options)))
    finally:
        del backend.generate
    assert [o.temperature for o in seen] == [0.0, 0.2] and all(o.max_new_tokens is None for o in seen)
    (settled, (result,), _) = rounds[-1]
    assert settled == [0] and not result.cut


def test_backend_stops_at_max_new_tokens_and_says_so(cpu_transcriber, calls):
    encoded, prompts = _looping(calls)
    options = replace(TranscribeOptions().decode_options(0.2), max_new_tokens=24)
    (generation,) = cpu_transcriber.backend.generate(encoded, prompts, options)
    assert generation.cut and len(generation.tokens) == 24
    (whole,) = cpu_transcriber.backend.generate(encoded, prompts, TranscribeOptions().decode_options(0.2))
    assert not whole.cut and len(whole.tokens) > 24


def test_a_looping_trial_is_judged_where_it_stands(cpu_transcriber, calls):
    encoded, prompts = _looping(calls)
    options = TranscribeOptions()
    tokenizer = cpu_transcriber.tokenizer(options)
    (result,) = _attempt_with_trial(cpu_transcriber.backend, encoded, prompts, options.decode_options(0.2),
                                    tokenizer, options)
    assert result.cut and len(result.tokens) <= TRIAL_TOKENS
    assert result.compression_ratio > options.compression_ratio_threshold


def test_a_trial_that_does_not_loop_runs_again_to_its_end(cpu_transcriber, calls, monkeypatch):
    # the file's first window is plain speech: cut after 8 tokens it is not repetitive, so it runs whole
    encoded, prompts, _, first = calls[0]
    monkeypatch.setattr(decoding, "TRIAL_TOKENS", 8)
    options = TranscribeOptions()
    (result,) = _attempt_with_trial(cpu_transcriber.backend, encoded, prompts, options.decode_options(0.2),
                                    cpu_transcriber.tokenizer(options), options)
    assert not result.cut and len(result.tokens) > 8
    assert len(first[0].tokens) > 8


def test_a_cut_trial_is_never_kept_while_a_whole_attempt_exists():
    options = TranscribeOptions()
    whole = DecodedWindow((1, 2, 3), -1.5, 0.1, 3.0, 0.0)  # repetitive and unlikely
    cut = DecodedWindow((4, 5), -0.2, 0.1, 9.0, 0.2, cut=True)  # likelier, but judged before its end
    assert _best([whole, cut], options) is whole
    fine = DecodedWindow((6,), -2.0, 0.1, 1.2, 1.0)
    assert _best([whole, cut, fine], options) is fine
