"""Replicas: several servers on one PostgreSQL. Each registers with a heartbeat; a response records the
replica running it (``owner``), containers and snapshots the replica holding them (``holder``).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.create_table("replicas",
                    sa.Column("id", sa.String(128), primary_key=True),
                    sa.Column("started_at", sa.Float, nullable=False),
                    sa.Column("heartbeat_at", sa.Float, nullable=False))
    op.add_column("responses", sa.Column("owner", sa.String(128), nullable=True))
    op.create_index("ix_responses_owner", "responses", ["owner"])
    op.add_column("containers", sa.Column("holder", sa.String(128), nullable=True))
    op.add_column("snapshots", sa.Column("holder", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("holder")
    with op.batch_alter_table("containers") as batch:
        batch.drop_column("holder")
    op.drop_index("ix_responses_owner", "responses")
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("owner")
    op.drop_table("replicas")
