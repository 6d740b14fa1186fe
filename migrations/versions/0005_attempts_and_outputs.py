"""Attempts own their transcript (a lease), finished files whose outputs are pending, files written.

- transcripts.attempt / owner: each attempt at a transcript (a job that starts or resumes it) takes
  it over with an id of its own; a write by an older attempt is refused, so two workers can never
  interleave windows of one transcript.
- media_files.outputs_pending: set in the transaction that finishes the transcript ("data" or
  "beside", where they go), cleared once the SRT/VTT/JSON/TXT files are written.
- output_files: every output file Scriptorium wrote and its sha256, so a file it did not write (a
  person's subtitles beside the media) is never overwritten.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transcripts") as batch:
        batch.add_column(sa.Column("attempt", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(length=255), nullable=True))
    with op.batch_alter_table("media_files") as batch:
        batch.add_column(sa.Column("outputs_pending", sa.String(length=16), nullable=True))
    op.create_table(
        "output_files",
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("media_id", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["media_id"], ["media_files.id"], name="fk_output_files_media_id_media_files",
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("path", name="pk_output_files"),
    )


def downgrade() -> None:
    op.drop_table("output_files")
    with op.batch_alter_table("media_files") as batch:
        batch.drop_column("outputs_pending")
    with op.batch_alter_table("transcripts") as batch:
        batch.drop_column("owner")
        batch.drop_column("attempt")
