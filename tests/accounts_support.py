"""Helpers for tests that need a signed-in reader: real rows, real sessions, real tokens
(made through the same services the web app uses; no mail)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from papersift.accounts import Account
from papersift.accounts import sessions as account_sessions
from papersift.settings import Settings
from papersift.store import users as user_store
from papersift.store.db import Database

from .digest_support import SmtpCapture


def make_account(db: Database, email: str, *, admin: bool = False, name: str = "") -> Account:
    """A new account row (no sign-in mail)."""
    with db.session() as session:
        return user_store.account_of(
            user_store.create_user(session, email, name=name, is_admin=admin)
        )


def sign_in(client: Any, db: Database, account: Account, *, days: int = 30) -> str:
    """Make a real server-side session for ``account`` and set its cookie on ``client``
    (a ``fastapi.testclient.TestClient`` or an ``httpx.Client``); returns the secret."""
    secret = account_sessions.start_session(db, account.id, days=days, agent="tests")
    client.cookies.set(account_sessions.SESSION_COOKIE, secret)
    return secret


def api_token(db: Database, account: Account, name: str = "test") -> str:
    """A real personal API token for ``account`` (send as ``Authorization: Bearer``)."""
    return account_sessions.new_token(db, account.id, name)


@dataclass
class AccountsServer:
    """The real app under uvicorn on 127.0.0.1 with accounts, mailing to aiosmtpd."""

    url: str
    settings: Settings
    db: Database
    smtp: SmtpCapture


@contextmanager
def app_in_thread(home: Path, **changes: Any) -> Iterator[AccountsServer]:
    """Serve ``home`` under uvicorn in a thread on 127.0.0.1 with ``changes`` to its settings
    and a loopback SMTP server; yields where it runs, and stops both afterwards."""
    import socket
    import threading
    import time

    import uvicorn

    from papersift.settings import load_settings
    from papersift.web.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    smtp = SmtpCapture().start()
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}").replace(
        **{"base_url": url, "smtp_url": smtp.url, **changes}
    )
    db = Database(settings.db_url)
    app = create_app(settings, db=db, warm_search=False)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield AccountsServer(url, settings, db, smtp)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        smtp.stop()
        db.dispose()


@contextmanager
def accounts_server(home: Path, **changes: Any) -> Iterator[AccountsServer]:
    """Serve ``home`` (a private copy) with ``changes`` to its settings (open sign-up by
    default), with a loopback SMTP server; yields where it runs."""
    with app_in_thread(home, **{"signup_policy": "open", **changes}) as server:
        yield server


def mailed_link(smtp: SmtpCapture, email: str, count: int = 1, timeout: float = 15) -> str:
    """The sign-in link of the ``count``-th mail to ``email`` (waits for it)."""
    import time

    from .digest_support import links_in

    deadline = time.monotonic() + timeout
    while len(smtp.to(email)) < count:
        assert time.monotonic() < deadline, f"no sign-in mail {count} for {email}"
        time.sleep(0.02)
    [link] = [u for u in links_in(smtp.to(email)[count - 1].message) if "/signin/link?" in u]
    return link
