"""Skills (``/v1/skills``): each skill and its versions (a version's zip lives in the blob store), and
the skills put in each container.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.create_table(
        "skills",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("default_version", sa.Integer, nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_skills_project_seq", "skills", ["project", "seq"])
    op.create_table(
        "skill_versions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("skill_id", sa.String(64), sa.ForeignKey("skills.id", ondelete="CASCADE"), nullable=False),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("skill_id", "version"),
    )
    op.create_index("ix_skill_versions_project", "skill_versions", ["project"])
    op.create_table(
        "container_skills",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("container_id", sa.String(64), sa.ForeignKey("containers.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("path", sa.String(128), nullable=False),
        sa.UniqueConstraint("container_id", "name"),
    )
    op.create_index("ix_container_skills_container_id", "container_skills", ["container_id"])


def downgrade() -> None:
    op.drop_index("ix_container_skills_container_id", "container_skills")
    op.drop_table("container_skills")
    op.drop_index("ix_skill_versions_project", "skill_versions")
    op.drop_table("skill_versions")
    op.drop_index("ix_skills_project_seq", "skills")
    op.drop_table("skills")
