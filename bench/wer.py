"""Scoring transcripts against references: normalization, word error counts, WER and QoI.

Self-contained (numpy only): the word alignment is a Levenshtein dynamic program written
here, one numpy pass per reference word, so 2,000-word texts score in well under a second.
Its tie-breaking between equally short alignments follows RapidFuzz's (and so jiwer's)
backtrace, so substitution / deletion / insertion splits agree with jiwer, not only totals.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["WordErrors", "QoI", "normalize", "word_errors", "total_errors", "qoi"]


# --------------------------------------------------------------------------- normalization

_PUNCT = re.compile(r"[^\w\s']|_")
_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def _basic_normalize(text: str) -> str:
    """Lowercase, drop punctuation (keeping in-word apostrophes), collapse whitespace."""
    text = _PUNCT.sub(" ", text.lower().replace("\u2019", "'"))
    return " ".join(_APOSTROPHE.sub(" ", text).split())


@lru_cache(maxsize=1)
def _normalizer() -> Callable[[str], str]:
    try:
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError:
        warnings.warn("whisper-normalizer is not installed: scoring with a basic lowercase/punctuation "
                      "normalizer, so WER is not comparable to published Whisper numbers "
                      "(pip install whisper-normalizer)", RuntimeWarning, stacklevel=3)
        return _basic_normalize
    return EnglishTextNormalizer()


_WORDLIKE = re.compile(r"[^\W_]")


def normalize(text: str) -> str:
    """Whisper's English text normalizer (spelling, numbers, fillers, case and punctuation).

    Tokens with no letter or digit left are dropped: the normalizer keeps a trailing "." (it
    only strips one followed by a character), so "So..." would become "so ." and score an
    extra word.
    """
    return " ".join(w for w in _normalizer()(text or "").split() if _WORDLIKE.search(w))


# --------------------------------------------------------------------------- error counts

@dataclass(frozen=True)
class WordErrors:
    """Word-level edit counts of one hypothesis (or a sum of several) against its reference."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    def __post_init__(self):
        if min(self.substitutions, self.deletions, self.insertions) < 0:
            raise ValueError(f"negative error count: {self}")
        if self.substitutions + self.deletions > self.reference_words:
            raise ValueError(f"more substituted/deleted words than reference words: {self}")

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def hits(self) -> int:
        return self.reference_words - self.substitutions - self.deletions

    @property
    def wer(self) -> float:
        """errors / reference words; with an empty reference, the insertion count (as jiwer)."""
        return float(self._rate())

    def _rate(self) -> Fraction:
        return Fraction(self.errors, self.reference_words) if self.reference_words else Fraction(self.insertions)

    def __add__(self, other: "WordErrors") -> "WordErrors":
        if not isinstance(other, WordErrors):
            return NotImplemented
        return WordErrors(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions, self.reference_words + other.reference_words)

    def __radd__(self, other):
        if other == 0:  # so that sum(errors) works
            return self
        return NotImplemented


NO_ERRORS = WordErrors(0, 0, 0, 0)


def _words(text: str | Sequence[str], normalized: bool) -> list[str]:
    if isinstance(text, str):
        return (normalize(text) if normalized else text).split()
    return [w for item in text for w in (normalize(item) if normalized else item).split()]


def word_errors(reference: str | Sequence[str], hypothesis: str | Sequence[str],
                normalized: bool = True) -> WordErrors:
    """Substitutions, deletions and insertions turning `reference` into `hypothesis`.

    normalized: apply Whisper's English normalizer to both texts first (the usual way to
    score Whisper); False splits the texts on whitespace as given. A list of strings is
    scored as one text (its items joined).
    """
    ref = _words(reference, normalized)
    hyp = _words(hypothesis, normalized)
    subs, dels, ins = _align_counts(ref, hyp)
    return WordErrors(subs, dels, ins, len(ref))


