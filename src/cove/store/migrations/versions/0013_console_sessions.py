"""Console sessions in the store rather than one server's memory, so any replica serves a signed-in browser.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.create_table("console_sessions",
                    sa.Column("id_hash", sa.String(64), primary_key=True),
                    sa.Column("project", sa.String(128), nullable=False),
                    sa.Column("key", sa.Text, nullable=False),
                    sa.Column("csrf", sa.String(64), nullable=False),
                    sa.Column("created_at", sa.Float, nullable=False),
                    sa.Column("expires_at", sa.Float, nullable=False))
    op.create_index("ix_console_sessions_project", "console_sessions", ["project"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_expires_at", "console_sessions")
    op.drop_index("ix_console_sessions_project", "console_sessions")
    op.drop_table("console_sessions")
