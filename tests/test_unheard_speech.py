"""Speech the model skips must be decoded again: the VAD hears it, no word covers it.

Whisper ends a window with a lone timestamp when it takes the rest for silence, and the long-form
loop then jumps to the window's end. On a 30-minute mix tiny.en did that after gb0's "Thank you for
listening." and lost the whole of jfk.flac that followed 2 s later (22 words). With the VAD at hand
the loop resumes at that last timestamp instead. In another mix it wrote nothing of mfa_cold_corpus
(59 words) and placed the next clip's words 23 s into the window: the window is decoded again up to
its first word. Whether tiny.en closes a window early depends on
the previous text and the CPU's int8 kernels, so the model's answer is fixed here (a DecodedWindow
built by hand) and everything else is real: the audio, ffmpeg, the Silero VAD and the decoder state.
"""

from __future__ import annotations

import wave

import numpy as np
import pytest

from engine.audio import join_to_wav
from engine.constants import SAMPLE_RATE, TIME_PRECISION
from engine.decoding import DecodedWindow
from engine.options import TranscribeOptions
from engine.timing import TimedWord
from engine.transcribe import LongFormDecoder, RawSegment
from engine.vad import speech_mask

pytestmark = pytest.mark.slow

TAIL_FROM = 108.62  # gb0.wav from here: ~18.7 s of speech ending in "Thank you for listening."
GAP = 0.5


@pytest.fixture(scope="module")
def gb0_tail(shared_audio_dir, ffmpeg, tmp_path_factory):
    """The last 18.7 s of gb0.wav as 16 kHz mono; its length in seconds."""
    out = tmp_path_factory.mktemp("unheard") / "gb0_tail.wav"
    ffmpeg("-ss", str(TAIL_FROM), "-i", f"file:{shared_audio_dir / 'gb0.wav'}", "-ar", "16000", "-ac", "1",
           "-c:a", "pcm_s16le", f"file:{out}")
    return out


@pytest.fixture(scope="module")
def files(gb0_tail, shared_audio_dir, tmp_path_factory):
    """'speech_after': the tail, 0.5 s, jfk.flac (11 s of speech); 'silence_after': the tail alone
    (the window's remaining 11 s are zero padding, nothing to hear)."""
    folder = tmp_path_factory.mktemp("unheard_files")
    return {
        "speech_after": join_to_wav([gb0_tail, shared_audio_dir / "jfk.flac"], folder / "speech_after.wav",
                                    pad_seconds=GAP),
        "silence_after": join_to_wav([gb0_tail], folder / "silence_after.wav"),
    }


def _closed_early(decoder: LongFormDecoder, window, end: float) -> DecodedWindow:
    """The model's answer: one segment from 0 to `end` s, then end of text (a lone timestamp)."""
    tok = decoder.tokenizer
    stamp = tok.timestamp_begin + int(round(end / TIME_PRECISION))
    tokens = (tok.timestamp_begin, *tok.encode(" Thank you for listening."), stamp)
    return DecodedWindow(tokens, avg_logprob=-0.2, no_speech_prob=0.05, compression_ratio=1.5, temperature=0.0)


def _first_window(path, cpu_transcriber, **options):
    opts = TranscribeOptions(**options)
    decoder = LongFormDecoder(str(path), cpu_transcriber.tokenizer(opts), opts, n_mels=80)
    window = decoder.next_window()
    assert window is not None and window.seek == 0
    return decoder, window


