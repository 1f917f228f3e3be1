"""Signed links in mails: confirm (7 days), manage (``manage_link_days``), unsubscribe (never
expires: one click must always stop the mail).

Each purpose has its own salt, so an unsubscribe token cannot confirm and a manage token
cannot be replayed as anything else. A token names the subscriber id and the address: if
the subscription is removed and the address signs up again (new id), old links stop
working. Tokens carry no other state, so nothing needs to be stored to check them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

from papersift.keys import signing_key
from papersift.settings import Settings

CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"
MANAGE = "manage"
# None = no expiry (one-click unsubscribe must keep working); a manage link lives
# ``Settings.manage_link_days`` days. The signature and the id+address binding protect both.
MAX_AGE: dict[str, timedelta | None] = {CONFIRM: timedelta(days=7), UNSUBSCRIBE: None, MANAGE: None}
MAX_TOKEN_LEN = 1024


class TokenError(ValueError):
    """A link that is forged, damaged, for another purpose, or expired."""


class _ClockSigner(TimestampSigner):
    """A timestamp signer whose clock can be set: lets tests mint already-expired links."""

    def __init__(self, *args: Any, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


@lru_cache(maxsize=64)
def _cached(secret: str, purpose: str, clock: Callable[[], float]) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret,
        salt=f"papersift.digest.{purpose}",
        signer=_ClockSigner,
        signer_kwargs={"clock": clock},
    )


_secrets: dict[str, str] = {}


def _secret(settings: Settings) -> str:
    """The signing key; read once per process (a digest run signs two links per mail, and
    the key is in a file or, for a PostgreSQL deployment, in the database)."""
    if settings.secret:
        return settings.secret
    where = f"{settings.home}|{settings.db_url}"
    if where not in _secrets:
        _secrets[where] = signing_key(settings)
    return _secrets[where]


def _serializer(
    settings: Settings, purpose: str, clock: Callable[[], float] = time.time
) -> URLSafeTimedSerializer:
    if purpose not in MAX_AGE:
        raise ValueError(f"unknown token purpose {purpose!r}")
    if clock is time.time:  # the common case is cached
        return _cached(_secret(settings), purpose, clock)
    return _cached.__wrapped__(_secret(settings), purpose, clock)


def make_token(
    settings: Settings,
    purpose: str,
    subscriber_id: int,
    email: str,
    *,
    now: datetime | None = None,
) -> str:
    """A URL-safe signed token for one subscriber and purpose (``now`` is for tests)."""
    clock = (lambda: now.timestamp()) if now else time.time
    return _serializer(settings, purpose, clock).dumps({"s": subscriber_id, "e": email})


def read_token(settings: Settings, purpose: str, token: object) -> tuple[int, str]:
    """(subscriber id, address) from a token, or TokenError with a user-facing reason."""
    if not isinstance(token, str) or not token.strip():
        raise TokenError("the link is missing its token")
    token = token.strip()
    if len(token) > MAX_TOKEN_LEN:
        raise TokenError("the link is not valid (token too long)")
    max_age = _max_age(settings, purpose)
    try:
        data = _serializer(settings, purpose).loads(
            token, max_age=int(max_age.total_seconds()) if max_age else None
        )
    except SignatureExpired:
        days = max_age.days if max_age else 0
        raise TokenError(
            f"the link has expired (links are valid for {days} days); please subscribe again"
        ) from None
    except BadData:
        raise TokenError("the link is not valid (it was damaged or forged)") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("s"), int)
        or not isinstance(data.get("e"), str)
    ):
        raise TokenError("the link is not valid")
    return data["s"], data["e"]


def _max_age(settings: Settings, purpose: str) -> timedelta | None:
    if purpose == MANAGE:
        return timedelta(days=settings.manage_link_days)
    return MAX_AGE[purpose]


def token_from_link(text: str) -> str:
    """The token in a pasted link (``...?token=...``), or the text itself if it is a token."""
    text = text.strip()
    if "token=" in text:
        values = parse_qs(urlsplit(text).query).get("token")
        if values:
            return values[0]
    return text


def link(settings: Settings, path: str, token: str) -> str:
    """A page of the web app with a token in its query."""
    return f"{settings.base_url}{path}?token={token}"


def confirm_url(
    settings: Settings, subscriber_id: int, email: str, *, now: datetime | None = None
) -> str:
    """The double opt-in link (expires after ``MAX_AGE``; ``now`` is for tests)."""
    return link(
        settings,
        "/subscriptions/confirm",
        make_token(settings, CONFIRM, subscriber_id, email, now=now),
    )


def unsubscribe_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The one-click unsubscribe link of every digest (never expires)."""
    return link(settings, "/unsubscribe", make_token(settings, UNSUBSCRIBE, subscriber_id, email))


def manage_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The preferences page of a subscriber (expires after ``manage_link_days``)."""
    return link(
        settings, "/subscriptions/manage", make_token(settings, MANAGE, subscriber_id, email)
    )
