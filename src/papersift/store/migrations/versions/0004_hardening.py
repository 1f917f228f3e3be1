"""view de-duplication and vote eligibility (votes and views that one client cannot inflate)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "view_marks",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("viewer", sa.String(length=32), nullable=False),
        sa.Column("paper_id", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("day", "viewer", "paper_id"),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("scope", sa.String(length=96), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
    with op.batch_alter_table("rate_buckets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rate_buckets_at"), ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rate_buckets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rate_buckets_at"))
    op.drop_table("rate_buckets")
    op.drop_table("view_marks")
