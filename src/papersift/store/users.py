"""Users and invitations: the rows behind reader accounts (see ``schema_accounts``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.accounts import Account, normalize_email, voter_key
from papersift.store.schema import VoteRow
from papersift.store.schema_accounts import (
    ApiTokenRow,
    InviteRow,
    SigninLinkRow,
    UserRow,
    UserSessionRow,
)


class UserExists(ValueError):
    """An account with this address exists already."""


def account_of(row: UserRow) -> Account:
    return Account(id=row.id, email=row.email, name=row.name or "", is_admin=bool(row.is_admin))


def create_user(session: Session, email: str, *, name: str = "", is_admin: bool = False) -> UserRow:
    """A new user (address normalized); UserExists when the address has one already."""
    row = UserRow(
        email=normalize_email(email),
        name=name[:200],
        is_admin=is_admin,
        created_at=datetime.now(UTC),
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise UserExists(f"an account for {row.email} exists already") from None
    return row


def user_by_email(session: Session, email: str) -> UserRow | None:
    return session.scalar(select(UserRow).where(UserRow.email == normalize_email(email)))


def user_by_id(session: Session, user_id: int) -> UserRow | None:
    return session.get(UserRow, user_id)


def user_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(UserRow)) or 0


def list_users(session: Session) -> list[UserRow]:
    return list(session.scalars(select(UserRow).order_by(UserRow.id)))


def set_admin(session: Session, user_id: int, is_admin: bool) -> None:
    session.execute(update(UserRow).where(UserRow.id == user_id).values(is_admin=is_admin))


def touch_user(session: Session, user_id: int, at: datetime) -> None:
    session.execute(update(UserRow).where(UserRow.id == user_id).values(last_seen_at=at))


def delete_user(session: Session, user_id: int) -> bool:
    """Remove the user and what accounts keep about them (sessions, tokens, votes,
    sign-in links and the invitation of the address);
    other areas' rows go by their ``ON DELETE CASCADE`` and their own deleters."""
    row = session.get(UserRow, user_id)
    if row is not None:  # links and an invitation name the address: they go too
        session.execute(delete(SigninLinkRow).where(SigninLinkRow.email == row.email))
        session.execute(delete(InviteRow).where(InviteRow.email == row.email))
    session.execute(delete(UserSessionRow).where(UserSessionRow.user_id == user_id))
    session.execute(delete(ApiTokenRow).where(ApiTokenRow.user_id == user_id))
    session.execute(delete(VoteRow).where(VoteRow.visitor_id == voter_key(user_id)))
    session.execute(
        update(InviteRow).where(InviteRow.invited_by == user_id).values(invited_by=None)
    )
    result = session.execute(delete(UserRow).where(UserRow.id == user_id))
    return bool(isinstance(result, CursorResult) and result.rowcount)


# -- invitations ---------------------------------------------------------------------------


def add_invite(session: Session, email: str, invited_by: int | None = None) -> bool:
    """Allow ``email`` to sign up under the invite-only policy; False if already invited."""
    address = normalize_email(email)
    if session.get(InviteRow, address) is not None:
        return False
    session.add(InviteRow(email=address, invited_by=invited_by, created_at=datetime.now(UTC)))
    session.flush()
    return True


def invite_for(session: Session, email: str) -> InviteRow | None:
    return session.get(InviteRow, normalize_email(email))


def mark_invite_used(session: Session, email: str, at: datetime) -> None:
    session.execute(
        update(InviteRow).where(InviteRow.email == normalize_email(email)).values(used_at=at)
    )


def list_invites(session: Session) -> list[InviteRow]:
    return list(session.scalars(select(InviteRow).order_by(InviteRow.created_at)))


def delete_invite(session: Session, email: str) -> bool:
    result = session.execute(delete(InviteRow).where(InviteRow.email == normalize_email(email)))
    return bool(isinstance(result, CursorResult) and result.rowcount)
