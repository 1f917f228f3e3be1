"""What a reader (or an operator for them) does with an account as a whole: create it,
export everything held about it, delete it and all of it."""

from __future__ import annotations

from typing import Any

from papersift.accounts import Account, normalize_email, policy
from papersift.accounts.export import erase_account, export_account
from papersift.digest import subscriptions as subs
from papersift.digest.validation import ValidationError
from papersift.digest.validation import normalize_email as valid_email
from papersift.store import subscriptions as subscriber_store
from papersift.store import users as user_store
from papersift.store.db import Database

__all__ = ["add_account", "delete_account", "export_account", "find_account", "subscription_of"]


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
