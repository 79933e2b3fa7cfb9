"""Long-running background responses: a heartbeat, their progress (checkpoint) and how often resumed.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.add_column("responses", sa.Column("heartbeat_at", sa.Float, nullable=True))
    op.add_column("responses", sa.Column("progress", sa.JSON, nullable=True))
    op.add_column("responses", sa.Column("resumes", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("resumes")
        batch.drop_column("progress")
        batch.drop_column("heartbeat_at")
