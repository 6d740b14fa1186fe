"""Initial catalog: media files, transcripts, segments, words, workers, and full-text search.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

The full-text index depends on the dialect: SQLite gets an FTS5 external-content table over
segments.text kept in sync by triggers; PostgreSQL gets a GIN index on to_tsvector('simple', text).
Both are excluded from autogenerate comparison in env.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS = sa.String(length=16)  # runner.catalog.status.Status values, stored as plain strings
TIMESTAMP = sa.DateTime(timezone=True)

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE segments_fts USING fts5("
    "text, content='segments', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER segments_fts_ai AFTER INSERT ON segments BEGIN "
    "INSERT INTO segments_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER segments_fts_ad AFTER DELETE ON segments BEGIN "
    "INSERT INTO segments_fts(segments_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER segments_fts_au AFTER UPDATE OF text ON segments BEGIN "
    "INSERT INTO segments_fts(segments_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO segments_fts(rowid, text) VALUES (new.id, new.text); END",
)
SQLITE_FTS_DROP = (
    "DROP TRIGGER IF EXISTS segments_fts_au",
    "DROP TRIGGER IF EXISTS segments_fts_ad",
    "DROP TRIGGER IF EXISTS segments_fts_ai",
    "DROP TABLE IF EXISTS segments_fts",
)
PG_FTS = "CREATE INDEX ix_segments_text_tsv ON segments USING gin (to_tsvector('simple', text))"
PG_FTS_DROP = "DROP INDEX IF EXISTS ix_segments_text_tsv"


def _create_media_files() -> None:
    op.create_table(
        "media_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("scan_root", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("mtime", sa.Double(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("duration", sa.Double(), nullable=True),
        sa.Column("codec", sa.String(length=64), nullable=True),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("errors_log", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("scanned_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_media_files"),
        sa.UniqueConstraint("path", name="uq_media_files_path"),
    )
    op.create_index("ix_media_files_content_hash", "media_files", ["content_hash"])
    op.create_index("ix_media_files_status", "media_files", ["status"])


def _create_workers() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("compute", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_workers"),
    )
    op.create_index("ix_workers_last_seen", "workers", ["last_seen"])


def _create_transcripts() -> None:
    op.create_table(
        "transcripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("media_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("model_hash", sa.String(length=128), nullable=False),
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("compute", sa.String(length=64), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("engine_version", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("language_probability", sa.Double(), nullable=True),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("next_window", sa.Integer(), nullable=False),
        sa.Column("next_seek", sa.BigInteger(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("timings", sa.JSON(), nullable=True),
        sa.Column("wall_seconds", sa.Double(), nullable=True),
        sa.Column("audio_seconds", sa.Double(), nullable=True),
        sa.Column("rtf", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["media_id"], ["media_files.id"], name="fk_transcripts_media_id_media_files", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_transcripts"),
    )
    op.create_index("ix_transcripts_media_id", "transcripts", ["media_id"])


def _create_segments() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transcript_id", sa.Integer(), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("seek", sa.BigInteger(), nullable=False),
        sa.Column("start", sa.Double(), nullable=False),
        sa.Column("end", sa.Double(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tokens", sa.JSON(), nullable=False),
        sa.Column("avg_logprob", sa.Double(), nullable=False),
        sa.Column("no_speech_prob", sa.Double(), nullable=False),
        sa.Column("compression_ratio", sa.Double(), nullable=False),
        sa.Column("temperature", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transcript_id"], ["transcripts.id"], name="fk_segments_transcript_id_transcripts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_segments"),
        sa.UniqueConstraint("transcript_id", "idx", name="uq_segments_transcript_id_idx"),
    )


def _create_words() -> None:
    op.create_table(
        "words",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start", sa.Double(), nullable=False),
        sa.Column("end", sa.Double(), nullable=False),
        sa.Column("word", sa.Text(), nullable=False),
        sa.Column("probability", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["segments.id"], name="fk_words_segment_id_segments", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_words"),
        sa.UniqueConstraint("segment_id", "idx", name="uq_words_segment_id_idx"),
    )


def _full_text(statements_by_dialect: dict[str, Sequence[str]]) -> None:
    """Run the dialect's full-text DDL (nothing for other dialects: search then is unavailable)."""
    for statement in statements_by_dialect.get(op.get_bind().dialect.name, ()):
        op.execute(statement)


def upgrade() -> None:
    _create_media_files()
    _create_workers()
    _create_transcripts()
    _create_segments()
    _create_words()
    _full_text({"sqlite": SQLITE_FTS, "postgresql": (PG_FTS,)})


def downgrade() -> None:
    _full_text({"sqlite": SQLITE_FTS_DROP, "postgresql": (PG_FTS_DROP,)})
    op.drop_table("words")
    op.drop_table("segments")
    op.drop_index("ix_transcripts_media_id", table_name="transcripts")
    op.drop_table("transcripts")
    op.drop_index("ix_workers_last_seen", table_name="workers")
    op.drop_table("workers")
    op.drop_index("ix_media_files_status", table_name="media_files")
    op.drop_index("ix_media_files_content_hash", table_name="media_files")
    op.drop_table("media_files")
