"""Containers keep their domain secrets, sealed (see ``cove.store.sealing``).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("containers", sa.Column("secrets", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("containers", "secrets")
