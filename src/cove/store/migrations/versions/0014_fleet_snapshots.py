"""The fleet's snapshots: which node holds each snapshot's files, so that containers made from it go there.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    op.create_table(
        "fleet_snapshots",
        sa.Column("snapshot_id", sa.String(64), primary_key=True),
        sa.Column("node", sa.String(128), nullable=False, index=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("taken_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fleet_snapshots")
