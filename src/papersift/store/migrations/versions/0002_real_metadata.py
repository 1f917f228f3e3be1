"""real arXiv metadata (listing day, primary category, comment) and collection titles

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable or server-defaulted: existing databases migrate in place.
    with op.batch_alter_table("papers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("announced", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("primary_category", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("comment", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_papers_announced"), ["announced"], unique=False)
        batch_op.create_index(
            "ix_papers_day", ["announced", "published", "first_seen"], unique=False
        )
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("title", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(sa.Column("description", sa.Text(), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_column("description")
        batch_op.drop_column("title")
    with op.batch_alter_table("papers", schema=None) as batch_op:
        batch_op.drop_index("ix_papers_day")
        batch_op.drop_index(batch_op.f("ix_papers_announced"))
        batch_op.drop_column("comment")
        batch_op.drop_column("primary_category")
        batch_op.drop_column("announced")
