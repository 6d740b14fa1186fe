"""Whisper's long-form algorithm for one file, as a small class with explicit state.

Each step takes the next window at `seek` (skipping and cutting out long silences), and after
the model has decoded it, turns its tokens into segments, moves `seek` to the last complete
timestamp and keeps the text as the next window's prompt. Model calls live in `batching`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.constants import HOP_LENGTH, INPUT_STRIDE, N_SAMPLES, SAMPLE_RATE, TIME_PRECISION
from engine.decoding import MAX_PROMPT, DecodedWindow, build_prompt, previous_context
from engine.features import window_features
from engine.options import TranscribeOptions
from engine.results import Segment, Word
from engine.source import AudioCursor
from engine.timing import TimedWord, assign_words, clip_long_words
from engine.tokenizer import Tokenizer
from engine.vad import FRAME, frames_of, speech_mask
from engine.vad_pool import VadPool

MIN_WINDOW_SAMPLES = SAMPLE_RATE // 10  # less than 0.1 s of audio is not worth a window
# Speech the model skipped is decoded again: the VAD hears at least UNHEARD_SPEECH seconds of it
# after the window's last timestamp or before a segment's first word, UNHEARD_MARGIN seconds away
# from the nearest word (word times are not exact).
UNHEARD_MARGIN = 1.0
UNHEARD_SPEECH = 1.0
# A window that stops short of its end moves the seek at least this far (or to its end): one that
# moved less was decoded again from nearly the same place, and the rules above could move one 32 ms
# VAD frame per full decode. None of the shared clips' windows needs it (benchmarks/decode_counts.py:
# at most 2 windows per 30 s); a model that closed every window at its start takes 10 per 30 s.
MIN_ADVANCE = 3 * SAMPLE_RATE


@dataclass
class Window:
    """One window ready for the model."""

    index: int
    seek: int  # first sample
    stop: int  # sample just past the audio it holds (the rest is zero padding)
    features: np.ndarray
    prompt: list[int]
    seed: int = 0  # sampled fallback draws from this (engine.decoding.sampling_seed): the file's name and seek

    @property
    def num_frames(self) -> int:
        return (self.stop - self.seek) // HOP_LENGTH

    @property
    def offset(self) -> float:
        return self.seek / SAMPLE_RATE


@dataclass
class RawSegment:
    """A segment as timestamp tokens delimit it, before word timing."""

    start: float
    end: float
    tokens: list[int]
    text_tokens: list[int] = field(default_factory=list)


class LongFormDecoder:
    """The state of one file's transcription: seek, previous text, segment count.

    The prompt state is `previous` (the text decoded since the last prompt reset, its last MAX_PROMPT
    tokens: no prompt uses more) and `prompt_reset` (a reset happened since the chain began, so the
    initial prompt no longer applies, as in Whisper); a resume that passes both back prompts as an
    uninterrupted run would."""

    def __init__(self, path: str, tokenizer: Tokenizer, options: TranscribeOptions, n_mels: int,
                 start_seek: int = 0, start_window: int = 0, previous_tokens: tuple[int, ...] = (),
                 first_segment_id: int = 0, duration_hint: float | None = None,
                 span: tuple[int, int | None] = (0, None), prompt_reset: bool = False,
                 vad_pool: VadPool | None = None):
        self.path = str(path)
        self.tokenizer = tokenizer
        self.options = options
        self.n_mels = n_mels
        start, stop = span  # a part of the file (engine.parts) ends at its stop, as a file at its end
        if stop is not None:
            duration_hint = stop / SAMPLE_RATE
        self.audio = AudioCursor(self.path, vad=options.vad, duration_hint=duration_hint, start=start, stop=stop,
                                 vad_pool=vad_pool)
        self.seek = start_seek
        self.window_index = start_window
        self.previous: list[int] = list(previous_tokens)[-MAX_PROMPT:]
        self.prompt_reset = prompt_reset
        self.initial = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        self.hotwords = tokenizer.encode(" " + options.hotwords.strip())[:MAX_PROMPT] if options.hotwords else []
        self.next_segment_id = first_segment_id
        self.last_end = start_seek / SAMPLE_RATE
        self.finished = False
        self.cap: int | None = None  # the next window stops here: speech the model skipped (accept)
        self.capped_at: int | None = None  # the seek of the last capped window, capped once only

    # -- choosing the next window -------------------------------------------------------------

    def next_window(self) -> Window | None:
        """The next window to decode, or None when the file is done."""
        span = self.next_span()
        if span is None:
            self.finished = True
            self.audio.close()
            return None
        self.seek, stop = span
        if self.cap is not None and self.cap - self.seek >= MIN_WINDOW_SAMPLES:
            stop, self.capped_at = min(stop, self.cap), self.seek
        self.cap = None
        self.audio.forget_before(self.seek)
        features = window_features(self.audio.slice(self.seek, stop), self.n_mels)
        return Window(self.window_index, self.seek, stop, features, self.prompt(), self._seed())

    def _seed(self) -> int:
        """The window's seed: its file's name (not its folder, which a worker's path map may change)
        and its seek, so a resumed or batched run samples as an uninterrupted sequential one."""
        return zlib.crc32(f"{Path(self.path).name}:{self.seek}".encode())

    def prompt(self) -> list[int]:
        """Hotwords, the initial prompt and previous text (engine.decoding.previous_context), and the
        start sequence for the next window. Without condition_on_previous_text the first window still
        has the initial prompt: Whisper resets the previous text only after a window."""
        initial = [] if self.prompt_reset else self.initial
        previous = previous_context(self.previous, initial, MAX_PROMPT - len(self.hotwords))
        return build_prompt(self.tokenizer, previous, self.options.without_timestamps, self.hotwords)

    def next_span(self) -> tuple[int, int] | None:
        """(seek, stop) of the next window with speech in it (the seek moves over what it skips)."""
        while True:
            self.audio.forget_before(self.seek)
            lookahead = N_SAMPLES + frames_of(self.options.min_silence + self.options.speech_pad) * FRAME
            self.audio.read_until(self.seek + lookahead)
            end = self.audio.end
            if self.seek >= end - (MIN_WINDOW_SAMPLES if self.audio.eof else 0):
                return None
            if self.audio.speech is None:
                return self.seek, min(self.seek + N_SAMPLES, end)
            span = self._speech_span(lookahead)
            if span is not None:
                return span

    def _speech_span(self, lookahead: int) -> tuple[int, int] | None:
        """Jump over non-speech; cut the window where a long silence begins. None: look again."""
        opts = self.options
        first_frame = self.seek // FRAME
        stop_frame = -(-min(self.seek + lookahead, self.audio.end) // FRAME)
        probs = self.audio.speech_frames(first_frame, stop_frame)
        mask = speech_mask(probs, opts.vad_threshold, frames_of(opts.speech_pad), frames_of(opts.min_silence),
                           opts.vad_hysteresis)
        if not mask.any():
            if self.audio.eof and stop_frame * FRAME >= self.audio.end:
                self.seek = self.audio.end
            else:
                self.seek = max(self.seek + FRAME, (first_frame + len(mask) - frames_of(opts.speech_pad)) * FRAME)
            return None
        first = int(np.argmax(mask))
        if first > 0:
            self.seek = (first_frame + first) * FRAME
            return None
        silent = np.flatnonzero(~mask)
        run_end = (first_frame + int(silent[0])) * FRAME if len(silent) else self.audio.end
        stop = min(self.seek + N_SAMPLES, run_end, self.audio.end)
        return (self.seek, stop) if stop - self.seek >= MIN_WINDOW_SAMPLES else self._skip_tiny(stop)

    def _skip_tiny(self, stop: int) -> None:
        self.seek = max(stop, self.seek + FRAME)
        return None

    # -- accepting the model's answer -----------------------------------------------------------

    def is_silence(self, decoded: DecodedWindow) -> bool:
        """Whisper's no-speech rule: likely silence and an unlikely transcript."""
        opts = self.options
        if opts.no_speech_threshold is None or decoded.no_speech_prob <= opts.no_speech_threshold:
            return False
        return opts.log_prob_threshold is None or decoded.avg_logprob < opts.log_prob_threshold

    def _likely_silence(self, decoded: DecodedWindow) -> bool:
        threshold = self.options.no_speech_threshold
        return threshold is not None and decoded.no_speech_prob > threshold

    def split(self, window: Window, decoded: DecodedWindow) -> tuple[list[RawSegment], int]:
        """Segments delimited by timestamp pairs, and the seek of the next window."""
        if self.is_silence(decoded):
            return [], window.stop
        tokens = list(decoded.tokens)
        begin = self.tokenizer.timestamp_begin
        single_ending = len(tokens) >= 2 and tokens[-2] < begin <= tokens[-1]
        pairs = [i for i in range(1, len(tokens)) if tokens[i] >= begin and tokens[i - 1] >= begin]
        if pairs:
            segments, last = self._sliced(window, tokens, pairs + ([len(tokens)] if single_ending else []))
            next_seek = window.stop if single_ending else \
                window.seek + (tokens[last - 1] - begin) * INPUT_STRIDE * HOP_LENGTH
        else:
            stamps = [t for t in tokens if t >= begin]
            span = (stamps[-1] - begin) * TIME_PRECISION if stamps and stamps[-1] != begin \
                else (window.stop - window.seek) / SAMPLE_RATE
            segments = [self._raw(window, 0.0, span, tokens)]
            next_seek = window.stop
        if next_seek >= window.stop and segments and any(s.text_tokens for s in segments):
            next_seek = self._unheard_speech(window, segments[-1].end) or next_seek
        next_seek = min(max(next_seek, window.seek + FRAME), window.stop) if next_seek < window.stop else window.stop
        return [s for s in segments if s.text_tokens], next_seek

    def _skipped_speech(self, window: Window, groups: list[list[TimedWord]]) -> tuple[int, int] | None:
        """(segments to keep, next seek) when the VAD hears speech before a segment's first word
        that no word covers: tiny.en sometimes jumps over a whole passage and places the next text
        after it. Before the first segment, the window is decoded again stopping at its first word."""
        if self.audio.speech is None:
            return None
        previous_end = 0.0
        for keep, group in enumerate(groups):
            if not group:
                continue
            if self._hears(window, previous_end + UNHEARD_MARGIN, group[0].start - UNHEARD_MARGIN):
                resume = window.seek + int(round(previous_end * SAMPLE_RATE))
                if keep:
                    return keep, resume
                if self.capped_at != window.seek:  # not again on a window already capped here
                    self.cap = window.seek + int(round(group[0].start * SAMPLE_RATE))
                    return 0, window.seek
                return None
            previous_end = group[-1].end
        return None

    def _hears(self, window: Window, start: float, stop: float) -> bool:
        """Whether the VAD hears at least UNHEARD_SPEECH seconds of speech in [start, stop) s of
        the window."""
        first = -(-(window.seek + int(start * SAMPLE_RATE)) // FRAME)
        last = (window.seek + int(stop * SAMPLE_RATE)) // FRAME
        if last - first < frames_of(UNHEARD_SPEECH):
            return False
        probs = self.audio.speech_frames(first, last)
        return int((probs >= self.options.vad_threshold).sum()) >= frames_of(UNHEARD_SPEECH)

    def _unheard_speech(self, window: Window, end: float) -> int | None:
        """Where to resume when the model closed a window early although the VAD hears speech well
        after its last timestamp (`end`, s): that speech would otherwise be skipped (None: nothing there)."""
        after = end - window.offset
        if self.audio.speech is None or after <= 0:
            return None
        if not self._hears(window, after + UNHEARD_MARGIN, (window.stop - window.seek) / SAMPLE_RATE):
            return None
        return int(round(end * SAMPLE_RATE))

    def _sliced(self, window: Window, tokens: list[int], cuts: list[int]) -> tuple[list[RawSegment], int]:
        begin, segments, last = self.tokenizer.timestamp_begin, [], 0
        for cut in cuts:
            piece = tokens[last:cut]
            segments.append(self._raw(window, (piece[0] - begin) * TIME_PRECISION,
                                      (piece[-1] - begin) * TIME_PRECISION, piece))
            last = cut
        return segments, last

    def _raw(self, window: Window, start: float, end: float, tokens: list[int]) -> RawSegment:
        limit = (window.stop - window.seek) / SAMPLE_RATE
        start, end = min(max(start, 0.0), limit), min(max(end, 0.0), limit)
        text = [t for t in tokens if t < self.tokenizer.eot]
        return RawSegment(window.offset + start, window.offset + max(end, start), tokens, text)

    def accept(self, window: Window, decoded: DecodedWindow, raw: list[RawSegment], next_seek: int,
               words: list[TimedWord] | None) -> list[Segment]:
        """Finish the window: place words, trim segments to them, advance the state."""
        groups = None
        if words is not None and raw:
            groups = assign_words(words, [len(r.text_tokens) for r in raw])
            clip_long_words(groups)
            skipped = self._skipped_speech(window, groups)
            if skipped is not None:  # keep what precedes the skipped speech, decode it again next
                keep, next_seek = skipped
                raw, groups = raw[:keep], groups[:keep]
            next_seek = self._seek_after_words(window, raw, groups, next_seek)
        segments = [s for s in (self._segment(window, decoded, r, groups[i] if groups else None)
                                for i, r in enumerate(raw)) if s is not None]
        for r in raw:
            self.previous.extend(r.tokens)
        del self.previous[:-MAX_PROMPT]
        if not self.options.condition_on_previous_text or self._likely_silence(decoded) \
                or decoded.temperature > self.options.prompt_reset_on_temperature:
            self.previous, self.prompt_reset = [], True  # never condition on a likely hallucination
        self.seek = self._bounded(window, next_seek)
        self.window_index += 1
        return segments

    def _bounded(self, window: Window, next_seek: int) -> int:
        """`next_seek`, at least MIN_ADVANCE past the window's seek (or its stop), except when the window
        is decoded again from its own seek with a shorter stop (a cap: once per seek)."""
        if self.cap is not None:
            return next_seek
        return max(next_seek, min(window.seek + MIN_ADVANCE, window.stop))

    def _seek_after_words(self, window: Window, raw, groups, next_seek: int) -> int:
        """With word times, resume right after the last word of an incomplete window."""
        if next_seek >= window.stop:
            return next_seek
        last_words = [g[-1] for g in groups if g]
        if not last_words:
            return next_seek
        after = window.seek + int(round(last_words[-1].end * SAMPLE_RATE))
        return min(max(after, window.seek + FRAME), window.stop) if after > window.seek else next_seek

    def _segment(self, window: Window, decoded: DecodedWindow, raw: RawSegment,
                 timed: list[TimedWord] | None) -> Segment | None:
        duration, offset = self.audio.duration, window.offset
        limit = min(window.stop / SAMPLE_RATE, duration)
        words: tuple[Word, ...] = ()
        start, end = raw.start, raw.end
        text = self.tokenizer.decode(raw.text_tokens)
        if timed:
            words = self._words(timed, offset, limit)
            start, end, text = words[0].start, words[-1].end, "".join(w.word for w in words)
        start = min(max(start, self.last_end), limit)
        end = min(max(end, start), limit)
        if not text.strip():
            return None
        self.last_end = end
        segment = Segment(self.next_segment_id, window.seek, round(start, 3), round(end, 3), text,
                          tuple(raw.tokens), decoded.avg_logprob, decoded.no_speech_prob,
                          decoded.compression_ratio, decoded.temperature, words, window.index)
        self.next_segment_id += 1
        return segment

    def _words(self, timed: list[TimedWord], offset: float, limit: float) -> tuple[Word, ...]:
        """Absolute, monotonic word times within the window and before the end of the file."""
        words, floor = [], self.last_end
        for w in timed:
            start = min(max(offset + w.start, floor), limit)
            end = min(max(offset + w.end, start), limit)
            words.append(Word(round(start, 3), round(end, 3), w.word, round(w.probability, 4)))
            floor = end
        return tuple(words)
