"""staged ingest batches: a file's rows wait in ingest_staged until the file is whole

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lane", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("collection", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lane"),
    )
    op.create_table(
        "ingest_staged",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("arxiv_id", sa.String(length=64), nullable=True),
        sa.Column("doi", sa.String(length=255), nullable=True),
        sa.Column("title_key", sa.String(length=255), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("abstract", sa.Text(), nullable=False),
        sa.Column("authors", sa.JSON(), nullable=False),
        sa.Column("published", sa.Date(), nullable=True),
        sa.Column("updated", sa.Date(), nullable=True),
        sa.Column("announced", sa.Date(), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("primary_category", sa.String(length=64), nullable=True),
        sa.Column("abs_url", sa.Text(), nullable=True),
        sa.Column("pdf_url", sa.Text(), nullable=True),
        sa.Column("code_urls", sa.JSON(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("has_code", sa.Boolean(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_hash", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["ingest_batches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("batch_id", "phase", "id"),
    )
    op.create_index("ix_ingest_staged_arxiv", "ingest_staged", ["batch_id", "arxiv_id"])
    op.create_index("ix_ingest_staged_doi", "ingest_staged", ["batch_id", "doi"])
    op.create_index("ix_ingest_staged_title", "ingest_staged", ["batch_id", "title_key"])


def downgrade() -> None:
    op.drop_index("ix_ingest_staged_title", table_name="ingest_staged")
    op.drop_index("ix_ingest_staged_doi", table_name="ingest_staged")
    op.drop_index("ix_ingest_staged_arxiv", table_name="ingest_staged")
    op.drop_table("ingest_staged")
    op.drop_table("ingest_batches")
