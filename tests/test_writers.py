"""Tests of engine.writers: cue readability invariants, format round-trips, atomic and contained outputs."""

from __future__ import annotations

import io
import json
import random

import pytest
import srt
import webvtt

from engine import writers
from engine.results import Segment, TranscriptInfo, Word
from engine.writers import (
    FORMATS,
    Cue,
    CueOptions,
    format_timestamp,
    make_cues,
    output_stems,
    safe_stem,
    write_json,
    write_outputs,
    write_srt,
    write_txt,
    write_vtt,
)

OPTS = CueOptions()
EPS = 1e-9


# ---------------------------------------------------------------- builders


def seg(words, sid=0, text=None, start=None, end=None, **kw) -> Segment:
    """A segment from (word, start, end) triples; words get Whisper's leading space."""
    ws = tuple(Word(s, e, " " + w, 0.9) for w, s, e in words)
    return Segment(
        id=sid,
        seek=0,
        start=ws[0].start if start is None else start,
        end=ws[-1].end if end is None else end,
        text="".join(w.word for w in ws) if text is None else text,
        tokens=(1, 2, 3),
        avg_logprob=kw.get("avg_logprob", -0.2),
        no_speech_prob=0.01,
        compression_ratio=1.5,
        temperature=0.0,
        words=ws,
    )


def bare(text, start, end, sid=0) -> Segment:
    """A segment with no word timings."""
    return Segment(sid, 0, start, end, text, (), -0.3, 0.02, 1.2, 0.0)


def spoken(text: str, t0: float, rate_cps: float, pause: float = 0.0):
    """(word, start, end) triples for `text` spoken at `rate_cps` characters per second from t0."""
    out, t = [], t0
    for w in text.split():
        d = (len(w) + 1) / rate_cps
        out.append((w, round(t, 3), round(t + d * 0.9, 3)))
        t += d + pause
    return out


LOREM = (
    "the quick brown fox jumps over the lazy dog while seven wizards quietly judge "
    "the boxing match and an extraordinarily patient audience watches from far away "
)


def info() -> TranscriptInfo:
    """A TranscriptInfo with awkward floats, to check rounding."""
    return TranscriptInfo(
        path="/media/a.wav", duration=12.345678, language="fr", language_probability=0.98765,
        model="large-v3", model_hash="abc123", backend="ct2", compute="float16",
        options={"beam_size": 5, "temperatures": (0.0, 0.2), "patience": 1.23456}, engine_version="0.1.0",
    )


# ---------------------------------------------------------------- invariant checks


def ms(x: float) -> int:
    """Seconds to whole milliseconds, as the writers round."""
    return round(x * 1000)


def vtt_ms(stamp: str) -> int:
    """Milliseconds of an `H+:MM:SS.mmm` timestamp."""
    h, m, s = stamp.split(":")
    return (int(h) * 3600 + int(m) * 60) * 1000 + round(float(s) * 1000)


def check_order(cues: list[Cue], opts: CueOptions = OPTS) -> None:
    """Hard invariants that hold for any input: whole ms, start < end, no overlap, min gap, duration."""
    for c in cues:
        assert abs(c.start * 1000 - ms(c.start)) < 1e-6 and abs(c.end * 1000 - ms(c.end)) < 1e-6
        assert 0 <= c.start < c.end
        assert c.end - c.start <= opts.max_duration + EPS
        assert c.lines and all(line and "\n" not in line for line in c.lines)
    for a, b in zip(cues, cues[1:]):
        assert ms(a.end) + ms(opts.min_gap) <= ms(b.start)
        assert vtt_ms(format_timestamp(a.end, ".")) + ms(opts.min_gap) <= vtt_ms(format_timestamp(b.start, "."))


def best_two_line_max(words: list[str]) -> int:
    """The smallest possible longest line when `words` are broken into two lines."""
    return min(max(len(" ".join(words[:k])), len(" ".join(words[k:]))) for k in range(1, len(words)))


