"""Sending mail over SMTP: one reused connection, a rate limit, retries with backoff.

``PAPERSIFT_SMTP_URL`` forms::

    smtp://host:25                    plain (a local MTA)
    smtp://user:pass@host:587?starttls=1
    smtps://user:pass@host:465        TLS from the first byte
    ...&timeout=30&insecure=1         socket timeout; skip certificate checks (testing only)

Failures are sorted by what they mean for the message, because the digest ledger must know
whether a message may have been delivered:

- ``SmtpTemporary``: 4xx, refused connection, timeout or disconnect *before* the message
  body was sent. Nothing was delivered; retried here with exponential backoff.
- ``SmtpPermanent``: 5xx to RCPT or DATA. Nothing was delivered; the address (or this
  message) is refused, so it is the subscriber's problem, recorded per subscriber.
- ``SmtpFatal``: the server refuses *us* (authentication, 5xx to MAIL FROM, TLS setup).
  Nothing was delivered and no other message will go either: the run stops.
- ``SmtpAmbiguous``: the connection broke while the body was in flight or before the
  server's reply to it. The server may have accepted the message: never retried.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from urllib.parse import parse_qs, unquote, urlsplit


def wire_bytes(msg: EmailMessage) -> bytes:
    """The bytes to send: CRLF, headers folded at RFC 5322's 998 rather than 78 (long
    links stay intact instead of becoming encoded-words); bodies are left as encoded."""
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n", max_line_length=998))


class SmtpError(Exception):
    """A failed delivery; ``code`` is the SMTP reply code when the server gave one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class SmtpTemporary(SmtpError):
    """Not delivered; worth retrying later."""


class SmtpUnavailable(SmtpTemporary):
    """Not delivered: the server cannot be reached at all (after retries)."""


class SmtpPermanent(SmtpError):
    """Not delivered; the recipient or message is refused for good."""


class SmtpFatal(SmtpError):
    """Not delivered; the server refuses the sender or our credentials: stop the run."""


class SmtpAmbiguous(SmtpError):
    """The connection failed while the message was being handed over: maybe delivered."""


class SmtpConfigError(ValueError):
    """PAPERSIFT_SMTP_URL cannot be used."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    ssl: bool = False
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0
    insecure: bool = False

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse an ``smtp://`` or ``smtps://`` URL; SmtpConfigError says what is wrong."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("smtp", "smtps"):
            raise SmtpConfigError(f"SMTP URL must start with smtp:// or smtps://, got {url!r}")
        if not parts.hostname:
            raise SmtpConfigError(f"SMTP URL has no host: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"starttls", "timeout", "insecure"}
        if unknown:
            raise SmtpConfigError(f"unknown SMTP URL option(s): {', '.join(sorted(unknown))}")
        try:
            port = parts.port or (465 if parts.scheme == "smtps" else 25)
            timeout = float(query.get("timeout", 30))
        except ValueError as exc:
            raise SmtpConfigError(f"bad port or timeout in SMTP URL: {exc}") from None
        flag = lambda name: query.get(name, "0").lower() in ("1", "true", "yes")  # noqa: E731
        return cls(
            host=parts.hostname,
            port=port,
            ssl=parts.scheme == "smtps",
            starttls=flag("starttls"),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=timeout,
            insecure=flag("insecure"),
        )

    def describe(self) -> str:
        """Where we send, without the password."""
        scheme = "smtps" if self.ssl else "smtp"
        user = f"{self.user}@" if self.user else ""
        return f"{scheme}://{user}{self.host}:{self.port}{' (STARTTLS)' if self.starttls else ''}"


class RateLimiter:
    """At most ``rate`` messages per second (0 = unlimited), evenly spaced."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


def _text(reply: bytes | str | None) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return reply or ""