def _align_counts(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(S, D, I) of a minimum-edit alignment of two word lists.

    Row c of the DP is D[c][0..m] (c reference words against every hypothesis prefix). A row
    follows from the previous one with the prefix-minimum identity
    D[c][r] = r + min_{k<=r}(cand[k] - k), cand being the best diagonal/deletion cost of each
    cell. Ties are broken as RapidFuzz's backtrace from the end does: deletion if
    D[c][r] == D[c-1][r] + 1, else insertion if D[c][r-1] < D[c-1][r-1], else diagonal; each
    cell's pointer depends only on neighbouring cells, so instead of storing the matrix we
    carry along the substitutions on each cell's pointer path (deletions and insertions
    follow from D and c - r), which keeps memory at O(len(hyp)).
    """
    # RapidFuzz strips the common prefix and suffix before aligning: do the same for equal ties.
    lo = 0
    while lo < len(ref) and lo < len(hyp) and ref[lo] == hyp[lo]:
        lo += 1
    hi = 0
    while hi < len(ref) - lo and hi < len(hyp) - lo and ref[-1 - hi] == hyp[-1 - hi]:
        hi += 1
    ref, hyp = ref[lo:len(ref) - hi], hyp[lo:len(hyp) - hi]
    n, m = len(ref), len(hyp)
    if n == 0 or m == 0:
        return 0, n, m

    vocab: dict[str, int] = {}
    hyp_ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in hyp), dtype=np.int64, count=m)
    ref_ids = [vocab.get(w, -1) for w in ref]

    cols = np.arange(m + 1, dtype=np.int64)
    prev = cols.copy()  # D[0][r] = r (all insertions)
    prev_subs = np.zeros(m + 1, dtype=np.int64)
    cand = np.empty(m + 1, dtype=np.int64)
    base_subs = np.empty(m + 1, dtype=np.int64)
    for c in range(1, n + 1):
        mismatch = (hyp_ids != ref_ids[c - 1]).astype(np.int64)
        diag = prev[:-1] + mismatch
        up = prev[1:] + 1
        cand[0] = c
        np.minimum(diag, up, out=cand[1:])
        cur = np.minimum.accumulate(cand - cols) + cols

        deletion = cur[1:] == up
        insertion = ~deletion & (cur[:-1] < prev[:-1])
        base_subs[0] = 0
        base_subs[1:] = np.where(deletion, prev_subs[1:], prev_subs[:-1] + mismatch)
        # An insertion takes the substitutions of the nearest non-insertion cell on its left.
        source = np.where(np.concatenate(([False], insertion)), 0, cols)
        np.maximum.accumulate(source, out=source)
        prev_subs = base_subs[source]
        prev = cur

    dist, subs = int(prev[m]), int(prev_subs[m])
    deletions = (dist - subs + n - m) // 2
    insertions = dist - subs - deletions
    return subs, deletions, insertions


def total_errors(per_file: Mapping[str, WordErrors] | Sequence[WordErrors]) -> WordErrors:
    """Counts summed over files: its .wer is the corpus WER (errors over all reference words)."""
    values = per_file.values() if isinstance(per_file, Mapping) else per_file
    return sum(values, NO_ERRORS)


# --------------------------------------------------------------------------- quality of inference

@dataclass(frozen=True)
class QoI:
    """WhisperKit's quality of inference: the share of files whose WER did not get worse.

    value: that share, in [0, 1]; float(qoi) gives it too.
    regressed: (file, baseline WER, candidate WER) for each file that got worse, worst first;
    a baseline file missing from the candidate counts as worse, with candidate WER inf.
    """

    value: float
    files: int
    regressed: tuple[tuple[str, float, float], ...]

    def __float__(self) -> float:
        return self.value

    @property
    def worse(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.regressed)


def qoi(baseline: Mapping[str, WordErrors], candidate: Mapping[str, WordErrors]) -> QoI:
    """Compare per-file WER of `candidate` against `baseline` over the baseline's files.

    A file counts as not worse when its candidate WER is at most its baseline WER (exact
    rational comparison, so equal counts never flip on rounding). Files only in `candidate`
    are ignored.
    """
    if not baseline:
        raise ValueError("qoi needs at least one baseline file")
    regressed = []
    for name, base in baseline.items():
        cand = candidate.get(name)
        if cand is None:
            regressed.append((name, base.wer, float("inf")))
        elif cand._rate() > base._rate():
            regressed.append((name, base.wer, cand.wer))
    regressed.sort(key=lambda item: (-(item[2] - item[1]), item[0]))
    return QoI((len(baseline) - len(regressed)) / len(baseline), len(baseline), tuple(regressed))
