"""The engine's own prompt state at each resume point, so a resumed file is conditioned exactly as
an uninterrupted one (the catalog no longer re-derives it from the segments by rules of its own).

prompt_state = {"tokens": [previous-text tokens since the last reset, at most 223], "reset": bool},
on the transcript (a file in one chain) or on each of its parts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transcripts") as batch:
        batch.add_column(sa.Column("prompt_state", sa.JSON(), nullable=True))
    with op.batch_alter_table("transcript_parts") as batch:
        batch.add_column(sa.Column("prompt_state", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transcript_parts") as batch:
        batch.drop_column("prompt_state")
    with op.batch_alter_table("transcripts") as batch:
        batch.drop_column("prompt_state")
