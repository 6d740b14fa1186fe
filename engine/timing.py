"""Word timestamps from an alignment, and trimming of segments to the words they hold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.backends.base import Alignment
from engine.constants import TOKENS_PER_SECOND
from engine.tokenizer import Tokenizer

PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass
class TimedWord:
    """A word while it is being placed: times relative to the window start."""

    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def words_from_alignment(tokenizer: Tokenizer, text_tokens: list[int], alignment: Alignment) -> list[TimedWord]:
    """Whisper's word timing: DTW jumps give each token a time; words take their first token's."""
    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1 or len(alignment.text_indices) == 0:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(alignment.text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = alignment.time_indices[jumps] / TOKENS_PER_SECOND
    if len(jump_times) < boundaries[-1] + 1:
        return []
    starts, ends = jump_times[boundaries[:-1]], jump_times[boundaries[1:]]
    probs = np.asarray(alignment.token_probs, dtype=np.float64)
    timed = [
        TimedWord(w, list(t), float(s), float(e), float(np.mean(probs[i:j])) if j > i and j <= len(probs) else 0.0)
        for w, t, s, e, i, j in zip(words[:-1], word_tokens[:-1], starts, ends, boundaries[:-1], boundaries[1:])
    ]
    merge_punctuation(timed)
    return [w for w in timed if w.word]


def merge_punctuation(words: list[TimedWord]) -> None:
    """Attach opening marks to the next word and closing marks to the previous one, in place.

    Whisper's merge_punctuations: the word that takes a mark stays the target (pointer `j`, `i`) while
    marks follow each other, so " Hello", "?", "!" gives " Hello?!", not " Hello?" and a stray "!"."""
    i, j = len(words) - 2, len(words) - 1
    while i >= 0:
        previous, following = words[i], words[j]
        if previous.word.startswith(" ") and previous.word.strip() in PREPEND_PUNCTUATION:
            following.word = previous.word + following.word
            following.tokens = previous.tokens + following.tokens
            previous.word, previous.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(words):
        previous, following = words[i], words[j]
        if not previous.word.endswith(" ") and following.word in APPEND_PUNCTUATION:
            previous.word += following.word
            previous.tokens = previous.tokens + following.tokens
            following.word, following.tokens = "", []
        else:
            i = j
        j += 1


def clip_long_words(groups: list[list[TimedWord]]) -> None:
    """A first or last word lasting more than twice the median word is stretched over silence: clip it."""
    durations = np.array([w.end - w.start for g in groups for w in g])
    durations = durations[durations > 0]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    max_duration = 2 * median
    if max_duration <= 0:
        return
    for group in groups:
        if not group:
            continue
        first, last = group[0], group[-1]
        if first.end - first.start > max_duration:
            first.start = max(first.start, first.end - max_duration)
        if last.end - last.start > max_duration:
            last.end = min(last.end, last.start + max_duration)


def assign_words(words: list[TimedWord], token_counts: list[int]) -> list[list[TimedWord]]:
    """Split the window's words among its segments by how many text tokens each segment has."""
    groups: list[list[TimedWord]] = [[] for _ in token_counts]
    bounds = np.cumsum(token_counts)
    consumed = 0
    for word in words:
        index = int(np.searchsorted(bounds, consumed, side="right"))
        groups[min(index, len(groups) - 1)].append(word)
        consumed += len(word.tokens)
    return groups
