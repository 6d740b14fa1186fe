"""Typed, frozen results of transcription: words, segments and per-file info."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Iterable


@dataclass(frozen=True)
class Word:
    """One word with its time span in seconds and the model's probability."""

    start: float
    end: float
    word: str  # as the tokenizer decodes it, usually with its leading space
    probability: float


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: times in seconds from the start of the file."""

    id: int
    seek: int  # start sample (at 16 kHz) of the window this segment came from
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    words: tuple[Word, ...] = ()
    window: int = 0  # index of the window that produced it, for resuming

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens"] = list(self.tokens)
        d["words"] = [asdict(w) for w in self.words]
        return d


def in_order(segments: Iterable[Segment]) -> tuple[Segment, ...]:
    """A file's segments in time order, numbered from 0: the parts of a long file (engine.parts)
    finish out of order, and each numbers its windows and segments from its own base."""
    ordered = sorted(segments, key=lambda s: (s.window, s.id))
    return tuple(replace(s, id=i) if s.id != i else s for i, s in enumerate(ordered))


@dataclass(frozen=True)
class TranscriptInfo:
    """What a transcript is about and how it was made."""

    path: str
    duration: float
    language: str
    language_probability: float
    model: str
    model_hash: str
    backend: str
    compute: str
    options: dict = field(default_factory=dict)
    engine_version: str = ""
