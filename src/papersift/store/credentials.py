"""Server-side sessions, one-time sign-in links and personal API tokens.

Callers hand over the secret (the cookie, the link token, the API token); only its
SHA-256 is stored or looked up, so the table alone signs no one in. The secrets are
random (256 bits), so a plain hash is enough: there is nothing to guess.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from papersift.store.schema_accounts import (
    ApiTokenRow,
    SigninLinkRow,
    UserRow,
    UserSessionRow,
)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


# -- sessions ------------------------------------------------------------------------------


def add_session(
    session: Session, secret: str, user_id: int, at: datetime, expires: datetime, agent: str = ""
) -> None:
    session.add(
        UserSessionRow(
            token_hash=secret_hash(secret),
            user_id=user_id,
            created_at=at,
            last_seen_at=at,
            expires_at=expires,
            user_agent=agent[:200],
        )
    )
    session.flush()


@dataclass(frozen=True)
class SessionHit:
    user: UserRow
    last_seen_at: datetime


def session_user(session: Session, secret: str, now: datetime) -> SessionHit | None:
    """The user of a live session, or None (unknown, expired or revoked)."""
    row = session.execute(
        select(UserRow, UserSessionRow.last_seen_at)
        .join(UserSessionRow, UserSessionRow.user_id == UserRow.id)
        .where(UserSessionRow.token_hash == secret_hash(secret), UserSessionRow.expires_at > now)
    ).first()
    return SessionHit(row[0], row[1]) if row else None


def touch_session(session: Session, secret: str, at: datetime) -> None:
    session.execute(
        update(UserSessionRow)
        .where(UserSessionRow.token_hash == secret_hash(secret))
        .values(last_seen_at=at)
    )


def delete_session(session: Session, secret: str) -> None:
    session.execute(delete(UserSessionRow).where(UserSessionRow.token_hash == secret_hash(secret)))


def delete_sessions_of(session: Session, user_id: int) -> int:
    """Sign the user out everywhere; sessions removed."""
    result = session.execute(delete(UserSessionRow).where(UserSessionRow.user_id == user_id))
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def sessions_of(session: Session, user_id: int) -> list[UserSessionRow]:
    return list(
        session.scalars(
            select(UserSessionRow)
            .where(UserSessionRow.user_id == user_id)
            .order_by(UserSessionRow.created_at)
        )
    )


def prune_expired(session: Session, now: datetime) -> None:
    """Forget sessions and sign-in links past their expiry."""
    session.execute(delete(UserSessionRow).where(UserSessionRow.expires_at <= now))
    session.execute(delete(SigninLinkRow).where(SigninLinkRow.expires_at <= now))


# -- sign-in links -------------------------------------------------------------------------


def add_signin_link(
    session: Session,
    token: str,
    email: str,
    nonce: str,
    next_path: str,
    at: datetime,
    expires: datetime,
) -> None:
    session.add(
        SigninLinkRow(
            token_hash=secret_hash(token),
            email=email,
            nonce_hash=secret_hash(nonce),
            next_path=next_path[:500],
            created_at=at,
            expires_at=expires,
        )
    )
    session.flush()


def live_link(session: Session, token: str, now: datetime) -> SigninLinkRow | None:
    """The unused, unexpired link for ``token``, or None."""
    return session.scalar(
        select(SigninLinkRow).where(
            SigninLinkRow.token_hash == secret_hash(token),
            SigninLinkRow.used_at.is_(None),
            SigninLinkRow.expires_at > now,
        )
    )


def use_link(session: Session, token: str, now: datetime) -> SigninLinkRow | None:
    """Spend a link: the one UPDATE that marks it used decides, so of two clicks racing
    only one signs in. The link's row, or None if it was not live."""
    result = session.execute(
        update(SigninLinkRow)
        .where(
            SigninLinkRow.token_hash == secret_hash(token),
            SigninLinkRow.used_at.is_(None),
            SigninLinkRow.expires_at > now,
        )
        .values(used_at=now)
    )
    if not (isinstance(result, CursorResult) and result.rowcount):
        return None
    return session.get(SigninLinkRow, secret_hash(token))


def nonce_matches(link: SigninLinkRow, nonce: str | None) -> bool:
    import secrets

    return bool(nonce) and secrets.compare_digest(link.nonce_hash, secret_hash(nonce or ""))


# -- API tokens ----------------------------------------------------------------------------


def add_token(session: Session, user_id: int, name: str, token: str, at: datetime) -> ApiTokenRow:
    row = ApiTokenRow(
        user_id=user_id,
        name=name[:100],
        token_hash=secret_hash(token),
        prefix=token[:12],
        created_at=at,
    )
    session.add(row)
    session.flush()
    return row


def token_user(session: Session, token: str) -> tuple[UserRow, ApiTokenRow] | None:
    row = session.execute(
        select(UserRow, ApiTokenRow)
        .join(ApiTokenRow, ApiTokenRow.user_id == UserRow.id)
        .where(ApiTokenRow.token_hash == secret_hash(token))
    ).first()
    return (row[0], row[1]) if row else None


def touch_token(session: Session, token_id: int, at: datetime) -> None:
    session.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=at))


def tokens_of(session: Session, user_id: int) -> list[ApiTokenRow]:
    return list(
        session.scalars(
            select(ApiTokenRow).where(ApiTokenRow.user_id == user_id).order_by(ApiTokenRow.id)
        )
    )


def delete_token(session: Session, user_id: int, token_id: int) -> bool:
    result = session.execute(
        delete(ApiTokenRow).where(ApiTokenRow.user_id == user_id, ApiTokenRow.id == token_id)
    )
    return bool(isinstance(result, CursorResult) and result.rowcount)