class Mailer:
    """Delivers messages over one SMTP connection, reconnecting when it breaks.

    ``send`` retries temporary failures ``retries`` times with exponential backoff
    (``backoff`` seconds doubling up to ``max_backoff``); ``before_data`` runs right before
    the message body goes out (the ledger marks the digest "sending" there), and
    ``data_refused`` runs when the server then refused the body with a reply code (so the
    ledger can step back: the message certainly was not delivered).
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        rate: float = 0.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        local_hostname: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.limiter = RateLimiter(rate)
        self.retries = max(0, retries)
        self.backoff = max(0.0, backoff)
        self.max_backoff = max_backoff
        self.local_hostname = local_hostname or socket.gethostname() or "localhost"
        self._sleep = sleep
        self._conn: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self.connections = 0  # how many times we connected: one per run when all goes well

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        context = ssl.create_default_context()
        if cfg.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            if cfg.ssl:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    cfg.host,
                    cfg.port,
                    timeout=cfg.timeout,
                    context=context,
                    local_hostname=self.local_hostname,
                )
            else:
                conn = smtplib.SMTP(
                    cfg.host, cfg.port, timeout=cfg.timeout, local_hostname=self.local_hostname
                )
        except smtplib.SMTPConnectError as exc:
            raise SmtpUnavailable(
                f"cannot connect to {cfg.describe()}: {exc}", exc.smtp_code
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise SmtpUnavailable(f"cannot connect to {cfg.describe()}: {exc}") from exc
        try:
            conn.ehlo()
            if cfg.starttls:
                conn.starttls(context=context)
                conn.ehlo()
            if cfg.user:
                conn.login(cfg.user, cfg.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            self._drop(conn)
            raise SmtpFatal(
                f"SMTP login as {cfg.user!r} refused: {_text(exc.smtp_error)}", exc.smtp_code
            ) from exc
        except (smtplib.SMTPNotSupportedError, ssl.SSLError) as exc:
            self._drop(conn)
            raise SmtpFatal(f"TLS setup with {cfg.describe()} failed: {exc}") from exc
        except smtplib.SMTPResponseException as exc:
            self._drop(conn)
            cls = SmtpTemporary if 400 <= exc.smtp_code < 500 else SmtpFatal
            raise cls(
                f"{cfg.describe()} refused the session: {exc.smtp_code} {_text(exc.smtp_error)}",
                exc.smtp_code,
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            self._drop(conn)
            raise SmtpUnavailable(f"connection to {cfg.describe()} failed: {exc}") from exc
        self.connections += 1
        return conn

    @staticmethod
    def _drop(conn: smtplib.SMTP | None) -> None:
        if conn is None:
            return
        try:
            conn.close()
        except Exception:
            pass

    def close(self) -> None:
        """QUIT politely; a broken connection is just closed."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except Exception:
                self._drop(conn)

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one attempt --------------------------------------------------------------------
    def _attempt(
        self,
        sender: str,
        recipients: list[str],
        payload: bytes,
        before_data: Callable[[], None] | None,
        data_refused: Callable[[], None] | None,
    ) -> None:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        try:
            code, reply = conn.mail(sender)
            if code != 250:
                conn.rset()
                if 400 <= code < 500:
                    raise SmtpTemporary(f"MAIL FROM refused: {code} {_text(reply)}", code)
                raise SmtpFatal(f"sender {sender} refused: {code} {_text(reply)}", code)
            for rcpt in recipients:
                code, reply = conn.rcpt(rcpt)
                if code not in (250, 251):
                    conn.rset()
                    cls = SmtpTemporary if 400 <= code < 500 else SmtpPermanent
                    raise cls(f"recipient {rcpt} refused: {code} {_text(reply)}", code)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop(conn)
            self._conn = None
            raise SmtpTemporary(f"connection lost before the message was sent: {exc}") from exc
        if before_data:
            before_data()
        answer: bytes | str
        try:
            # data() raises SMTPDataError when DATA itself is refused, but only *returns*
            # the reply to the message body: that code must be checked here.
            code, answer = conn.data(payload)
        except smtplib.SMTPDataError as exc:  # a reply code: the server did not take it
            code, answer = exc.smtp_code, exc.smtp_error
        except (smtplib.SMTPException, OSError) as exc:
            self._drop(conn)
            self._conn = None
            raise SmtpAmbiguous(
                f"connection failed while the message was being sent, it may "
                f"or may not have been delivered: {exc!r}"
            ) from exc
        if code == 250:
            return
        if data_refused:
            data_refused()
        if code == 421:
            self._drop(conn)
            self._conn = None
        else:
            try:
                conn.rset()
            except (smtplib.SMTPException, OSError):
                self._drop(conn)
                self._conn = None
        cls = SmtpTemporary if 400 <= code < 500 else SmtpPermanent
        raise cls(f"message refused: {code} {_text(answer)}", code)

    # -- public ---------------------------------------------------------------------------
    def send(
        self,
        msg: EmailMessage,
        *,
        before_data: Callable[[], None] | None = None,
        data_refused: Callable[[], None] | None = None,
    ) -> int:
        """Deliver ``msg`` to its To/Cc recipients; returns the number of attempts made.

        Raises SmtpPermanent, SmtpFatal, SmtpAmbiguous, SmtpUnavailable (could not connect
        after all retries) or SmtpTemporary (still refused after all retries).
        """
        sender = getaddresses([str(msg["Sender"] or msg["From"])])[0][1]
        recipients = [
            a
            for _n, a in getaddresses(
                [str(v) for v in msg.get_all("To", []) + msg.get_all("Cc", [])]
            )
            if a
        ]
        if not sender or not recipients:
            raise SmtpPermanent("message has no sender or no recipient")
        payload = wire_bytes(msg)
        with self._lock:
            self.limiter.wait()
            delay = self.backoff
            for attempt in range(1, self.retries + 2):
                try:
                    self._attempt(sender, recipients, payload, before_data, data_refused)
                    return attempt
                except SmtpTemporary:
                    if attempt > self.retries:
                        raise
                    self._sleep(min(delay, self.max_backoff))
                    delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover
