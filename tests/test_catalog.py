"""Catalog helpers on real databases: SQLite files under tmp_path and a throwaway PostgreSQL database.

The PostgreSQL fixtures live here (test_search and test_migrations import them): one database is
created per test session via psycopg and dropped at its end; each test starts from an empty schema.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid

import pytest
import sqlalchemy as sa

from engine.results import Segment, Word
from runner.catalog import models as m
from runner.config import sqlite_url_for
from runner.catalog.db import PROMPT_TOKENS, Catalog
from runner.errors import CatalogError
from runner.catalog.status import Status

PG_ADMIN_DSNS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


class _PgDatabase:
    """One uniquely named PostgreSQL database per test session, made on first use."""

    def __init__(self):
        self.admin_dsn: str | None = None
        self.name: str | None = None
        self.skip_reason: str | None = None

    def _connect_admin(self):
        """A psycopg autocommit connection to the admin database, trying each known user."""
        import psycopg

        dsns = [os.environ["SCRIPTORIUM_TEST_PG_ADMIN"]] if os.environ.get("SCRIPTORIUM_TEST_PG_ADMIN") else []
        errors = []
        for dsn in (*dsns, *PG_ADMIN_DSNS):
            try:
                conn = psycopg.connect(dsn, connect_timeout=3, autocommit=True)
            except psycopg.Error as exc:
                errors.append(f"{dsn}: {' '.join(str(exc).split())}")
                continue
            self.admin_dsn = dsn
            return conn
        self.skip_reason = "PostgreSQL server unreachable: " + "; ".join(errors)
        return None

    def dsn(self) -> str:
        """The psycopg DSN of the session database, creating it (or skipping the test) first."""
        if self.name is None and self.skip_reason is None:
            conn = self._connect_admin()
            if conn is not None:
                with conn:
                    name = f"scriptorium_test_{uuid.uuid4().hex[:12]}"
                    conn.execute(f'CREATE DATABASE "{name}"')
                self.name = name
        if self.skip_reason:
            pytest.skip(self.skip_reason)
        return self.admin_dsn.rsplit("/", 1)[0] + f"/{self.name}"

    def drop(self) -> None:
        """Drop the session database (forcing out any connection left open)."""
        if self.name is None:
            return
        conn = self._connect_admin()
        if conn is not None:
            with conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.name = None


_PG = _PgDatabase()


def reset_pg_schema(dsn: str) -> None:
    """Make the PostgreSQL database empty again: a fresh public schema."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(scope="session")
def pg_dsn():
    """psycopg DSN of this session's throwaway PostgreSQL database (skips if the server is unreachable)."""
    yield _PG.dsn()
    _PG.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request, tmp_path) -> str:
    """SQLAlchemy URL of an empty database: a new SQLite file, or the PostgreSQL one with a fresh schema."""
    if request.param == "sqlite":
        return sqlite_url_for(tmp_path / "data")
    dsn = request.getfixturevalue("pg_dsn")
    reset_pg_schema(dsn)
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def catalog(empty_db_url):
    """An open, migrated catalog on each backend."""
    cat = Catalog.open(empty_db_url)
    yield cat
    cat.close()


def add_media(cat: Catalog, path: str = "/archive/tape.wav", **kw) -> int:
    """Insert a media row and return its id."""
    with cat.write() as session:
        media = m.MediaFile(path=path, scan_root=os.path.dirname(path), **kw)
        session.add(media)
        session.flush()
        return media.id


def make_segment(text: str, start: float, tokens=(1, 2, 3), temperature: float = 0.0, seek: int = 0) -> Segment:
    """An engine Segment whose words are its text's words, one second apart."""
    words = tuple(Word(start=start + i, end=start + i + 0.8, word=" " + w, probability=0.9)
                  for i, w in enumerate(text.split()))
    return Segment(id=0, seek=seek, start=start, end=start + max(len(words), 1), text=" " + text,
                   tokens=tuple(tokens), avg_logprob=-0.2, no_speech_prob=0.01, compression_ratio=1.3,
                   temperature=temperature, words=words)  # fmt: skip


OPTIONS = {"beam_size": 5, "temperatures": [0.0, 0.2], "condition_on_previous_text": True}
MODEL = dict(model_name="small", model_hash="sha-small", backend="ctranslate2", compute="cpu-int8")


def start(cat: Catalog, media_id: int, options=OPTIONS, **overrides):
    """start_transcript with the test model, overridable per field."""
    kw = {**MODEL, **overrides}
    return cat.start_transcript(media_id, options=options, engine_version="0.1.0", **kw)


def count(cat: Catalog, model, **where) -> int:
    """How many rows of a model match the equality filters."""
    with cat.read() as session:
        stmt = sa.select(sa.func.count()).select_from(model).filter_by(**where)
        return session.scalar(stmt)


