"""Continuous batching across files: each model call encodes and decodes the current windows of
several files in flight together; a finished file frees its slot at once. Sequential decoding is
this with a batch of one, not a second copy of the loop. engine.window_server schedules the calls
(its run_tasks runs an iterable of tasks); this module knows nothing of it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np

from engine.audio import probe
from engine.backends.base import Backend
from engine.constants import SAMPLE_RATE, WINDOW_STRIDE
from engine.decoding import decode_rounds
from engine.errors import MediaError
from engine.language import detect_language
from engine.options import TranscribeOptions
from engine.parts import Span, plan
from engine.results import Segment
from engine.timing import words_from_alignment
from engine.tokenizer import Tokenizer
from engine.transcribe import LongFormDecoder, Window
from engine.vad_pool import VadPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileTask:
    """A file to transcribe, possibly resuming: `key` is the caller's handle for it. A resume passes
    back what the last WindowDone of its chain (file or part) said: next_seek, next_window,
    previous_tokens and prompt_reset."""

    key: Any
    path: str
    start_seek: int = 0
    start_window: int = 0
    previous_tokens: tuple[int, ...] = ()  # the prompt state: WindowDone.previous_tokens
    first_segment_id: int = 0
    duration: float | None = None  # known length (for progress) saves a probe
    span: Span = (0, None)  # the samples this task decodes: a part of the file (engine.parts), or all
    part: int = 0
    # A file cut in parts: the parts still to decode (each a FileTask with its span). None: not cut
    # yet, and a fresh task is cut when it is long enough; () : every part is done.
    parts: tuple[FileTask, ...] | None = None
    prompt_reset: bool = False  # the prompt state: WindowDone.prompt_reset
    # The file's language (LanguageDetected, or a resume's record of it): no detection, every part uses it
    language: str | None = None
    language_probability: float = 1.0

    def with_language(self, language: str, probability: float) -> FileTask:
        """This task, and each of its parts, in `language`."""
        parts = None if self.parts is None else tuple(p.with_language(language, probability) for p in self.parts)
        return replace(self, language=language, language_probability=probability, parts=parts)

    def in_parts(self, spans: tuple[Span, ...]) -> FileTask:
        """This fresh file as one task per span, each numbering its windows from part x WINDOW_STRIDE."""
        return replace(self, parts=tuple(
            replace(self, start_seek=span[0], start_window=k * WINDOW_STRIDE, first_segment_id=k * WINDOW_STRIDE,
                    span=span, part=k, parts=None) for k, span in enumerate(spans)))


@dataclass(frozen=True)
class WindowDone:
    """One window of one file is decoded: save `segments`; resume later from `next_window`/`next_seek`
    with the prompt state `previous_tokens`/`prompt_reset` (of part `part`, for a file decoded in parts)."""

    key: Any
    window: int
    seek: int
    next_window: int
    next_seek: int
    segments: tuple[Segment, ...]
    duration: float  # best known duration of the file so far
    part: int = 0
    done_seconds: float = 0.0  # audio of the file decoded so far, over all its parts (for progress)
    previous_tokens: tuple[int, ...] = ()  # text decoded since the last prompt reset (at most 223 tokens)
    prompt_reset: bool = False  # the prompt was reset since the chain began: the initial prompt is dropped


@dataclass(frozen=True)
class FilePlanned:
    """A file is decoded in these parts (engine.parts): a resume needs them, to continue each."""

    key: Any
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class LanguageDetected:
    """A multilingual model found the file's language, once, before any window: a resume passes it
    back as FileTask.language (with FileTask.language_probability), so it is not detected again."""

    key: Any
    language: str
    probability: float


@dataclass(frozen=True)
class PartDone:
    """One part of a file decoded in parts is finished (FileDone follows once all are)."""

    key: Any
    part: int


@dataclass(frozen=True)
class FileDone:
    key: Any
    duration: float
    language: str
    language_probability: float
    timings: dict


@dataclass(frozen=True)
class FileFailed:
    key: Any
    error: Exception


Event = WindowDone | FileDone | FileFailed | FilePlanned | PartDone | LanguageDetected


@dataclass
class _Slot:
    task: FileTask
    decoder: LongFormDecoder
    language: str
    language_probability: float = 1.0
    timings: dict = field(default_factory=lambda: defaultdict(float))


class BatchTranscriber:
    """Runs up to `batch_size` files at once through one backend.

    This holds the per-file and per-step work; engine.window_server schedules it: a thread per
    file prepares its windows, and one server thread per model replica decodes them in calls.
    """

    def __init__(self, backend: Backend, tokenizer: Tokenizer, n_mels: int, options: TranscribeOptions,
                 batch_size: int = 1, vad_pool: VadPool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend, self.tokenizer, self.n_mels = backend, tokenizer, n_mels
        self.options, self.batch_size = options, batch_size
        self.vad_pool = vad_pool  # engine.vad_pool.VadPool the files' voice activity runs in; None: in-process
        self.call_key = options.call_key()  # windows of cores with equal keys may share a call
        self._tokenizers: dict[str, Tokenizer] = {}  # by language (multilingual models)

    def with_options(self, options: TranscribeOptions) -> BatchTranscriber:
        """This model and batch size with another file's options (a worker serves every job's own)."""
        if options == self.options:
            return self
        tokenizer = self.tokenizer.with_task(options.task, options.language or "en")
        return BatchTranscriber(self.backend, tokenizer, self.n_mels, options, self.batch_size, self.vad_pool)

    def plan(self, task: FileTask) -> FileTask:
        """A fresh task cut into parts when its file is long enough (engine.parts), else itself.

        The duration is probed when the task does not give it; a file that cannot be probed is not
        cut (opening it names the problem)."""
        fresh = task.parts is None and task.part == 0 and task.start_seek == 0 and task.start_window == 0
        if not fresh or not self.options.part_seconds:
            return task
        try:
            duration = task.duration if task.duration is not None else probe(task.path).duration
            spans = plan(task.path, duration, self.options.part_seconds)
        except MediaError:
            return task
        return task.in_parts(spans) if len(spans) > 1 else task

    def with_language(self, task: FileTask) -> tuple[FileTask, LanguageDetected | None]:
        """The task with its file's language: the options', the task's own (a resume), else detected
        once on the file's first speech (engine.language), with the event that says so. A file with
        no speech keeps none (nothing of it is decoded). MediaError if the file cannot be read."""
        if self.options.language or task.language or not self.tokenizer.multilingual:
            return task, None
        decoder = LongFormDecoder(task.path, self.tokenizer, self.options, self.n_mels, duration_hint=task.duration,
                                  vad_pool=self.vad_pool)
        found = detect_language(self.backend, decoder, self.n_mels)
        if found is None:
            return task, None
        return task.with_language(*found), LanguageDetected(task.key, *found)

    def open_slot(self, task: FileTask) -> _Slot:
        """A file's (or part's) long-form state; MediaError if it cannot be opened."""
        language, probability = self.options.language or task.language, task.language_probability
        if not self.tokenizer.multilingual or self.options.language:
            probability = 1.0
        tokenizer = self._tokenizer(language)
        decoder = LongFormDecoder(task.path, tokenizer, self.options, self.n_mels, task.start_seek,
                                  task.start_window, task.previous_tokens, task.first_segment_id, task.duration,
                                  task.span, task.prompt_reset, self.vad_pool)
        return _Slot(task, decoder, tokenizer.language or "en", probability)

    def _tokenizer(self, language: str | None) -> Tokenizer:
        if not self.tokenizer.multilingual or not language or language == self.tokenizer.language:
            return self.tokenizer
        if language not in self._tokenizers:
            self._tokenizers[language] = self.tokenizer.with_language(language)
        return self._tokenizers[language]

    def next_window(self, slot: _Slot) -> Window | FileDone:
        """The slot's next window, or FileDone when its file is finished (MediaError on bad media)."""
        started = time.perf_counter()
        window = slot.decoder.next_window()
        slot.timings["audio_and_features"] += time.perf_counter() - started
        if window is None:
            return FileDone(slot.task.key, slot.decoder.audio.duration, slot.language,
                            slot.language_probability, dict(slot.timings))
        return window

    def step(self, ready: list[tuple[_Slot, Window]], alone: bool = False) -> Iterator[tuple[int, WindowDone]]:
        """Encode and decode one window per file, all in one call each, then split, align and advance
        each file; yields (index into `ready`, its WindowDone). The windows that need no temperature
        fallback come first, as soon as their first decode is judged; the others follow. Calls on
        several replicas may run at once, for different files; `alone` says no other call runs now,
        so the encoder may take every thread (a backend's `encode_wide`, same output)."""
        clock = time.perf_counter()
        for slot, _ in ready:  # windows decoded in a call shared with other windows (batching seen from a job)
            slot.timings["shared_calls"] += len(ready) > 1
        encode = getattr(self.backend, "encode_wide", self.backend.encode) if alone else self.backend.encode
        encoded = encode(np.stack([w.features for _, w in ready]))
        self._charge(ready, "encode", time.perf_counter() - clock)
        clock = time.perf_counter()
        rounds = decode_rounds(self.backend, encoded, [w.prompt for _, w in ready], self.options, self.tokenizer,
                               [w.seed for _, w in ready])
        for settled, decoded, tried in rounds:
            self._charge([ready[i] for i in tried], "generate", time.perf_counter() - clock)
            clock = time.perf_counter()
            done = [ready[i] for i in settled]
            splits = [slot.decoder.split(w, d) for (slot, w), d in zip(done, decoded)]
            words = self._align(encoded, settled, done, splits) if self.options.word_timestamps else [None] * len(done)
            self._charge(done, "align", time.perf_counter() - clock)
            for i, (slot, window), result, (raw, next_seek), found in zip(settled, done, decoded, splits, words):
                segments = slot.decoder.accept(window, result, raw, next_seek, found)
                covered = (slot.decoder.seek - slot.task.span[0]) / SAMPLE_RATE
                decoder = slot.decoder
                yield i, WindowDone(slot.task.key, window.index, window.seek, decoder.window_index, decoder.seek,
                                    tuple(segments), decoder.audio.duration, slot.task.part, covered,
                                    tuple(decoder.previous), decoder.prompt_reset)
            clock = time.perf_counter()

    @staticmethod
    def _charge(ready: list[tuple[_Slot, Window]], stage: str, seconds: float) -> None:
        """A stage's seconds, shared equally among the windows of the call that went through it."""
        for slot, _ in ready:
            slot.timings[stage] += seconds / len(ready)

    def _align(self, encoded: np.ndarray, rows: list[int], ready: list[tuple[_Slot, Window]], splits) -> list:
        """Word times for every window that kept text (`rows`: the windows' rows in `encoded`).

        One call per window: CTranslate2's batched alignment shifts times by a frame, which
        would move the next seek and make batched results differ from sequential ones.
        """
        words: list = [None] * len(ready)
        for i, (raw, _) in enumerate(splits):
            if not raw:
                continue
            tokenizer = ready[i][0].decoder.tokenizer
            text = [t for r in raw for t in r.text_tokens]
            row = rows[i]
            (alignment,) = self.backend.align(encoded[row:row + 1], list(tokenizer.sot_sequence), [text],
                                              [ready[i][1].num_frames])
            words[i] = words_from_alignment(tokenizer, text, alignment)
        return words
