"""Transcript parts: a long file decoded as several chains of windows resumes each on its own.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transcript_parts",
        sa.Column("transcript_id", sa.Integer(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("stop", sa.BigInteger(), nullable=True),
        sa.Column("next_window", sa.Integer(), nullable=False),
        sa.Column("next_seek", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transcript_id"], ["transcripts.id"], name="fk_transcript_parts_transcript_id_transcripts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("transcript_id", "part", name="pk_transcript_parts"),
    )


def downgrade() -> None:
    op.drop_table("transcript_parts")