def test_sqlite_url_and_pragmas(tmp_path):
    url = sqlite_url_for(tmp_path / "nested" / "data")
    assert url == f"sqlite:///{tmp_path}/nested/data/catalog.db"
    with Catalog.open(url) as cat:
        assert (tmp_path / "nested" / "data" / "catalog.db").is_file()
        with cat.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_in_memory_sqlite_is_migrated():
    with Catalog.open("sqlite://") as cat:
        media_id = add_media(cat)
        assert start(cat, media_id)[1:4] == (0, 0, [])


def test_status_is_stored_as_plain_string(catalog):
    media_id = add_media(catalog)
    catalog.set_media_status(media_id, Status.queued)
    with catalog.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM media_files")).scalar() == "queued"
    catalog.set_media_status(media_id, "skipped", error="too short")
    with catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
        assert media.status is Status.skipped and media.error == "too short"
        assert media.created_at.tzinfo is not None


def test_new_transcript_starts_at_zero(catalog):
    media_id = add_media(catalog)
    transcript_id, next_window, next_seek, prompt, reset, language, _ = start(catalog, media_id)
    assert (next_window, next_seek, prompt, reset, language) == (0, 0, [], False, None)
    assert count(catalog, m.Transcript, id=transcript_id, status=Status.running) == 1


def test_add_window_replaces_and_never_duplicates(catalog):
    media_id = add_media(catalog)
    tid = start(catalog, media_id)[0]
    catalog.add_window(tid, 0, 480000, [make_segment("one two", 0.0), make_segment("three", 5.0)])
    catalog.add_window(tid, 1, 960000, [make_segment("four", 30.0)])
    catalog.add_window(tid, 1, 950000, [make_segment("four again", 30.0), make_segment("five", 40.0)])
    with catalog.read() as session:
        rows = session.execute(
            sa.select(m.Segment.idx, m.Segment.window, m.Segment.text).order_by(m.Segment.idx)
        ).all()
    assert [tuple(r) for r in rows] == [(0, 0, " one two"), (1, 0, " three"), (2, 1, " four again"), (3, 1, " five")]
    assert count(catalog, m.Word) == 2 + 1 + 2 + 1
    # re-running window 0 drops everything from window 0 on (later windows depend on its prompt)
    catalog.add_window(tid, 0, 470000, [make_segment("uno", 0.0)])
    assert count(catalog, m.Segment) == 1 and count(catalog, m.Word) == 1
    assert start(catalog, media_id)[:3] == (tid, 1, 470000)


def test_resume_returns_next_window_seek_and_last_tokens(catalog):
    media_id = add_media(catalog)
    tid = start(catalog, media_id)[0]
    all_tokens = []
    for window in range(3):
        segs = [make_segment(f"w{window} s{i}", 30.0 * window + i, tokens=range(1000 * window + 100 * i,
                                                                             1000 * window + 100 * i + 90))
                for i in range(2)]  # fmt: skip
        all_tokens += [t for s in segs for t in s.tokens]
        catalog.add_window(tid, window, 480000 * (window + 1), segs)
    resumed = start(catalog, media_id, options=dict(OPTIONS))
    assert resumed[:3] == (tid, 3, 1440000)
    assert resumed[3] == all_tokens[-PROMPT_TOKENS:] and len(resumed[3]) == PROMPT_TOKENS
    assert count(catalog, m.Transcript) == 1


