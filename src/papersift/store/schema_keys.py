"""The signing keys kept in the database, so every host of one deployment signs alike.

Registered on ``schema.Base`` (imported at the end of ``schema``), so Alembic and the app
see one metadata.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from papersift.store.schema import Base, UTCDateTime


class SigningKeyRow(Base):
    """One named key (``default`` signs cookies, CSRF tokens and mail links)."""

    __tablename__ = "signing_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
