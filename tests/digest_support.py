"""Helpers for the digest tests: a real SMTP server on 127.0.0.1 and private homes.

``SmtpCapture`` runs aiosmtpd in a thread and records every accepted message. Replies can
be scripted (``rcpt_replies`` / ``data_replies``: answered in order, then 250) and the
server can pause after it has stored a message and before it answers (``data_delay``),
which is how the kill -9 test makes the kill land while the client waits for the 250.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.controller import Controller

from .server_support import free_port as free_port  # one helper for every test

ROOT = Path(__file__).resolve().parents[1]
PAPERSIFT = [str(Path(sys.executable).with_name("papersift"))]  # the installed console script


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: tuple
    at: float

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=default_policy)  # type: ignore[return-value]


@dataclass
class _Handler:
    messages: list[Captured] = field(default_factory=list)
    rcpt_replies: deque = field(default_factory=deque)
    data_replies: deque = field(default_factory=deque)
    data_delay: float = 0.0
    delay_from: int = 1  # the delay applies from this message on (1 = every message)
    rcpt_seen: int = 0
    data_seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpt_seen += 1
            reply = self.rcpt_replies.popleft() if self.rcpt_replies else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.data_seen += 1
            reply = self.data_replies.popleft() if self.data_replies else None
        if reply:
            return reply
        with self.lock:
            self.messages.append(
                Captured(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or envelope.content),
                    tuple(session.peer),
                    time.monotonic(),
                )
            )
            number = len(self.messages)
        if self.data_delay and number >= self.delay_from:
            await asyncio.sleep(self.data_delay)
        return "250 Message accepted for delivery"


class SmtpCapture:
    """A loopback SMTP server that keeps what it receives (start/stop or ``with``)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = _Handler()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Captured]:
        with self.handler.lock:
            return list(self.handler.messages)

    def to(self, address: str) -> list[Captured]:
        return [m for m in self.messages if address in m.rcpt_tos]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Captured]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.02)
        raise AssertionError(f"expected {count} messages, got {len(self.messages)}")

    def start(self) -> SmtpCapture:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def copy_home(seeded: Path, dest: Path) -> Path:
    """A private, writable copy of a session home (database and indexes), or of a folder
    in one.

    Tried again when a file vanishes mid-copy: a search service another test opened on the
    source may still be checking its index in a thread, and SQLite's check of the catalog
    creates and removes the catalog's ``-wal``/``-shm`` files as it goes."""
    for attempt in range(5):
        try:
            shutil.copytree(seeded, dest)
            return dest
        except (shutil.Error, FileNotFoundError):
            if attempt == 4:
                raise
            shutil.rmtree(dest, ignore_errors=True)
            time.sleep(0.2)
    return dest


@contextmanager
def private_app(seeded: Path, dest: Path) -> Iterator:
    """The web app on a private copy of ``seeded``, mailing to a loopback SMTP server: what
    the fuzzing tests need so their votes and sign-ups never reach other tests."""
    from papersift.settings import load_settings
    from papersift.store.db import Database
    from papersift.web.app import create_app

    home = copy_home(seeded, dest)
    smtp = SmtpCapture().start()
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}").replace(smtp_url=smtp.url)
    db = Database(settings.db_url)
    try:
        yield create_app(settings, db=db, warm_search=False)
    finally:
        smtp.stop()
        db.dispose()


def cli_env(home: Path, smtp_url: str, db_url: str | None = None, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "PAPERSIFT_HOME": str(home),
            "PAPERSIFT_SMTP_URL": smtp_url,
            "PAPERSIFT_BASE_URL": "http://127.0.0.1:8000",
            **extra,
        }
    )
    if db_url:
        env["PAPERSIFT_DB"] = db_url
    else:
        env.pop("PAPERSIFT_DB", None)
    return env


def links_in(msg: EmailMessage) -> list[str]:
    """Every http(s) link in the text part."""
    import re

    body = msg.get_body(("plain",))
    text = body.get_content() if body else ""
    return re.findall(r"https?://\S+", text)