def check_layout(cue: Cue, opts: CueOptions = OPTS) -> None:
    """Line count and width limits, one line when it fits, two lines balanced."""
    assert 1 <= len(cue.lines) <= opts.max_lines
    for line in cue.lines:
        assert len(line) <= opts.max_line_chars or " " not in line
    words = " ".join(cue.lines).split()
    if len(" ".join(words)) <= opts.max_line_chars:
        assert len(cue.lines) == 1
    if len(cue.lines) == 2 and all(len(w) <= opts.max_line_chars for w in words):
        assert max(map(len, cue.lines)) == best_two_line_max(words)


def check_readable(cues: list[Cue], segments: list[Segment], opts: CueOptions = OPTS) -> None:
    """All invariants for sane input: every word once in order, cues span only their words, CPS."""
    check_order(cues, opts)
    timed = [(w.word.strip(), w.start, w.end) for s in segments if s.text.strip() for w in s.words]
    assert [w for c in cues for w in " ".join(c.lines).split()] == [w for w, _, _ in timed]
    k = 0
    for n, c in enumerate(cues):
        check_layout(c, opts)
        mine = timed[k : k + len(" ".join(c.lines).split())]
        k += len(mine)
        chars = len(" ".join(c.lines))
        assert ms(c.start) == ms(mine[0][1])  # starts at its first word
        assert all(b[1] - a[2] <= 1.0 + EPS for a, b in zip(mine, mine[1:]))  # no long silence inside
        needed = ms(c.start) + -(-chars * 1000 // opts.max_cps)  # ceil
        assert ms(c.end) <= max(ms(mine[-1][2]), needed)  # never stretched more than CPS needs
        if n + 1 < len(cues):
            assert ms(c.end) <= ms(cues[n + 1].start)
        if len(mine) > 1:
            assert chars / (c.end - c.start) <= opts.max_cps * opts.cps_slack + 1e-6
            assert ms(mine[-1][2]) - ms(mine[0][1]) <= ms(opts.max_duration)


# ---------------------------------------------------------------- cue planning


def test_cue_options_validate():
    CueOptions(max_line_chars=32, max_lines=3, max_duration=6, max_cps=20, min_gap=0.083)
    for bad in (
        {"max_line_chars": 0}, {"max_lines": 0}, {"max_lines": 1.5}, {"max_lines": True},
        {"max_duration": 0}, {"max_duration": float("inf")}, {"max_cps": -1},
        {"max_cps": float("nan")}, {"min_gap": -0.1}, {"min_gap": float("nan")},
    ):
        with pytest.raises(ValueError):
            CueOptions(**bad)


def test_normal_speech_makes_full_balanced_cues():
    words = spoken(LOREM * 3, 0.5, 14.0)
    segments = [seg(words)]
    cues = make_cues(segments)
    check_readable(cues, segments)
    assert sum(len(c.lines) == 2 for c in cues) >= len(cues) // 2
    assert len(words) / len(cues) >= 5  # fills cues instead of flashing single words


def test_dense_fast_speech_splits_into_more_cues():
    words = spoken(LOREM * 2, 3.0, 40.0)  # far above 17 characters per second
    segments = [seg(words)]
    cues = make_cues(segments)
    check_readable(cues, segments)
    relaxed = make_cues(segments, CueOptions(max_cps=1000))
    assert len(cues) > len(relaxed)


def test_dense_burst_before_pause_extends_into_gap():
    words = [("absolutely", 1.0, 1.2), ("wonderful", 1.2, 1.4), ("news", 1.4, 1.5), ("later", 9.0, 9.4)]
    segments = [seg(words)]
    cues = make_cues(segments)
    check_readable(cues, segments)
    assert cues[0].lines == ("absolutely wonderful news",)
    assert cues[0].end == pytest.approx(1.0 + 2.5 / 1.7 * 1.0, abs=0.002)  # 25 chars at 17 cps, not more
    assert cues[1].start == 9.0


def test_single_word_may_exceed_cps():
    words = [("a", 0.0, 0.1), ("b", 0.1, 0.2), ("unbelievably", 0.2, 0.3), ("c", 0.3, 0.4)]
    segments = [seg(words), seg([("next", 0.4, 0.6)], sid=1)]  # no silence to stretch into
    cues = make_cues(segments)
    check_readable(cues, segments)
    fast = [c for c in cues if len(" ".join(c.lines)) / (c.end - c.start) > 17.0]
    assert fast and all(len(c.lines) == 1 and " " not in c.lines[0] for c in fast)


def test_long_gap_between_words_splits_cue():
    segments = [seg([("hello", 1.0, 1.5), ("there", 21.5, 22.0)])]
    cues = make_cues(segments)
    check_readable(cues, segments)
    assert [c.lines for c in cues] == [("hello",), ("there",)]
    assert cues[0].end < 2.0 and cues[1].start == 21.5


def test_gap_just_over_one_second_splits_but_short_pause_does_not():
    cues = make_cues([seg([("one", 0.0, 0.5), ("two", 1.0, 1.5), ("three", 2.6, 3.0)])])
    assert [c.lines for c in cues] == [("one two",), ("three",)]


def test_long_segment_respects_max_duration():
    segments = [seg(spoken("a b c d e f g h i j k l m n o p q r s t u v w x y z " * 2, 0.0, 2.0))]
    cues = make_cues(segments)
    check_readable(cues, segments)
    assert max(c.end - c.start for c in cues) <= 7.0


def test_three_hour_timestamps():
    t0 = 3 * 3600 + 59 * 60 + 58.5
    segments = [seg(spoken("and that concludes our very long broadcast for tonight", t0, 14.0))]
    cues = make_cues(segments)
    check_readable(cues, segments)
    buf = io.StringIO()
    write_srt(segments, buf)
    assert "03:59:58,500 --> " in buf.getvalue() and "04:00:0" in buf.getvalue()
    assert format_timestamp(123 * 3600 + 4 * 60 + 5.0061) == "123:04:05,006"
    assert format_timestamp(360000.0, ".") == "100:00:00.000"
    assert format_timestamp(-1.0) == "00:00:00,000"


def test_unicode_text():
    words = [("Ça", 0.0, 0.3), ("va", 0.3, 0.6), ("très", 0.6, 1.0), ("bien", 1.0, 1.4), ("—", 1.4, 1.5),
             ("東京", 1.5, 2.0), ("😀", 2.0, 2.4), ("naïve", 2.4, 3.0)]
    segments = [seg(words)]
    cues = make_cues(segments)
    check_readable(cues, segments)
    assert " ".join(line for c in cues for line in c.lines) == "Ça va très bien — 東京 😀 naïve"


def test_segment_without_words_is_split_proportionally():
    text = " " + LOREM.strip()
    s = bare(text, 10.0, 20.0)
    cues = make_cues([s])
    check_order(cues)
    assert " ".join(line for c in cues for line in c.lines) == LOREM.strip()
    assert cues[0].start == 10.0 and cues[-1].end <= 20.0 + EPS
    assert len(cues) > 1
    flat, total = LOREM.strip(), len(LOREM.strip())
    for c in cues:
        check_layout(c)
        at = flat.index(" ".join(c.lines))  # each cue starts where its text sits in the span
        assert c.start == pytest.approx(10.0 + 10.0 * at / total, abs=0.001)


def test_single_very_long_word_gets_its_own_line():
    long = "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft"
    segments = [seg([("the", 0.0, 0.4), (long, 0.4, 4.0), ("word", 4.0, 4.4)])]
    cues = make_cues(segments)
    check_readable(cues, segments)
    assert any(line == long for c in cues for line in c.lines)


def test_empty_segments_make_no_cue_and_no_text_line():
    segments = [bare("", 0.0, 1.0), bare("   ", 1.0, 2.0), bare(" hi there", 2.0, 3.0, sid=2)]
    cues = make_cues(segments)
    assert [c.lines for c in cues] == [("hi there",)]
    buf = io.StringIO()
    write_txt(segments, buf)
    assert buf.getvalue() == "hi there\n"


def test_cues_never_cross_segments_and_never_overlap_across_them():
    a = seg(spoken("first segment ends here", 0.0, 14.0), sid=0)
    b = seg(spoken("second one starts right away", a.end, 14.0), sid=1)
    cues = make_cues([a, b])
    check_readable(cues, [a, b])
    assert ("first segment ends here",) in [c.lines for c in cues]


def test_rounding_never_makes_cues_overlap():
    words = [("x", 1.0004, 1.0005), ("y", 2.5005, 2.5006), ("z", 4.0014, 4.0015), ("w", 5.5, 5.5004)]
    cues = make_cues([seg(words)])
    check_order(cues)
    stamps = [(format_timestamp(c.start), format_timestamp(c.end)) for c in cues]
    assert all(a[1] <= b[0] for a, b in zip(stamps, stamps[1:]))


def test_min_gap_is_kept():
    opts = CueOptions(min_gap=0.1)
    first = seg(spoken(LOREM * 2, 0.0, 16.0))
    segments = [first, seg(spoken(LOREM, first.end, 16.0), sid=1)]  # abutting segments
    cues = make_cues(segments, opts)
    check_readable(cues, segments, opts)
    assert min(b.start - a.end for a, b in zip(cues, cues[1:])) == pytest.approx(0.1)


def test_other_limits_are_honoured():
    opts = CueOptions(max_line_chars=20, max_lines=3, max_duration=4.0, max_cps=12.0)
    segments = [seg(spoken(LOREM * 2, 0.0, 11.0))]
    cues = make_cues(segments, opts)
    check_readable(cues, segments, opts)
    assert any(len(c.lines) == 3 for c in cues)


@pytest.mark.parametrize("seed", range(40))
def test_random_garbage_times_still_ordered(seed):
    rng = random.Random(seed)
    segments, t = [], 0.0
    for sid in range(rng.randint(1, 8)):
        words = []
        for _ in range(rng.randint(1, 40)):
            s = max(0.0, t + rng.uniform(-0.5, 1.5))
            e = s + rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0, 3)])
            words.append(("w" * rng.randint(1, 50), s, e))
            t = s if rng.random() < 0.2 else e
        if rng.random() < 0.1:
            words.append(("nan", float("nan"), float("inf")))
        segments.append(seg(words, sid=sid) if rng.random() < 0.8 else bare(" z z z zz", t, t + rng.uniform(-1, 3)))
    cues = make_cues(segments)
    check_order(cues)
    for c in cues:
        check_layout(c)