def test_parts_resume_each_from_its_own_point(catalog):
    """A file decoded in parts: re-running a part's window drops only that part's later windows, each
    part resumes from its own seek with its own prompt, done parts are skipped, and the finished
    transcript's segments come back in time order though the parts were stored out of order."""
    from engine.constants import WINDOW_STRIDE

    media_id = add_media(catalog)
    tid = start(catalog, media_id)[0]
    catalog.plan_parts(tid, [(0, 1_000_000), (1_000_000, 2_000_000), (2_000_000, None)])
    with pytest.raises(CatalogError, match="already has its parts"):
        catalog.plan_parts(tid, [(0, None)])
    s1, s2 = WINDOW_STRIDE, 2 * WINDOW_STRIDE
    catalog.add_window(tid, s2, 2_480_000, [make_segment("c0", 125.0, tokens=(7, 8))], part=2)
    catalog.add_window(tid, s1, 1_480_000, [make_segment("b0", 62.5, tokens=(4, 5))], part=1)
    catalog.add_window(tid, 0, 480_000, [make_segment("a0", 0.0, tokens=(1, 2))], part=0)
    catalog.add_window(tid, s1 + 1, 1_960_000, [make_segment("b1", 92.5, tokens=(6,))], part=1)
    catalog.add_window(tid, s2 + 1, 2_960_000, [make_segment("c1", 155.0, tokens=(9,))], part=2)
    catalog.add_window(tid, s1 + 1, 1_950_000, [make_segment("b1 again", 92.5, tokens=(66,))], part=1)
    catalog.part_done(tid, 0)
    with pytest.raises(CatalogError, match="no part 3"):
        catalog.add_window(tid, 3 * WINDOW_STRIDE, 0, [], part=3)
    parts = catalog.resume_parts(tid)
    assert [(p.part, p.start, p.stop, p.next_window, p.next_seek, p.prompt) for p in parts] == [
        (1, 1_000_000, 2_000_000, s1 + 2, 1_950_000, [4, 5, 66]),
        (2, 2_000_000, None, s2 + 2, 2_960_000, [7, 8, 9]),
    ]
    assert catalog.resume_parts(start(catalog, add_media(catalog, path="/media/other.wav"))[0]) is None
    catalog.finish_transcript(tid, "en", 1.0, {}, 1.0, 180.0)
    segments = catalog.transcript_segments(media_id)
    assert [(s.id, s.text.strip()) for s in segments] == [(0, "a0"), (1, "b0"), (2, "b1 again"), (3, "c0"), (4, "c1")]


def test_resume_only_with_same_model_and_options(catalog):
    media_id = add_media(catalog)
    tid = start(catalog, media_id)[0]
    catalog.add_window(tid, 0, 480000, [make_segment("a", 0.0)])
    other_model = start(catalog, media_id, model_hash="sha-medium")
    other_options = start(catalog, media_id, options={**OPTIONS, "beam_size": 1})
    assert len({tid, other_model[0], other_options[0]}) == 3
    assert other_model[1:4] == (0, 0, []) and other_options[1:4] == (0, 0, [])
    # tuples and lists are the same JSON: still a resume
    assert start(catalog, media_id, options={**OPTIONS, "temperatures": (0.0, 0.2)})[0] == tid


def test_prompt_follows_whisper_reset_rules(catalog):
    media_id = add_media(catalog)
    tid = start(catalog, media_id)[0]
    catalog.add_window(tid, 0, 480000, [make_segment("a", 0.0, tokens=(1, 2))])
    catalog.add_window(tid, 1, 960000, [make_segment("b", 30.0, tokens=(3, 4), temperature=0.8)])
    catalog.add_window(tid, 2, 1440000, [make_segment("c", 60.0, tokens=(5, 6))])
    assert start(catalog, media_id)[3] == [5, 6]  # window 1 ran hot: the prompt was reset after it
    no_prompt = {**OPTIONS, "condition_on_previous_text": False}
    tid2 = start(catalog, media_id, options=no_prompt)[0]
    catalog.add_window(tid2, 0, 480000, [make_segment("a", 0.0, tokens=(1, 2))])
    assert start(catalog, media_id, options=no_prompt)[3] == []


def test_resume_takes_the_engines_stored_prompt_state_and_language(catalog):
    """The engine's own state at the resume point comes back exactly (223 tokens, the reset flag),
    not a re-derivation from the segments (224 tokens, no initial prompt: issue 20); and the
    language detected once for the file comes back with it."""
    media_id = add_media(catalog)
    tid = start(catalog, media_id)[0]
    catalog.set_language(tid, "de", 0.93)
    long = tuple(range(1000, 1300))  # the segment holds 300 tokens; the engine kept its last 223
    catalog.add_window(tid, 0, 480000, [make_segment("a", 0.0, tokens=long)], prompt=(long[-223:], True))
    resumed = start(catalog, media_id)
    assert resumed.transcript_id == tid and resumed.prompt == list(long[-223:]) and resumed.prompt_reset
    assert (resumed.language, resumed.language_probability) == ("de", 0.93)


def test_options_stored_before_a_new_option_still_resume(catalog):
    from engine.options import TranscribeOptions

    media_id = add_media(catalog)
    full = TranscribeOptions().to_dict()
    tid = start(catalog, media_id, options={k: v for k, v in full.items() if k != "hotwords"})[0]
    assert start(catalog, media_id, options=full)[0] == tid


