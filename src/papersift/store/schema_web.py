"""Tables of the web app's abuse limits: which viewer already counted a view of a paper
today, and token buckets for PostgreSQL deployments (several hosts share one budget).

They share ``schema.Base`` (imported at the end of ``schema``), so Alembic and the app see
one metadata.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Date, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from papersift.store.schema import Base


class ViewMarkRow(Base):
    """One row per (day, viewer, paper): a view is counted only when this insert is new.
    ``viewer`` is a keyed hash of the visitor id (or of the address of a cookieless
    viewer), never the address itself. Rows older than yesterday are pruned."""

    __tablename__ = "view_marks"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    viewer: Mapped[str] = mapped_column(String(32), primary_key=True)
    paper_id: Mapped[str] = mapped_column(String(255), primary_key=True)


class RateBucketRow(Base):
    """A token bucket (scope, key) -> tokens left at time ``at`` (Unix seconds)."""

    __tablename__ = "rate_buckets"

    scope: Mapped[str] = mapped_column(String(96), primary_key=True)
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float, index=True)
