"""SQLAlchemy models of the catalog: media files, their transcripts (and parts), segments, words and workers.

The full-text index (SQLite FTS5 table + triggers, PostgreSQL GIN expression index) is not
modelled here: the Alembic migration creates it and env.py keeps it out of drift checks.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from runner.catalog.status import Status

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Names the migration creates outside the models; env.py excludes them from autogenerate.
FTS_TABLE = "segments_fts"
PG_TEXT_INDEX = "ix_segments_text_tsv"
TEXT_SEARCH_CONFIG = "simple"  # language-agnostic: archives mix languages, so no stemming


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC (the only time the catalog stores)."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp that always reads back timezone-aware UTC, also from SQLite (which drops tz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


# Stored as VARCHAR (no native enum, no CHECK) so adding a status never needs a table rebuild.
StatusType = Enum(Status, native_enum=False, length=16, values_callable=lambda e: [s.value for s in e])


class Base(DeclarativeBase):
    """Declarative base whose MetaData names every constraint, so migrations can refer to them."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class MediaFile(Base):
    """One media file found by a scan: where it is, what it is, and how far its work got."""

    __tablename__ = "media_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)  # absolute
    scan_root: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime: Mapped[float | None] = mapped_column(Double)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # sha256 hex
    duration: Mapped[float | None] = mapped_column(Double)
    codec: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[Status] = mapped_column(StatusType, default=Status.new, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    errors_log: Mapped[list] = mapped_column(JSON, default=list)  # one entry per failed attempt
    job_id: Mapped[str | None] = mapped_column(String(128))
    # what the file's job asks for (TranscribeOptions.to_dict(), model name): a re-queue asks the same
    job_options: Mapped[dict | None] = mapped_column(JSON)
    job_model: Mapped[str | None] = mapped_column(String(255))
    # the transcript is done but its SRT/VTT/JSON/TXT are not written yet: where they go ("data", "beside")
    outputs_pending: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    scanned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    transcripts: Mapped[list[Transcript]] = relationship(
        back_populates="media", cascade="all, delete-orphan", passive_deletes=True
    )


class Transcript(Base):
    """One transcription run of a media file: how it was made, where to resume, how long it took."""

    __tablename__ = "transcripts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media_files.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(255))
    model_hash: Mapped[str] = mapped_column(String(128))
    backend: Mapped[str] = mapped_column(String(64))
    compute: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    engine_version: Mapped[str] = mapped_column(String(64), default="")
    language: Mapped[str | None] = mapped_column(String(16))
    language_probability: Mapped[float | None] = mapped_column(Double)
    status: Mapped[Status] = mapped_column(StatusType, default=Status.running)  # running/done
    attempt: Mapped[str | None] = mapped_column(String(32))  # the attempt (job run) that owns it now
    owner: Mapped[str | None] = mapped_column(String(255))  # that attempt's worker
    next_window: Mapped[int] = mapped_column(Integer, default=0)  # resume point: first window to do
    next_seek: Mapped[int] = mapped_column(BigInteger, default=0)  # resume point: sample index
    prompt_state: Mapped[dict | None] = mapped_column(JSON)  # the engine's prompt at the resume point
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    timings: Mapped[dict | None] = mapped_column(JSON)
    wall_seconds: Mapped[float | None] = mapped_column(Double)
    audio_seconds: Mapped[float | None] = mapped_column(Double)
    rtf: Mapped[float | None] = mapped_column(Double)  # wall_seconds / audio_seconds

    media: Mapped[MediaFile] = relationship(back_populates="transcripts")
    parts: Mapped[list[TranscriptPart]] = relationship(
        back_populates="transcript", order_by="TranscriptPart.part", cascade="all, delete-orphan", passive_deletes=True
    )
    segments: Mapped[list[Segment]] = relationship(
        back_populates="transcript", order_by="Segment.idx", cascade="all, delete-orphan", passive_deletes=True
    )


class TranscriptPart(Base):
    """One part of a long file decoded as its own chain of windows (engine.parts): its span and
    where it resumes. A transcript without parts resumes from its own next_window/next_seek."""

    __tablename__ = "transcript_parts"

    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger)  # first sample
    stop: Mapped[int | None] = mapped_column(BigInteger)  # sample just past it; None: the end of the file
    next_window: Mapped[int] = mapped_column(Integer)
    next_seek: Mapped[int] = mapped_column(BigInteger)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_state: Mapped[dict | None] = mapped_column(JSON)  # the engine's prompt at this part's resume point

    transcript: Mapped[Transcript] = relationship(back_populates="parts")


