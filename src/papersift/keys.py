"""The signing key of a deployment: the one function every signer gets its key from.

``secret`` set: that. A SQLite home: a key file created once in the home
(:meth:`Settings.secret_key`). A PostgreSQL deployment: a key row in the database, created
once by whichever host asks first, so a link signed on one host verifies on every other.
"""

from __future__ import annotations

import secrets
import threading

from papersift.settings import Settings
from papersift.store import keys as key_store
from papersift.store.db import Database

DEFAULT = "default"

_cache: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def uses_database(settings: Settings) -> bool:
    """True when the key lives in the database (a server database shared by hosts)."""
    return settings.db_url.startswith(("postgresql", "postgres"))


def signing_key(settings: Settings, db: Database | None = None) -> str:
    """The key for signed cookies, CSRF tokens and mail links (cached per process).

    ``db``: the open database, if the caller has one; otherwise one is opened briefly
    when the key lives in the database.
    """
    if settings.secret:
        return settings.secret
    if not uses_database(settings):
        return settings.secret_key()
    cache_key = (settings.db_url, DEFAULT)
    with _lock:
        key = _cache.get(cache_key)
        if key:
            return key
        own = db is None
        database = db or Database(settings.db_url, migrate=False)
        try:
            with database.session() as session:
                key = key_store.get_or_create(session, DEFAULT, secrets.token_urlsafe(32))
        finally:
            if own:
                database.dispose()
        _cache[cache_key] = key
        return key


def forget() -> None:
    """Drop cached keys (tests that switch deployments in one process)."""
    with _lock:
        _cache.clear()