def tail_seconds(path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_speech_after_an_early_end_is_decoded_next(files, gb0_tail, cpu_transcriber):
    end = round(tail_seconds(gb0_tail), 1)  # "... listening." ends about here
    decoder, window = _first_window(files["speech_after"], cpu_transcriber)
    assert window.stop == 30 * SAMPLE_RATE  # jfk's 11 s lie inside this window
    raw, next_seek = decoder.split(window, _closed_early(decoder, window, end))
    assert [r.end for r in raw] == [pytest.approx(end, abs=0.01)]
    assert next_seek == pytest.approx(end * SAMPLE_RATE, abs=1)  # not window.stop: jfk comes next


def test_nothing_after_an_early_end_still_jumps_to_the_window_end(files, gb0_tail, cpu_transcriber):
    end = round(tail_seconds(gb0_tail), 1)
    decoder, window = _first_window(files["silence_after"], cpu_transcriber)
    _, next_seek = decoder.split(window, _closed_early(decoder, window, end - 1.0))
    assert next_seek == window.stop


def test_without_the_vad_an_early_end_jumps_to_the_window_end(files, gb0_tail, cpu_transcriber):
    end = round(tail_seconds(gb0_tail), 1)
    decoder, window = _first_window(files["speech_after"], cpu_transcriber, vad=False)
    _, next_seek = decoder.split(window, _closed_early(decoder, window, end))
    assert next_seek == window.stop == 30 * SAMPLE_RATE


def test_a_model_that_keeps_closing_early_cannot_loop(files, cpu_transcriber):
    """Every window answered with one word at its very start, then end of text, although the VAD hears
    speech all through: each decode still moves the seek MIN_ADVANCE (3 s) on, so the ~30 s file takes
    about 10 decodes, not one per 32 ms VAD frame."""
    decoder, window = _first_window(files["speech_after"], cpu_transcriber)
    decodes = 0
    while window is not None and decodes < 40:
        decoded = _closed_early(decoder, window, 0.1)
        raw, next_seek = decoder.split(window, decoded)
        words = _words(decoder, "Thank you for listening.", 0.0, 0.1)
        decoder.accept(window, decoded, raw, next_seek, words)
        decodes += 1
        assert decoder.seek >= min(window.seek + 3 * SAMPLE_RATE, window.stop)
        window = decoder.next_window()
    assert window is None and decodes <= 11, decodes


def test_the_file_keeps_both_passages(files, cpu_transcriber):
    """End to end on the joined file: the last sentence of gb0 and jfk's line both come out."""
    text = " ".join(s.text for s in cpu_transcriber.transcribe(files["speech_after"]).segments).lower()
    assert "thank you for listening" in text
    assert "ask not what your country can do for you" in text


# --------------------------------------------------------------------------- speech skipped mid-window

def _words(decoder, text: str, start: float, end: float) -> list[TimedWord]:
    """Words spread evenly over [start, end] s of the window, as the aligner would place them."""
    names = text.split()
    step = (end - start) / len(names)
    return [TimedWord(" " + w, decoder.tokenizer.encode(" " + w), start + i * step, start + (i + 1) * step, 0.9)
            for i, w in enumerate(names)]


def _raw(decoder, window, text: str, start: float, end: float) -> RawSegment:
    tokens = decoder.tokenizer.encode(" " + text)
    return RawSegment(window.offset + start, window.offset + end, tokens, tokens)


JFK = "And so my fellow Americans ask not what your country can do for you"


def test_a_passage_skipped_at_the_window_start_is_decoded_again_in_a_shorter_window(files, gb0_tail,
                                                                                     cpu_transcriber):
    """The model wrote jfk's line but nothing of gb0's last 18 s before it: the window is decoded
    again stopping at jfk's first word, then the file goes on from there."""
    jfk_at = tail_seconds(gb0_tail) + GAP
    decoder, window = _first_window(files["speech_after"], cpu_transcriber)
    raw = [_raw(decoder, window, JFK, jfk_at, 30.0)]
    words = _words(decoder, JFK, jfk_at + 0.3, 29.5)
    decoded = DecodedWindow(tuple(raw[0].tokens), -0.5, 0.05, 1.1, 0.0)
    assert decoder.accept(window, decoded, raw, window.stop, words) == []
    assert decoder.previous == []  # nothing of the dropped text becomes the next prompt
    again = decoder.next_window()
    assert again.seek == window.seek
    assert again.stop == pytest.approx(round((jfk_at + 0.3) * SAMPLE_RATE), abs=1)
    # capped once: the same answer for the shorter window is taken as it is
    words = _words(decoder, JFK, jfk_at + 0.3, again.stop / SAMPLE_RATE)
    assert len(decoder.accept(again, decoded, raw, again.stop, words)) == 1


def test_a_passage_skipped_between_segments_is_decoded_next(files, gb0_tail, cpu_transcriber):
    """Segments before the skipped speech stay; the next window starts right after them."""
    jfk_at = tail_seconds(gb0_tail) + GAP
    decoder, window = _first_window(files["speech_after"], cpu_transcriber)
    first = "Our nation has flourished because of its commitment"
    raw = [_raw(decoder, window, first, 0.0, 3.5), _raw(decoder, window, JFK, jfk_at, 30.0)]
    words = _words(decoder, first, 0.7, 3.5) + _words(decoder, JFK, jfk_at + 0.3, 29.5)
    decoded = DecodedWindow(tuple(raw[0].tokens + raw[1].tokens), -0.4, 0.05, 1.2, 0.0)
    segments = decoder.accept(window, decoded, raw, window.stop, words)
    assert [s.text.strip() for s in segments] == [first]
    assert decoder.seek == pytest.approx(3.5 * SAMPLE_RATE, abs=1)
    assert decoder.previous == raw[0].tokens


def test_words_that_cover_the_speech_are_kept_whole(files, gb0_tail, cpu_transcriber):
    """Both passages written and placed where they are spoken: nothing is decoded again."""
    jfk_at = tail_seconds(gb0_tail) + GAP
    decoder, window = _first_window(files["speech_after"], cpu_transcriber)
    first = " ".join(["word"] * 50)  # gb0's tail, spoken all through [0.3, jfk_at - 0.6]
    raw = [_raw(decoder, window, first, 0.0, jfk_at - 0.5), _raw(decoder, window, JFK, jfk_at, 30.0)]
    words = _words(decoder, first, 0.3, jfk_at - 0.6) + _words(decoder, JFK, jfk_at + 0.3, 29.5)
    decoded = DecodedWindow(tuple(raw[0].tokens + raw[1].tokens), -0.3, 0.05, 1.2, 0.0)
    assert len(decoder.accept(window, decoded, raw, window.stop, words)) == 2
    assert decoder.seek == window.stop


# --------------------------------------------------------------------------- the VAD's hysteresis

def test_soft_speech_next_to_a_clear_word_stays_speech():
    """Frames between threshold - 0.15 and threshold count as speech when their run reaches the
    threshold (Silero's rule), not when they stand alone."""
    probs = np.array([0.1, 0.4, 0.6, 0.4, 0.2, 0.4, 0.3, 0.9, 0.36, 0.1, 0.45, 0.45, 0.1], np.float32)
    mask = speech_mask(probs, 0.5, pad_frames=0, min_silence_frames=0, hysteresis=0.15)
    assert speech_mask(probs, 0.5, 0, 0).astype(int).tolist() == (probs >= 0.5).astype(int).tolist()
    assert mask.astype(int).tolist() == [0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0]


def test_hysteresis_must_stay_below_the_threshold():
    with pytest.raises(ValueError, match="vad_hysteresis"):
        TranscribeOptions(vad_threshold=0.5, vad_hysteresis=0.5)
    assert TranscribeOptions().vad_hysteresis == 0.15