def test_finish_keeps_only_the_latest_transcript(catalog):
    media_id = add_media(catalog)
    first = start(catalog, media_id)[0]
    catalog.add_window(first, 0, 480000, [make_segment("old words", 0.0)])
    catalog.finish_transcript(first, "en", 0.9, {"encode": 1.0}, 5.0, 10.0)
    second = start(catalog, media_id, model_hash="sha-medium", model_name="medium")[0]
    assert second != first
    segs = [make_segment("new words here", 0.0, seek=0), make_segment("and more", 4.0, seek=0)]
    catalog.add_window(second, 0, 480000, segs)
    catalog.finish_transcript(second, "de", 0.75, {"encode": 2.0, "generate": 3.0}, 6.0, 12.0)
    assert count(catalog, m.Transcript) == 1 and count(catalog, m.Segment) == 2 and count(catalog, m.Word) == 5
    with catalog.read() as session:
        t = session.get(m.Transcript, second)
        media = session.get(m.MediaFile, media_id)
    assert t.status is Status.done and t.rtf == pytest.approx(0.5) and t.timings["generate"] == 3.0
    assert t.finished_at.tzinfo is not None
    assert media.status is Status.done and media.duration == 10.0  # filled once, by the first decode
    expected = [dataclasses_replace(s, id=i) for i, s in enumerate(segs)]
    assert catalog.transcript_segments(media_id) == expected
    info = catalog.transcript_info(media_id)
    assert (info.path, info.language, info.model, info.model_hash) == ("/archive/tape.wav", "de", "medium", "sha-medium")
    assert info.options == OPTIONS and info.duration == 10.0


def dataclasses_replace(seg: Segment, **kw) -> Segment:
    """dataclasses.replace, named for readability in assertions."""
    import dataclasses

    return dataclasses.replace(seg, **kw)


def test_finished_transcript_refuses_more_windows(catalog):
    media_id = add_media(catalog)
    tid = start(catalog, media_id)[0]
    catalog.finish_transcript(tid, "en", 1.0, {}, 1.0, 0.0)
    with pytest.raises(CatalogError, match="not running"):
        catalog.add_window(tid, 0, 0, [make_segment("late", 0.0)])
    assert start(catalog, media_id)[0] != tid  # a done transcript is never resumed
    with pytest.raises(CatalogError):
        catalog.add_window(10**6, 0, 0, [])
    with pytest.raises(CatalogError):
        start(catalog, 10**6)
    assert catalog.transcript_segments(10**6) == [] and catalog.transcript_info(10**6) is None


def test_record_failure_retries_then_fails(catalog):
    media_id = add_media(catalog)
    assert catalog.record_failure(media_id, "disk full", permanent=False, max_attempts=3) is Status.queued
    assert catalog.record_failure(media_id, "timeout", permanent=False, max_attempts=3) is Status.queued
    assert catalog.record_failure(media_id, "timeout again", permanent=False, max_attempts=3) is Status.failed
    with catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
    assert media.attempts == 3 and media.error == "timeout again" and media.status is Status.failed
    assert [e["reason"] for e in media.errors_log] == ["disk full", "timeout", "timeout again"]
    assert [e["attempt"] for e in media.errors_log] == [1, 2, 3]
    other = add_media(catalog, "/archive/corrupt.mp3")
    assert catalog.record_failure(other, "no audio stream", permanent=True, max_attempts=3) is Status.failed


def test_worker_heartbeats(catalog):
    catalog.heartbeat_worker("gpu-0", "cuda", "host-a", 100)
    catalog.heartbeat_worker("cpu-0", "cpu", "host-a", 101)
    with catalog.write() as session:
        session.get(m.WorkerInfo, "cpu-0").last_seen = m.utcnow() - dt.timedelta(minutes=10)
    first_start = [w.started_at for w in catalog.alive_workers(60)]
    catalog.heartbeat_worker("gpu-0", "cuda", "host-a", 100)
    alive = catalog.alive_workers(60)
    assert [w.name for w in alive] == ["gpu-0"] and [w.started_at for w in alive] == first_start
    assert alive[0].last_seen.tzinfo is not None
    catalog.heartbeat_worker("gpu-0", "cuda", "host-a", 200)  # restarted: new pid
    assert catalog.alive_workers(60)[0].started_at > first_start[0]
    assert [w.name for w in catalog.alive_workers(3600)] == ["cpu-0", "gpu-0"]


def test_concurrent_sqlite_writers_wait_instead_of_failing(tmp_path):
    url = sqlite_url_for(tmp_path)
    with Catalog.open(url) as cat:
        media_ids = [add_media(cat, f"/archive/{i}.wav") for i in range(4)]
    errors = []

    def worker(media_id: int) -> None:
        try:
            with Catalog.open(url) as own:
                tid = start(own, media_id)[0]
                for window in range(15):
                    own.add_window(tid, window, window * 480000, [make_segment(f"w{window}", window * 30.0)])
                    start(own, media_id)
                own.finish_transcript(tid, "en", 1.0, {}, 1.0, 2.0)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(mid,)) for mid in media_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Catalog.open(url) as cat:
        assert count(cat, m.Segment) == 60 and count(cat, m.MediaFile, status=Status.done) == 4
