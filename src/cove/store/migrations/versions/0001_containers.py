"""Containers and their files.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "containers",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("project", sa.String(128), nullable=False, index=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("image", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("memory_limit", sa.String(8), nullable=False),
        sa.Column("cpu_limit", sa.Float, nullable=False),
        sa.Column("expires_minutes", sa.Integer, nullable=False),
        sa.Column("network_policy", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_active_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "container_files",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("container_id", sa.String(64), sa.ForeignKey("containers.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("path", sa.String(4096), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("container_id", "path"),
    )


def downgrade() -> None:
    op.drop_table("container_files")
    op.drop_table("containers")