@pytest.mark.parametrize("seed", range(20))
def test_random_sane_speech_is_readable(seed):
    rng = random.Random(1000 + seed)
    vocab = LOREM.split() + ["I", "a", "internationalization", "überraschung", "d'accord"]
    segments, t = [], rng.uniform(0, 5)
    for sid in range(rng.randint(1, 6)):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 60)))
        words = spoken(text, t, rng.uniform(5, 45), pause=rng.choice([0.0, 0.0, 0.3, 1.2]))
        segments.append(seg(words, sid=sid))
        t = words[-1][2] + rng.choice([0.0, 0.5, 20.0])
    check_readable(make_cues(segments), segments)


# ---------------------------------------------------------------- formats


def sample_segments() -> list[Segment]:
    """A mix: normal speech, empty, characters to escape, a 20 s gap, no word times, a 3-hour stamp."""
    return [
        seg(spoken(LOREM, 0.25, 15.0), sid=0),
        bare("", 40.0, 41.0, sid=1),
        seg([("fish", 42.0, 42.5), ("&", 42.6, 42.7), ("<chips>", 42.7, 43.2), ("-->", 43.2, 43.4)], sid=2),
        seg([("hello", 50.0, 50.5), ("there", 70.5, 71.0)], sid=3),
        bare(" no word times here, just text spread over the span", 80.0, 85.0, sid=4),
        seg([("fin", 3 * 3600 + 1.0, 3 * 3600 + 1.4)], sid=5),
    ]


