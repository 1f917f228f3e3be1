"""the job queue: procrastinate's schema in its own PostgreSQL namespace, job errors

Revision ID: 0009
Revises: 0008

SQLite deployments run jobs in process: they get the (unused) job_errors table only, so
both databases have the same metadata.
"""

import sqlalchemy as sa
from alembic import op

from papersift.store import queue

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_errors",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
    )
    queue.install(op.get_bind())


def downgrade() -> None:
    queue.uninstall(op.get_bind())
    op.drop_table("job_errors")
