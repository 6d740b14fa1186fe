"""Word timing helpers: punctuation merged into words as openai-whisper's merge_punctuations does."""

from __future__ import annotations

from engine.timing import TimedWord, merge_punctuation


def _words(*texts: str) -> list[TimedWord]:
    return [TimedWord(t, [i], float(i), float(i) + 0.5, 0.9) for i, t in enumerate(texts)]


def _merged(*texts: str) -> list[tuple[str, list[int]]]:
    words = _words(*texts)
    merge_punctuation(words)
    return [(w.word, w.tokens) for w in words if w.word]


def test_closing_marks_in_a_row_join_the_word_before_them():
    assert _merged(" Hello", "?", "!") == [(" Hello?!", [0, 1, 2])]
    assert _merged(" Wait", ".", ".", ".", " What") == [(" Wait...", [0, 1, 2, 3]), (" What", [4])]


def test_opening_marks_in_a_row_join_the_word_after_them():
    assert _merged(" He", " said", ' "', " (", " yes") == [(" He", [0]), (" said", [1]), (' " ( yes', [2, 3, 4])]


def test_marks_on_both_sides():
    assert _merged(' "', " Hi", '"', ",", " she") == [(' " Hi",', [0, 1, 2, 3]), (" she", [4])]