def test_srt_parses_back():
    segments = sample_segments()
    cues = make_cues(segments)
    buf = io.StringIO()
    write_srt(segments, buf)
    subs = list(srt.parse(buf.getvalue()))
    assert len(subs) == len(cues)
    for sub, cue in zip(subs, cues):
        assert round(sub.start.total_seconds() * 1000) == ms(cue.start)
        assert round(sub.end.total_seconds() * 1000) == ms(cue.end)
        assert sub.content.splitlines() == [line.replace("-->", "->") for line in cue.lines]
    assert [s.index for s in subs] == list(range(1, len(cues) + 1))


def test_vtt_parses_back():
    segments = sample_segments()
    cues = make_cues(segments)
    buf = io.StringIO()
    write_vtt(segments, buf)
    text = buf.getvalue()
    assert text.startswith("WEBVTT\n\n")
    assert "&amp;" in text and "&lt;chips&gt;" in text and "-->\n" not in text
    for parsed in (webvtt.from_string(text), webvtt.from_buffer(io.StringIO(text))):
        caps = list(parsed)
        assert len(caps) == len(cues)
        for cap, cue in zip(caps, cues):
            assert (vtt_ms(cap.start), vtt_ms(cap.end)) == (ms(cue.start), ms(cue.end))
            assert len(cap.lines) == len(cue.lines)


