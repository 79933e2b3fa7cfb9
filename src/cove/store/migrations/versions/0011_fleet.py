"""The fleet's registry: nodes as they last reported, and which node holds which container.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.create_table(
        "fleet_nodes",
        sa.Column("node", sa.String(128), primary_key=True),
        sa.Column("incarnation", sa.String(64), nullable=False),
        sa.Column("memory", sa.BigInteger, nullable=False),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("images", sa.JSON, nullable=False),
        sa.Column("alive", sa.Boolean, nullable=False),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
        sa.Column("used_memory", sa.BigInteger, nullable=False),
        sa.Column("used_cpus", sa.Float, nullable=False),
        sa.Column("used_slots", sa.Integer, nullable=False),
    )
    op.create_table(
        "fleet_placements",
        sa.Column("container_id", sa.String(64), primary_key=True),
        sa.Column("node", sa.String(128), nullable=False, index=True),
        sa.Column("incarnation", sa.String(64), nullable=False),
        sa.Column("memory", sa.BigInteger, nullable=False),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("placed_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fleet_placements")
    op.drop_table("fleet_nodes")
