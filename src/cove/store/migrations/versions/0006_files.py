"""The Files API: uploaded files' metadata (bytes live in the data dir or a bucket) and the lock row
that serializes each project's storage quota check.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("filename", sa.String(1024), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_files_project_seq", "files", ["project", "seq"])
    op.bulk_insert(sa.table("locks", sa.column("name", sa.String), sa.column("version", sa.BigInteger)),
                   [{"name": "files", "version": 0}])


def downgrade() -> None:
    op.execute("DELETE FROM locks WHERE name = 'files'")
    op.drop_index("ix_files_project_seq", "files")
    op.drop_table("files")