def test_txt_one_line_per_segment():
    segments = sample_segments() + [bare(" multi\nline\ttext ", 90.0, 91.0)]
    buf = io.StringIO()
    write_txt(segments, buf)
    lines = buf.getvalue().splitlines()
    assert lines == [" ".join(s.text.split()) for s in segments if s.text.strip()]
    assert lines[-1] == "multi line text"


def test_json_round_trips_with_rounded_floats():
    segments = sample_segments()
    segments[0] = seg(spoken("precise numbers", 0.123456, 10.0), avg_logprob=-0.1234567)
    buf = io.StringIO()
    write_json(segments, info(), buf)
    doc = json.loads(buf.getvalue())
    assert list(doc) == ["text", "language", "duration", "model", "model_hash", "backend", "compute",
                         "options", "engine_version", "segments"]
    assert doc["language"] == "fr" and doc["duration"] == 12.346 and doc["model_hash"] == "abc123"
    assert doc["options"] == {"beam_size": 5, "temperatures": [0.0, 0.2], "patience": 1.235}
    assert doc["text"].startswith("precise numbers fish")
    assert len(doc["segments"]) == len(segments)
    s0 = doc["segments"][0]
    assert s0["avg_logprob"] == -0.123 and s0["start"] == 0.123 and s0["words"][0]["word"] == " precise"
    assert s0["tokens"] == [1, 2, 3]


def test_json_without_info_and_with_nan():
    s = Segment(0, 0, 0.0, 1.0, " x", (), float("nan"), 0.0, float("inf"), 0.0)
    buf = io.StringIO()
    write_json([s], None, buf)
    doc = json.loads(buf.getvalue())
    assert doc["language"] is None and doc["model"] is None and doc["text"] == "x"
    assert doc["segments"][0]["avg_logprob"] is None


# ---------------------------------------------------------------- files


