"""Reader accounts: who is signed in, sign-in by mailed link, sessions, API tokens.

``Account`` is what everything above the store sees of a signed-in reader.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Account", "normalize_email", "voter_key"]


@dataclass(frozen=True)
class Account:
    """A signed-in reader (what web handlers, services and templates get)."""

    id: int
    email: str
    name: str
    is_admin: bool


def normalize_email(email: str) -> str:
    """How an address is stored and compared: stripped and lower-cased."""
    return email.strip().lower()


def voter_key(account_id: int) -> str:
    """The voter an account's votes are stored under in ``votes``. Visitor ids are
    URL-safe base64 (no colon), so an account key never collides with a visitor's."""
    return f"acct:{account_id}"
