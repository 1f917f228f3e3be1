"""Building the messages we send: headers, multipart bodies, templates.

Bodies come from Jinja2 templates in ``templates/`` (HTML autoescaped, text not). Messages
are ``EmailMessage`` objects under the SMTP policy (CRLF, folded headers); header values
are set through the ``email`` package, which refuses CR/LF in them, so an address that
somehow slipped past validation still cannot inject a header.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from papersift.config import Settings

TEMPLATES = Path(__file__).parent / "templates"
# SMTP line endings; headers fold at spaces but long unbreakable values (the signed links of
# List-Unsubscribe) stay as they are up to RFC 5322's hard 998-character limit: with the
# default 78 the email package would turn them into encoded-words, which clients ignore.
POLICY = SMTP_POLICY.clone(max_line_length=998)


@lru_cache(maxsize=1)
def env() -> Environment:
    """The template environment (HTML templates autoescaped)."""
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, **context: object) -> str:
    return env().get_template(name).render(**context)


@lru_cache(maxsize=16)
def _sender(mail_from: str) -> tuple[str, str]:
    name, addr = parseaddr(mail_from)
    if not addr or "@" not in addr or any(c in mail_from for c in "\r\n"):
        raise ValueError(f"PAPERSIFT_MAIL_FROM is not a usable address: {mail_from!r}")
    return name, addr


def sender(settings: Settings) -> tuple[str, str]:
    """(display name, address) of ``settings.mail_from``."""
    return _sender(settings.mail_from)


def mail_domain(settings: Settings) -> str:
    return sender(settings)[1].rsplit("@", 1)[1]


def new_message(
    settings: Settings, to: str, subject: str, text: str, html: str | None = None,
    *, message_id: str | None = None, date: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative (text first, then HTML) message with the standard headers."""
    msg = EmailMessage(policy=POLICY)
    name, addr = sender(settings)
    local, domain = addr.rsplit("@", 1)
    msg["From"] = Address(display_name=name, username=local, domain=domain)
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = message_id or f"<{datetime.now(UTC):%Y%m%d%H%M%S%f}.papersift@{domain}>"
    msg["MIME-Version"] = "1.0"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def add_list_headers(msg: EmailMessage, settings: Settings, unsubscribe_link: str) -> None:
    """RFC 2369 / RFC 8058 headers: https and mailto unsubscribe, one-click POST."""
    _name, addr = sender(settings)
    token = unsubscribe_link.rsplit("token=", 1)[-1]
    mailto = f"mailto:{addr}?subject={quote('unsubscribe ' + token)}"
    msg["List-Unsubscribe"] = f"<{unsubscribe_link}>, <{mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["List-Id"] = f"papersift digest <digest.{mail_domain(settings)}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"


def confirmation_message(settings: Settings, email: str, confirm_link: str) -> EmailMessage:
    """Double opt-in: the link that turns a pending subscription on."""
    ctx = {"confirm_url": confirm_link, "base_url": settings.base_url, "email": email}
    return new_message(settings, email, "Confirm your papersift digest subscription",
                       render("confirm.txt", **ctx), render("confirm.html", **ctx))


def already_message(settings: Settings, email: str, manage_link: str,
                    unsubscribe_link: str) -> EmailMessage:
    """Sent when someone subscribes an address that is already confirmed: the owner
    learns of it and gets the manage link; the form itself reveals nothing."""
    ctx = {"manage_url": manage_link, "unsubscribe_url": unsubscribe_link,
           "base_url": settings.base_url, "email": email}
    return new_message(settings, email, "You are already subscribed to the papersift digest",
                       render("already.txt", **ctx), render("already.html", **ctx))