class Segment(Base):
    """One decoded segment; `idx` orders it within its transcript, `window` says which window made it."""

    __tablename__ = "segments"
    # The unique (transcript_id, idx) index also serves lookups by transcript_id.
    __table_args__ = (UniqueConstraint("transcript_id", "idx"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"))
    window: Mapped[int] = mapped_column(Integer)
    idx: Mapped[int] = mapped_column(Integer)
    seek: Mapped[int] = mapped_column(BigInteger, default=0)
    start: Mapped[float] = mapped_column(Double)
    end: Mapped[float] = mapped_column(Double)
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[list] = mapped_column(JSON, default=list)
    avg_logprob: Mapped[float] = mapped_column(Double)
    no_speech_prob: Mapped[float] = mapped_column(Double)
    compression_ratio: Mapped[float] = mapped_column(Double)
    temperature: Mapped[float] = mapped_column(Double)

    transcript: Mapped[Transcript] = relationship(back_populates="segments")
    words: Mapped[list[Word]] = relationship(
        back_populates="segment", order_by="Word.idx", cascade="all, delete-orphan", passive_deletes=True
    )


class Word(Base):
    """One word of a segment with its times and probability."""

    __tablename__ = "words"
    # The unique (segment_id, idx) index also serves the cascade from segments.
    __table_args__ = (UniqueConstraint("segment_id", "idx"),)

    # Words outnumber everything (~9000 an hour of speech): 64-bit ids where the database has them.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Double)
    end: Mapped[float] = mapped_column(Double)
    word: Mapped[str] = mapped_column(Text)
    probability: Mapped[float] = mapped_column(Double)

    segment: Mapped[Segment] = relationship(back_populates="words")


class WorkerInfo(Base):
    """A worker process's heartbeat: who it is, where it runs, when it was last seen."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    compute: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ApiJob(Base):
    """One request of the HTTP API (runner.web): which media file it queued, with which options, and
    where its callback goes. Its status follows the media file's until it is done or failed."""

    __tablename__ = "api_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # job_<32 hex>, given to the client
    media_id: Mapped[int] = mapped_column(ForeignKey("media_files.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # transcription, translation (OpenAI routes) or job
    source: Mapped[str] = mapped_column(String(16))  # upload or path
    filename: Mapped[str] = mapped_column(Text)  # as the client named it
    options: Mapped[dict] = mapped_column(JSON, default=dict)  # engine.options.TranscribeOptions.to_dict()
    status: Mapped[Status] = mapped_column(StatusType, default=Status.queued, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One signed callback of an API job: the exact body, its state (pending, delivered, failed),
    when it is next tried, and a log of every attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("api_jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(32))  # job.done or job.failed
    body: Mapped[str] = mapped_column(Text)  # signed as sent, the same on every attempt
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempts_log: Mapped[list] = mapped_column(JSON, default=list)  # {at, status, error} per attempt
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class OutputFile(Base):
    """An output file Scriptorium wrote, with its content hash: a file at that path with other
    content (or none recorded) is somebody else's and is not overwritten without --overwrite."""

    __tablename__ = "output_files"

    path: Mapped[str] = mapped_column(Text, primary_key=True)
    media_id: Mapped[int | None] = mapped_column(ForeignKey("media_files.id", ondelete="SET NULL"))
    sha256: Mapped[str] = mapped_column(String(64))
    written_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
