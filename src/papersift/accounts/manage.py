"""What a reader (or an operator for them) does with an account as a whole: create it,
export everything held about it, delete it and all of it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from papersift.accounts import Account, normalize_email, policy
from papersift.accounts.export import erase_account, export_account
from papersift.digest import mail as digest_mail
from papersift.digest import outbox
from papersift.digest import subscriptions as subs
from papersift.digest.validation import ValidationError
from papersift.digest.validation import normalize_email as valid_email
from papersift.settings import Settings
from papersift.store import subscriptions as subscriber_store
from papersift.store import users as user_store
from papersift.store.db import Database

__all__ = [
    "add_account",
    "delete_account",
    "export_account",
    "find_account",
    "invite",
    "list_accounts",
    "subscription_of",
]


def add_account(db: Database, email: str, *, admin: bool = False, name: str = "") -> Account:
    """A new account (operator's ``users add``); ValueError for a bad or taken address.
    The first account of a deployment is an admin whatever ``admin`` says."""
    try:
        address = valid_email(email)
    except ValidationError as exc:
        raise ValueError("; ".join(exc.errors)) from None
    with db.session() as session:
        first = user_store.user_count(session) == 0
        try:
            row = user_store.create_user(session, address, name=name, is_admin=admin or first)
        except user_store.UserExists as exc:
            raise ValueError(str(exc)) from None
        account = user_store.account_of(row)
    policy.forget(db)
    return account


def find_account(db: Database, email: str) -> Account | None:
    with db.session() as session:
        row = user_store.user_by_email(session, email)
        return user_store.account_of(row) if row else None


def subscription_of(db: Database, account: Account) -> subs.Subscriber | None:
    """The digest subscription with the account's address, if there is one."""
    with db.session() as session:
        row = subscriber_store.by_email(session, normalize_email(account.email))
        return subs.Subscriber.from_row(row) if row else None


def delete_account(db: Database, user_id: int) -> bool:
    """Delete the account and everything held about it: every area's rows, its sessions,
    tokens and votes, and the digest subscription of its address. False if unknown."""
    with db.session() as session:
        user = user_store.user_by_id(session, user_id)
        if user is None:
            return False
        email = user.email
        erase_account(session, user_id)
        user_store.delete_user(session, user_id)
    sub = None
    with db.session() as session:
        row = subscriber_store.by_email(session, email)
        sub = row.id if row else None
    if sub is not None:
        subs.remove(db, sub)
    policy.forget(db)
    return True


def export(db: Database, user_id: int) -> dict[str, Any]:
    """Everything papersift holds about the account (see ``accounts.export``)."""
    return export_account(db, user_id)


INVITE_KIND = "invite"


def invite(
    db: Database, settings: Settings, email: str, invited_by: int | None = None
) -> int | None:
    """Let ``email`` sign up under the invite-only policy and write an invitation mail to
    the outbox (same transaction). The outbox id, or None when the address was invited
    already or has an account (nothing is mailed twice). ValueError for a bad address."""
    try:
        address = valid_email(email)
    except ValidationError as exc:
        raise ValueError("; ".join(exc.errors)) from None
    with db.session() as session:
        if user_store.user_by_email(session, address) is not None:
            return None
        if not user_store.add_invite(session, address, invited_by):
            return None
        url = f"{settings.base_url}/signin?{urlencode({'email': address})}"
        text = (
            f"You are invited to papersift at {settings.base_url}.\n\n"
            f"Sign in with this address ({address}) here: {url}\n"
            "We mail you a link that signs you in; there is no password.\n"
        )
        msg = digest_mail.new_message(settings, address, "Your invitation to papersift", text)
        return outbox.queue(session, msg, kind=INVITE_KIND, link=url)


def list_accounts(db: Database) -> list[dict[str, Any]]:
    """Every account, oldest first, as the CLI lists them."""
    with db.session() as session:
        return [
            {
                "id": u.id,
                "email": u.email,
                "name": u.name,
                "is_admin": u.is_admin,
                "created_at": u.created_at,
                "last_seen_at": u.last_seen_at,
            }
            for u in user_store.list_users(session)
        ]


def list_invites(db: Database) -> list[dict[str, Any]]:
    with db.session() as session:
        return [
            {"email": i.email, "created_at": i.created_at, "used_at": i.used_at}
            for i in user_store.list_invites(session)
        ]


def make_admin(db: Database, user_id: int) -> None:
    with db.session() as session:
        user_store.set_admin(session, user_id, True)
