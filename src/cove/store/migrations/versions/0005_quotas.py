"""Per-project quotas: lock rows for quota checks, pruned audit counts, audit events by container in order.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

LOCKS = ("containers", "responses")


def upgrade() -> None:
    locks = op.create_table(
        "locks",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(locks, [{"name": name, "version": 0} for name in LOCKS])
    op.create_table(
        "audit_pruned",
        sa.Column("container_id", sa.String(64), primary_key=True),
        sa.Column("pruned", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_audit_events_container_seq", "audit_events", ["container_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_container_seq", "audit_events")
    op.drop_table("audit_pruned")
    op.drop_table("locks")
