"""comments under papers, recommendation feedback, papers already sent to a reader

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _user(name: str = "user_id", ondelete: str = "CASCADE", nullable: bool = False) -> sa.Column:
    return sa.Column(
        name, sa.Integer(), sa.ForeignKey("users.id", ondelete=ondelete), nullable=nullable
    )


def _paper() -> sa.Column:
    return sa.Column(
        "paper_id",
        sa.String(length=64),
        sa.ForeignKey("papers.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "rec_feedback",
        _user(),
        sa.Column("scope", sa.Integer(), nullable=False),
        _paper(),
        sa.Column(
            "tag_id", sa.Integer(), sa.ForeignKey("tags.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "scope", "paper_id"),
    )
    op.create_index("ix_rec_feedback_tag", "rec_feedback", ["tag_id"])
    op.create_table(
        "reader_sent",
        _user(),
        _paper(),
        sa.Column("via", sa.String(length=64), nullable=False),
        sa.Column("sent_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "paper_id"),
    )
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _paper(),
        _user(),
        sa.Column(
            "parent_id",
            sa.Integer(),
            sa.ForeignKey("comments.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("edited_at", _TS, nullable=True),
        sa.Column("deleted_at", _TS, nullable=True),
        sa.Column("hidden_at", _TS, nullable=True),
        _user("hidden_by", "SET NULL", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_comments_user_id", "comments", ["user_id"])
    op.create_index("ix_comments_paper", "comments", ["paper_id", "created_at"])
    op.create_index("ix_comments_parent", "comments", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_comments_parent", table_name="comments")
    op.drop_index("ix_comments_paper", table_name="comments")
    op.drop_index("ix_comments_user_id", table_name="comments")
    op.drop_table("comments")
    op.drop_table("reader_sent")
    op.drop_index("ix_rec_feedback_tag", table_name="rec_feedback")
    op.drop_table("rec_feedback")
