"""Full-text search on both backends: times, marking, filters, and hostile query text."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from runner.catalog import models as m
from runner.errors import SearchError
from runner.catalog.search import Hit, folder_pattern, plain_fts5_query, search
from tests.test_catalog import add_media, catalog, count, empty_db_url, make_segment, pg_dsn, start  # noqa: F401

HOSTILE = [
    "'; DROP TABLE segments; --",
    '" OR 1=1 --',
    "Robert'); DROP TABLE media_files;--",
    "x' UNION SELECT path FROM media_files --",
    "\\",
    "%_%",
]


def transcribe(cat, path: str, windows: list[list[tuple[str, float]]], model: str = "small") -> int:
    """A media file with a finished transcript made of (text, start) segments per window."""
    media_id = add_media(cat, path)
    tid = start(cat, media_id, model_name=model, model_hash=f"sha-{model}")[0]
    for window, segs in enumerate(windows):
        cat.add_window(tid, window, (window + 1) * 480000, [make_segment(t, s) for t, s in segs])
    cat.finish_transcript(tid, "en", 0.99, {}, 1.0, 60.0)
    return media_id


@pytest.fixture
def archive(catalog):
    """Three finished files in two folders and two models, plus one unfinished transcript."""
    transcribe(catalog, "/archive/a/interview.wav", [[("hello and welcome", 0.0), ("the harbour at dawn", 4.0)],
                                                     [("fishing boats return", 31.5)]])  # fmt: skip
    transcribe(catalog, "/archive/a_b/lecture.mp3", [[("welcome to the lecture", 2.0)]], model="medium")
    transcribe(catalog, "/archive/b/news.mp4", [[("harbour strike continues", 10.0)]])
    running = add_media(catalog, "/archive/b/unfinished.wav")
    tid = start(catalog, running)[0]
    catalog.add_window(tid, 0, 480000, [make_segment("harbour secret", 0.0)])
    return catalog


def test_finds_words_with_times_and_marks(archive):
    hits = search(archive, "boats")
    assert hits == [Hit(path="/archive/a/interview.wav", start=31.5, end=34.5, text=" fishing boats return",
                        marked=" fishing [boats] return", media_id=hits[0].media_id,
                        segment_id=hits[0].segment_id, model_name="small")]  # fmt: skip
    with archive.read() as session:
        seg = session.get(m.Segment, hits[0].segment_id)
        assert seg.text == hits[0].text and seg.transcript.media_id == hits[0].media_id


def test_only_finished_transcripts_are_searched(archive):
    hits = search(archive, "harbour")
    assert sorted(h.path for h in hits) == ["/archive/a/interview.wav", "/archive/b/news.mp4"]
    assert all("[harbour]" in h.marked for h in hits)
    assert search(archive, "secret") == []


def test_all_words_must_match_in_plain_mode(archive):
    assert [h.text for h in search(archive, "welcome lecture")] == [" welcome to the lecture"]
    assert search(archive, "welcome boats") == []
    assert len(search(archive, "WELCOME")) == 2


@pytest.mark.parametrize("query", ['"', "*", "AND(", "-", ":", "hello*", '"hello', "hello:", "-hello",
                                   "NEAR(hello", "hello AND(", "^hello", "(", ")", "+", "{hello}", "hello OR"])
def test_plain_mode_treats_syntax_characters_as_text(archive, query):
    hits = search(archive, query)  # never a SearchError: every term is plain text, ANDed
    assert all(isinstance(h, Hit) for h in hits)
    if query in ("hello OR", "NEAR(hello"):  # "and", "or", "near" are words to find too
        assert hits == []
    if query in ("hello*", '"hello', "hello:", "-hello", "^hello", "{hello}", "hello AND("):  # "hello and welcome"
        assert [h.path for h in hits] == ["/archive/a/interview.wav"]


def test_plain_query_quotes_every_term():
    assert plain_fts5_query('say "hi" AND( - :') == '"say" """hi""" "AND("'
    assert plain_fts5_query("  ") == ""


def test_raw_mode_allows_syntax(archive):
    hits = search(archive, "boats OR lecture", raw=True)
    assert sorted(h.path for h in hits) == ["/archive/a/interview.wav", "/archive/a_b/lecture.mp3"]


def test_raw_mode_syntax_error_is_a_search_error(archive):
    if archive.dialect == "sqlite":
        for bad in ('"unbalanced', "hello AND (", "nosuchcolumn: word", "NEAR(", "*"):
            with pytest.raises(SearchError) as info:
                search(archive, bad, raw=True)
            assert info.value.query == bad and info.value.reason
    else:  # websearch_to_tsquery accepts any text: nothing to raise, nothing to crash
        assert search(archive, '"unbalanced OR -', raw=True) == []


def test_filters_by_folder_and_model(archive):
    assert [h.path for h in search(archive, "welcome", folder="/archive/a")] == ["/archive/a/interview.wav"]
    assert [h.path for h in search(archive, "welcome", folder="/archive/a_b/")] == ["/archive/a_b/lecture.mp3"]
    assert search(archive, "welcome", folder="/archive/b") == []
    assert [h.model_name for h in search(archive, "welcome", model="medium")] == ["medium"]
    assert search(archive, "boats", model="medium") == []
    assert [h.path for h in search(archive, "harbour", folder="/archive", model="small", limit=1)] in (
        ["/archive/a/interview.wav"], ["/archive/b/news.mp4"])


def test_folder_pattern_escapes_like_wildcards():
    assert folder_pattern("/data/a_b%c/") == "/data/a\\_b\\%c/%"


@pytest.mark.parametrize("query", HOSTILE)
def test_injection_strings_are_harmless(archive, query):
    before = count(archive, m.Segment), count(archive, m.MediaFile)
    assert search(archive, query) == []
    assert search(archive, "x", folder=query, model=query) == []
    try:
        search(archive, query, raw=True)
    except SearchError:
        pass
    assert (count(archive, m.Segment), count(archive, m.MediaFile)) == before
    assert len(search(archive, "harbour")) == 2


def test_index_follows_replaced_windows_and_transcripts(archive):
    media_id = add_media(archive, "/archive/c/redo.wav")
    tid = start(archive, media_id)[0]
    archive.add_window(tid, 0, 480000, [make_segment("draft zebra", 0.0)])
    archive.add_window(tid, 0, 480000, [make_segment("final giraffe", 0.0)])
    archive.finish_transcript(tid, "en", 1.0, {}, 1.0, 30.0)
    assert search(archive, "zebra") == [] and len(search(archive, "giraffe")) == 1
    newer = start(archive, media_id, model_hash="sha-other")[0]
    archive.add_window(newer, 0, 480000, [make_segment("okapi", 0.0)])
    archive.finish_transcript(newer, "en", 1.0, {}, 1.0, 30.0)  # deletes the older transcript
    assert search(archive, "giraffe") == [] and len(search(archive, "okapi")) == 1
    with archive.write() as session:
        session.execute(sa.update(m.Segment).where(m.Segment.text == " okapi").values(text=" tapir"))
    assert search(archive, "okapi") == [] and len(search(archive, "tapir")) == 1
    if archive.dialect == "sqlite":
        with archive.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO segments_fts(segments_fts, rank) VALUES ('integrity-check', 1)")


def test_empty_query_and_limit(archive):
    assert search(archive, "   ") == [] and search(archive, "harbour", limit=0) == []
    assert len(search(archive, "harbour", limit=1)) == 1


@pytest.mark.parametrize("empty_db_url", ["postgresql"], indirect=True)
def test_postgres_uses_the_gin_index(archive):
    with archive.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = conn.exec_driver_sql(
            "EXPLAIN SELECT id FROM segments WHERE to_tsvector('simple', text) @@ plainto_tsquery('simple', 'x')"
        ).scalars().all()
    assert any("ix_segments_text_tsv" in line for line in plan)
