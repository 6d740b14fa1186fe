"""The catalog database: engine set-up, Alembic migrations, and the worker's transactional helpers.

Every helper is one transaction. On SQLite, writes begin IMMEDIATE so that concurrent workers
wait for the write lock (busy_timeout) instead of failing when a read turns into a write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import delete, event, func, select
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, selectinload, sessionmaker

import migrations
from engine.constants import WINDOW_STRIDE
from engine.results import Segment, TranscriptInfo, Word, in_order
from runner.catalog import models as m
from runner.errors import CatalogError, Superseded
from runner.catalog.status import Status

# __path__, not __file__: an editable install made before migrations/ had an __init__ sees a namespace.
MIGRATIONS_DIR = next(Path(p).resolve() for p in migrations.__path__ if (Path(p) / "env.py").is_file())
PROMPT_TOKENS = 224  # at most this many previous tokens are fed back as the decoder prompt
SQLITE_PRAGMAS = ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL")
PG_MIGRATION_LOCK = 0x5C121B7  # advisory lock key: one process migrates at a time
RUNAWAY_FACTOR = 3  # failures that use no attempt still stop a file after 3 x max_attempts tries in all


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    """Set WAL, a 30 s busy timeout and foreign keys; take over BEGIN from the driver."""
    dbapi_conn.isolation_level = None  # the driver's implicit BEGIN would skip DDL and SELECTs
    cursor = dbapi_conn.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    """Begin explicitly: IMMEDIATE for writers (see Catalog.write), DEFERRED for readers."""
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _make_parent_dir(url: URL) -> None:
    """Create the folder of a file-backed SQLite database."""
    db = url.database or ""
    if db and db != ":memory:" and not db.startswith("file:") and url.query.get("mode") != "memory":
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str | URL) -> Engine:
    """An Engine for the catalog; SQLite gets its pragmas and explicit transactions."""
    url = make_url(url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    _make_parent_dir(url)
    engine = sa.create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def alembic_config(connection: Connection | None = None) -> Config:
    """A programmatic Alembic Config for the migrations package, running on `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _jsonable(value) -> object:
    """The value as it reads back from a JSON column (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value))


def _as_dict(timings) -> dict:
    """Timings (a stage -> seconds mapping) as a plain dict for the JSON column."""
    return dict(timings or {})


def _segment_row(transcript_id: int, window: int, idx: int, seg: Segment) -> m.Segment:
    """A catalog row (with its words) for one engine segment."""
    words = [
        m.Word(idx=i, start=w.start, end=w.end, word=w.word, probability=w.probability)
        for i, w in enumerate(seg.words)
    ]
    return m.Segment(
        transcript_id=transcript_id, window=window, idx=idx, seek=seg.seek, start=seg.start, end=seg.end, text=seg.text,
        tokens=[int(t) for t in seg.tokens], avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob,
        compression_ratio=seg.compression_ratio, temperature=seg.temperature, words=words,
    )  # fmt: skip


def _engine_segment(row: m.Segment, words: bool = True) -> Segment:
    """The engine's frozen Segment rebuilt from a catalog row (its id the row's idx), with or without its words."""
    return Segment(
        id=row.idx, seek=row.seek, start=row.start, end=row.end, text=row.text, tokens=tuple(row.tokens),
        avg_logprob=row.avg_logprob, no_speech_prob=row.no_speech_prob, compression_ratio=row.compression_ratio,
        temperature=row.temperature, window=row.window,
        words=tuple(Word(start=w.start, end=w.end, word=w.word, probability=w.probability) for w in row.words)
        if words else (),
    )  # fmt: skip


def _of_part(part: int | None) -> tuple:
    """Conditions selecting the segments of one part's windows (none for a transcript in one chain)."""
    if part is None:
        return ()
    return (m.Segment.window >= part * WINDOW_STRIDE, m.Segment.window < (part + 1) * WINDOW_STRIDE)


@dataclasses.dataclass(frozen=True)
class PartResume:
    """Where one unfinished part of a file decoded in parts goes on, and its prompt state."""

    part: int
    start: int
    stop: int | None
    next_window: int
    next_seek: int
    prompt: list[int]
    prompt_reset: bool = False


class Started(NamedTuple):
    """Where a transcript (new or resumed) goes on: its resume point, the engine's prompt state there
    (previous-text tokens, and whether the prompt was reset so the initial prompt no longer applies),
    and the file's language once detected."""

    transcript_id: int
    next_window: int
    next_seek: int
    prompt: list[int]
    prompt_reset: bool = False
    language: str | None = None
    language_probability: float | None = None


def _normal_options(options: dict | None) -> dict:
    """Stored options as the current TranscribeOptions writes them (fields added since get their
    defaults), so a transcript started before an option was added still resumes."""
    from engine.options import TranscribeOptions

    try:
        return _jsonable(TranscribeOptions.from_dict(options or {}).to_dict())
    except (TypeError, ValueError):
        return _jsonable(options)


class Catalog:
    """The catalog database: an Engine, its sessions, and the helpers the worker calls."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.url = engine.url
        writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._writer = sessionmaker(writer, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> Catalog:
        """Connect to `url` and, unless told not to, bring its schema to the latest revision."""
        cat = cls(make_engine(url))
        if migrate:
            cat.migrate()
        return cat

    @property
    def dialect(self) -> str:
        """The database kind: 'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def identity(self) -> str:
        """What this catalog is, the same from every host that opens it (for the queue's owner check).

        PostgreSQL: the cluster's system identifier and the database name (so two URLs of one
        database agree); SQLite: this host and the file's real path; else the URL without password.
        """
        if self.dialect == "postgresql":
            try:
                with self.engine.connect() as conn:
                    sysid, name = conn.execute(sa.text(
                        "SELECT system_identifier, current_database() FROM pg_control_system()")).one()
                return f"postgresql:{sysid}:{name}"
            except sa.exc.DBAPIError:  # pg_control_system() revoked: fall back on host, port and name
                url = self.url
                return f"postgresql:{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
        if self.dialect == "sqlite":
            import socket

            db = self.url.database or ""
            if not db or db == ":memory:" or db.startswith("file:") or self.url.query.get("mode") == "memory":
                return f"sqlite:memory:{socket.gethostname()}:{id(self)}"
            return f"sqlite:{socket.gethostname()}:{Path(db).expanduser().resolve()}"
        return self.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction, committed on success, rolled back on error."""
        with self._writer.begin() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; nothing it does is committed."""
        with self._reader() as session:
            yield session

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to `revision` in one transaction (serialised across processes)."""
        with self.engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
            command.upgrade(alembic_config(conn), revision)

    def check(self) -> None:
        """Raise CatalogError if the schema is not at head or differs from the models."""
        try:
            with self.engine.connect() as conn:
                command.check(alembic_config(conn))
        except CommandError as exc:  # AutogenerateDiffsDetected is a CommandError too
            raise CatalogError(f"{self.url.render_as_string(hide_password=True)}: {exc}") from exc

    # --- worker helpers -------------------------------------------------------------------

    @staticmethod
    def _media(session: Session, media_id: int) -> m.MediaFile:
        """The media row, locked for update where the database can; CatalogError if missing."""
        media = session.get(m.MediaFile, media_id, with_for_update=True)
        if media is None:
            raise CatalogError(f"no media file with id {media_id}")
        return media

    @staticmethod
    def _transcript(session: Session, transcript_id: int, attempt: str | None = None) -> m.Transcript:
        """The transcript row, locked for update where the database can; CatalogError if missing,
        Superseded if `attempt` is given and another attempt has taken the transcript over."""
        transcript = session.get(m.Transcript, transcript_id, with_for_update=True)
        if transcript is None:
            raise CatalogError(f"no transcript with id {transcript_id}")
        if attempt is not None and transcript.attempt != attempt:
            raise Superseded(transcript_id, transcript.owner)
        return transcript

    @staticmethod
    def _resumable(session: Session, media_id: int, model_hash: str, options: dict) -> m.Transcript | None:
        """The newest unfinished transcript of this media made with the same model and options."""
        rows = session.scalars(
            select(m.Transcript)
            .where(m.Transcript.media_id == media_id, m.Transcript.status == Status.running)
            .where(m.Transcript.model_hash == model_hash)
            .order_by(m.Transcript.id.desc())
        )
        return next((t for t in rows if _normal_options(t.options) == options), None)

    @classmethod
    def _prompt(cls, session: Session, transcript: m.Transcript, part: m.TranscriptPart | None = None
                ) -> tuple[list[int], bool]:
        """The engine's prompt state stored at the resume point (of one part, for a file in parts):
        (previous-text tokens, whether the prompt was reset). A transcript stored before the state
        was kept gets it rebuilt from its segments (_prompt_tokens), as it was then."""
        state = (part if part is not None else transcript).prompt_state
        if state is not None:
            return list(state.get("tokens") or []), bool(state.get("reset"))
        return cls._prompt_tokens(session, transcript, part.part if part is not None else None), False

    @staticmethod
    def _prompt_tokens(session: Session, transcript: m.Transcript, part: int | None = None) -> list[int]:
        """The last tokens the decoder had as context, rebuilt from the segments by the rules of
        before the engine's state was stored (for transcripts stored then)."""
        opts = transcript.options or {}
        if not opts.get("condition_on_previous_text", True):
            return []
        reset_above = opts.get("prompt_reset_on_temperature", 0.5)
        rows = session.execute(
            select(m.Segment.tokens, m.Segment.temperature)
            .where(m.Segment.transcript_id == transcript.id, *_of_part(part))
            .order_by(m.Segment.window.desc(), m.Segment.idx.desc())
            .limit(PROMPT_TOKENS)
        )
        tokens: list[int] = []
        for seg_tokens, temperature in rows:
            if temperature > reset_above or len(tokens) >= PROMPT_TOKENS:
                break
            tokens[:0] = seg_tokens
        return tokens[-PROMPT_TOKENS:]

    def start_transcript(
        self, media_id: int, model_name: str, model_hash: str, backend: str, compute: str,
        options: dict, engine_version: str, attempt: str | None = None, owner: str | None = None,
    ) -> Started:  # fmt: skip
        """Resume this media's unfinished transcript for the same model and options, or start one,
        as `attempt` (a job run's id; its worker is `owner`): from now on only that attempt's writes
        are taken, an older attempt still running is refused (Superseded) at its next write."""
        options = _jsonable(options)
        with self.write() as session:
            self._media(session, media_id)
            found = self._resumable(session, media_id, model_hash, _normal_options(options))
            if found is not None:
                found = self._transcript(session, found.id)  # locked: no write of the old attempt interleaves
                found.attempt, found.owner = attempt, owner
                tokens, reset = self._prompt(session, found)
                return Started(found.id, found.next_window, found.next_seek, tokens, reset, found.language,
                               found.language_probability)
            new = m.Transcript(
                media_id=media_id, model_name=model_name, model_hash=model_hash, backend=backend,
                compute=compute, options=options, engine_version=engine_version, status=Status.running,
                next_window=0, next_seek=0, attempt=attempt, owner=owner,
            )  # fmt: skip
            session.add(new)
            session.flush()
            return Started(new.id, 0, 0, [])

    def add_window(self, transcript_id: int, window: int, next_seek: int, segments: Sequence[Segment],
                   part: int | None = None, attempt: str | None = None,
                   prompt: tuple[Sequence[int], bool] | None = None) -> None:
        """Store one decoded window and the resume point after it (of `part`, for a file decoded in
        parts), replacing any earlier copy of it and of the windows after it, with the engine's
        prompt state there (`prompt`: previous-text tokens, reset). With `attempt`, only if that
        attempt still owns the transcript (else Superseded)."""
        state = None if prompt is None else {"tokens": [int(t) for t in prompt[0]], "reset": bool(prompt[1])}
        with self.write() as session:
            transcript = self._transcript(session, transcript_id, attempt)
            if transcript.status != Status.running:
                raise CatalogError(f"transcript {transcript_id} is {transcript.status.value}, not running")
            of_transcript = m.Segment.transcript_id == transcript_id
            stale = delete(m.Segment).where(of_transcript, m.Segment.window >= window, *_of_part(part))
            session.execute(stale, execution_options={"synchronize_session": False})
            first = session.scalar(select(func.coalesce(func.max(m.Segment.idx) + 1, 0)).where(of_transcript))
            session.add_all(_segment_row(transcript_id, window, first + i, seg) for i, seg in enumerate(segments))
            if part is None:
                transcript.next_window, transcript.next_seek, transcript.prompt_state = window + 1, next_seek, state
                return
            row = session.get(m.TranscriptPart, (transcript_id, part))
            if row is None:
                raise CatalogError(f"transcript {transcript_id} has no part {part}")
            row.next_window, row.next_seek, row.prompt_state = window + 1, next_seek, state

    def set_language(self, transcript_id: int, language: str, probability: float, attempt: str | None = None) -> None:
        """The file's language, detected once (on its first speech): a resume reuses it."""
        with self.write() as session:
            transcript = self._transcript(session, transcript_id, attempt)
            transcript.language, transcript.language_probability = language, probability

    def plan_parts(self, transcript_id: int, spans: Sequence[tuple[int, int | None]],
                   attempt: str | None = None) -> None:
        """Record that a transcript decodes its file in these parts (engine.parts), each from its start."""
        with self.write() as session:
            transcript = self._transcript(session, transcript_id, attempt)
            if transcript.parts:
                raise CatalogError(f"transcript {transcript_id} already has its parts")
            session.add_all(m.TranscriptPart(transcript_id=transcript_id, part=k, start=start, stop=stop,
                                             next_window=k * WINDOW_STRIDE, next_seek=start, done=False)
                            for k, (start, stop) in enumerate(spans))

    def part_done(self, transcript_id: int, part: int, attempt: str | None = None) -> None:
        """One part of a transcript decoded in parts is finished: a resume skips it."""
        with self.write() as session:
            self._transcript(session, transcript_id, attempt)
            row = session.get(m.TranscriptPart, (transcript_id, part))
            if row is None:
                raise CatalogError(f"transcript {transcript_id} has no part {part}")
            row.done = True

    def resume_parts(self, transcript_id: int) -> list[PartResume] | None:
        """The unfinished parts of a transcript decoded in parts, each with its resume point and
        prompt; None when the transcript is not decoded in parts."""
        with self.read() as session:
            transcript = self._transcript(session, transcript_id)
            if not transcript.parts:
                return None
            return [PartResume(p.part, p.start, p.stop, p.next_window, p.next_seek,
                               *self._prompt(session, transcript, p))
                    for p in transcript.parts if not p.done]

    def finish_transcript(
        self, transcript_id: int, language: str, language_probability: float, timings: Mapping,
        wall_seconds: float, audio_seconds: float, attempt: str | None = None, outputs: str | None = None,
    ) -> None:  # fmt: skip
        """Mark a transcript done and drop the media's other transcripts. The media is done too, or,
        with `outputs` (where its files go: "data" or "beside"), it records in this same transaction
        that its output files are still to be written (outputs_written marks it done): a kill before
        they are written leaves a file that the next worker, run or scan finishes, never one that
        looks done without them."""
        with self.write() as session:
            t = self._transcript(session, transcript_id, attempt)
            t.status, t.finished_at = Status.done, m.utcnow()
            t.language, t.language_probability = language, language_probability
            t.timings, t.wall_seconds, t.audio_seconds = _as_dict(timings), wall_seconds, audio_seconds
            t.rtf = wall_seconds / audio_seconds if audio_seconds else None
            others = delete(m.Transcript).where(m.Transcript.media_id == t.media_id, m.Transcript.id != t.id)
            session.execute(others, execution_options={"synchronize_session": False})
            media = self._media(session, t.media_id)
            media.status, media.error = (Status.done, None) if outputs is None else (Status.running, None)
            media.outputs_pending = outputs
            if media.duration is None:
                media.duration = audio_seconds

    def outputs_written(self, media_id: int) -> None:
        """The output files of a finished transcript are written: the media is done."""
        with self.write() as session:
            media = self._media(session, media_id)
            media.status, media.error, media.outputs_pending = Status.done, None, None

    def outputs_failed(self, media_id: int, reason: str) -> None:
        """The output files could not be written (a full or read-only disk): still pending, with why."""
        with self.write() as session:
            media = self._media(session, media_id)
            media.status, media.error = Status.queued, reason

    def pending_outputs(self) -> list[tuple[int, str]]:
        """(media id, where its outputs go) of every finished file whose outputs are not written."""
        with self.read() as session:
            return [tuple(r) for r in session.execute(
                select(m.MediaFile.id, m.MediaFile.outputs_pending).where(m.MediaFile.outputs_pending.is_not(None))
                .join(m.Transcript, (m.Transcript.media_id == m.MediaFile.id) & (m.Transcript.status == Status.done))
                .order_by(m.MediaFile.id))]

    def set_media_status(self, media_id: int, status: Status | str, error: str | None = None) -> None:
        """Set a media file's status and error text (None clears it)."""
        with self.write() as session:
            media = self._media(session, media_id)
            media.status, media.error = Status(status), error

    def record_failure(self, media_id: int, reason: str, permanent: bool, max_attempts: int,
                       counted: bool = True) -> Status:
        """Log a failure; the file is failed if permanent or out of attempts, else queued again. The
        one retry policy of the queue: a failure that is not the file's (`counted=False`: a helper
        process died) is logged without using an attempt, but no file is tried more than
        RUNAWAY_FACTOR x max_attempts times in all."""
        with self.write() as session:
            media = self._media(session, media_id)
            media.attempts = (media.attempts or 0) + counted
            entry = {"attempt": media.attempts if counted else None, "reason": reason, "permanent": permanent,
                     "at": m.utcnow().isoformat()}
            media.errors_log = [*(media.errors_log or []), entry]  # a new list, so the change is seen
            media.error = reason
            spent = media.attempts >= max_attempts or len(media.errors_log) >= RUNAWAY_FACTOR * max_attempts
            media.status = Status.failed if permanent or spent else Status.queued
            return media.status

    def forget_scan(self, media_id: int) -> None:
        """Clear the scanned mtime, so the next scan (or doctor) probes, hashes and queues the file again."""
        with self.write() as session:
            self._media(session, media_id).mtime = None

    @staticmethod
    def _done_transcript(session: Session, media_id: int) -> m.Transcript | None:
        """The media's newest finished transcript, if any."""
        return session.scalars(
            select(m.Transcript)
            .where(m.Transcript.media_id == media_id, m.Transcript.status == Status.done)
            .order_by(m.Transcript.id.desc())
            .limit(1)
        ).first()

    def transcript_segments(self, media_id: int, words: bool = True) -> list[Segment]:
        """The finished transcript's segments (with their words, unless `words` is False), as engine
        dataclasses in time order (engine.results.in_order: the parts of a long file end out of order)."""
        with self.read() as session:
            t = self._done_transcript(session, media_id)
            if t is None:
                return []
            query = select(m.Segment).where(m.Segment.transcript_id == t.id)
            rows = session.scalars(query.options(selectinload(m.Segment.words)) if words else query)
            return list(in_order(_engine_segment(row, words) for row in rows))

    def transcript_info(self, media_id: int) -> TranscriptInfo | None:
        """What the finished transcript of a media file is about and how it was made, or None."""
        with self.read() as session:
            t = self._done_transcript(session, media_id)
            if t is None:
                return None
            media = session.get(m.MediaFile, media_id)
            return TranscriptInfo(
                path=media.path, duration=media.duration or t.audio_seconds or 0.0, language=t.language or "",
                language_probability=t.language_probability or 0.0, model=t.model_name, model_hash=t.model_hash,
                backend=t.backend, compute=t.compute, options=dict(t.options or {}), engine_version=t.engine_version,
            )  # fmt: skip

    def heartbeat_worker(self, name: str, compute: str, host: str, pid: int) -> None:
        """Record that a worker is alive; a new host or pid under the same name restarts its clock."""
        now = m.utcnow()
        with self.write() as session:
            w = session.get(m.WorkerInfo, name, with_for_update=True)
            if w is None:
                session.add(m.WorkerInfo(name=name, compute=compute, host=host, pid=pid, started_at=now, last_seen=now))
                return
            if (w.host, w.pid) != (host, pid):
                w.started_at = now
            w.compute, w.host, w.pid, w.last_seen = compute, host, pid, now

    def alive_workers(self, max_age_s: float) -> list[m.WorkerInfo]:
        """Workers seen within the last `max_age_s` seconds, by name (detached rows)."""
        cutoff = m.utcnow() - dt.timedelta(seconds=max_age_s)
        with self.read() as session:
            rows = session.scalars(
                select(m.WorkerInfo).where(m.WorkerInfo.last_seen >= cutoff).order_by(m.WorkerInfo.name)
            )
            return list(rows)


def upgrade(url: str) -> None:
    """Bring the catalog at `url` to the latest schema (for `scriptorium db upgrade`)."""
    with Catalog.open(url, migrate=True):
        pass


def check(url: str) -> None:
    """Raise CatalogError if the catalog at `url` is behind or drifts from the models (`scriptorium db check`)."""
    with Catalog.open(url, migrate=False) as cat:
        cat.check()