def test_write_outputs_writes_every_format(tmp_path):
    out = tmp_path / "deep" / "er"
    paths = write_outputs(sample_segments(), info(), out, "episode 1")
    assert [p.name for p in paths] == [f"episode 1.{f}" for f in FORMATS]
    assert all(p.is_file() and p.parent == out for p in paths)
    assert sorted(x.name for x in out.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    assert json.loads((out / "episode 1.json").read_text(encoding="utf-8"))["language"] == "fr"
    assert len(list(srt.parse((out / "episode 1.srt").read_text(encoding="utf-8")))) == len(
        make_cues(sample_segments()))
    assert len(webvtt.read(str(out / "episode 1.vtt")).captions) == len(make_cues(sample_segments()))


def test_write_outputs_subset_and_unknown_format(tmp_path):
    assert [p.name for p in write_outputs(sample_segments(), None, tmp_path, "a", ("srt",))] == ["a.srt"]
    with pytest.raises(ValueError):
        write_outputs(sample_segments(), None, tmp_path, "b", ("srt", "docx"))
    assert not (tmp_path / "b.srt").exists()


def test_crash_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    (tmp_path / "a.srt").write_text("old\n", encoding="utf-8")

    def boom(segments, fp, opts=None):
        fp.write("1\n00:00:00,000 --> ")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writers, "write_srt", boom)
    with pytest.raises(RuntimeError):
        write_outputs(sample_segments(), None, tmp_path, "a", ("txt", "srt"))
    assert (tmp_path / "a.srt").read_text(encoding="utf-8") == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.srt", "a.txt"]


HOSTILE = [
    "../../etc/passwd", "/abs/path", "a\nb", "-rf", "..", ".", "", "   ", "..\\..\\win", "a/../../b",
    "\x00evil", ".hidden", "--help", "tab\there\r", "\u202etxt.exe", "x" * 500, "日本語の長いファイル名" * 40,
    "😀" * 120, "name\udcff", "-.-.-", "\u2028",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_stem_on_hostile_names(name, tmp_path):
    stem = safe_stem(name)
    assert stem and stem == stem.strip()
    assert not any(c in stem for c in "/\\\x00\n\r\t\u2028\u202e")
    assert not stem.startswith((".", "-"))
    assert len(stem.encode("utf-8")) <= 200
    out = tmp_path / "out"
    for p in write_outputs([bare(" hi", 0.0, 1.0)], None, out, name):
        assert p.resolve().parent == out.resolve()
    assert not any(x for x in tmp_path.iterdir() if x.name != "out")


def test_safe_stem_examples():
    assert safe_stem("../../etc/passwd") == "_.._etc_passwd"
    assert safe_stem("..") == safe_stem("") == safe_stem("\n") == "untitled"
    assert safe_stem("-rf") == "rf"
    assert safe_stem("a\nb") == "ab"
    assert safe_stem("Interview – Zoë, part 2") == "Interview – Zoë, part 2"
    long = safe_stem("é" * 300)
    assert long == "é" * 100


def test_output_stems_are_distinct_and_safe():
    """Files whose outputs share a folder never share a stem: one name rule for the catalog and `transcribe`."""
    paths = ["/a/talk.mp3", "/a/talk.wav", "/b/talk.wav", "/a/notes.mp3", "/c/-rf.mp3", "/c/rf.mp3", "/c/a\nb.mp3",
             "/c/ab.mp3", "/d/" + "é" * 150 + "1.mp3", "/d/" + "é" * 150 + "2.mp3"]
    stems = output_stems(paths)
    assert stems["/a/notes.mp3"] == "notes" and stems["/c/rf.mp3"] == "rf" and stems["/c/ab.mp3"] == "ab"
    assert [stems[p] for p in paths[:3]] == ["talk.mp3", "talk.wav", "talk.wav-2"]
    assert len({safe_stem(s) for s in stems.values()}) == len(paths)
    assert all(safe_stem(s) == s for s in stems.values())
    assert output_stems(["/a/talk.mp3", "/b/notes.wav"]) == {"/a/talk.mp3": "talk", "/b/notes.wav": "notes"}


def test_slightly_fast_speech_is_not_cut_into_one_word_flashes():
    """At 19 characters per second, a 40-character sentence stays one cue instead of a flicker."""
    segment = seg(spoken("He hoped there would be stew for dinner,", 0.0, 19.0))
    cues = make_cues([segment])
    check_readable(cues, [segment])
    assert len(cues) == 1
    assert all(c.end - c.start >= 0.5 for c in cues)
