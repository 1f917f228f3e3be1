"""Writing the messages we send: headers, multipart bodies, templates, digests.

Bodies come from Jinja2 templates in ``templates/`` (HTML autoescaped, text not). Messages
are ``EmailMessage`` objects under the SMTP policy (CRLF, folded headers); header values
are set through the ``email`` package, which refuses CR/LF in them, so an address that
somehow slipped past validation still cannot inject a header.
"""

from __future__ import annotations

import hashlib
import secrets
import textwrap
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from papersift.digest import tokens
from papersift.model import Paper
from papersift.settings import Settings

if TYPE_CHECKING:
    from papersift.digest.compose import Digest

TEMPLATES = Path(__file__).parent / "templates"
MAX_LINE = 998  # RFC 5322's hard limit for a line of a message
SNIPPET = 300  # characters of an abstract shown in a digest


class _CachedHeaderRegistry(HeaderRegistry):
    """The stdlib registry creates a new class for every header it parses; building a
    digest sets about thirty headers, so the classes are made once and reused."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# Messages are built under the SMTP policy (CRLF; quoted-printable lines of 76) and put
# on the wire by ``smtp.wire_bytes``, which folds headers at 998 instead of 78: long
# unbreakable values such as List-Unsubscribe's signed links would otherwise be turned
# into RFC 2047 encoded-words, which mail clients do not decode in that header.
POLICY = SMTP_POLICY.clone(header_factory=_CachedHeaderRegistry())


def _cte(body: str) -> str:
    """7bit when the body is ASCII with lines within the limit (nothing to encode, the
    common case), quoted-printable otherwise (non-ASCII names, very long lines)."""
    if body.isascii() and all(len(line) <= MAX_LINE for line in body.splitlines()):
        return "7bit"
    return "quoted-printable"


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
    """One template rendered (HTML autoescaped)."""
    return env().get_template(name).render(**context)


@lru_cache(maxsize=16)
def _sender(mail_from: str, setting: str = "PAPERSIFT_MAIL_FROM") -> tuple[str, str]:
    name, addr = parseaddr(mail_from)
    if not addr or "@" not in addr or any(c in mail_from for c in "\r\n"):
        raise ValueError(f"{setting} is not a usable address: {mail_from!r}")
    return name, addr


def sender(settings: Settings) -> tuple[str, str]:
    """(display name, address) of ``settings.mail_from``."""
    return _sender(settings.mail_from)


def check_addresses(settings: Settings) -> None:
    """ValueError naming the setting if a configured address is unusable (before a run)."""
    sender(settings)
    if settings.unsubscribe_mailto:
        _sender(settings.unsubscribe_mailto, "PAPERSIFT_UNSUBSCRIBE_MAILTO")


def mail_domain(settings: Settings) -> str:
    """The sender's domain: Message-IDs and the List-Id are made under it."""
    return sender(settings)[1].rsplit("@", 1)[1]


@lru_cache(maxsize=256)
def _constant(name: str, value: str) -> Any:
    """A parsed header for a value that repeats in every mail of a run: parsing headers is
    the costliest part of building a message, and a parsed header is immutable."""
    return POLICY.header_factory(name, value)


def new_message(
    settings: Settings,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    *,
    message_id: str | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative (text first, then HTML) message with the standard headers."""
    msg = EmailMessage(policy=POLICY)
    name, addr = sender(settings)
    domain = addr.rsplit("@", 1)[1]
    msg["From"] = _constant("From", str(Address(display_name=name, addr_spec=addr)))
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date or datetime.now(UTC)  # a datetime needs no parsing
    msg["Message-ID"] = message_id or f"<{datetime.now(UTC):%Y%m%d%H%M%S%f}.papersift@{domain}>"
    msg["MIME-Version"] = _constant("MIME-Version", "1.0")
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_cte(text))
    if html is not None:
        # Non-ASCII as character references: the HTML part is then plain ASCII.
        html = html.encode("ascii", "xmlcharrefreplace").decode("ascii")
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=_cte(html))
        # Our own random boundary: otherwise the generator makes one and compiles a regex
        # to scan every body for it. 128 random bits cannot occur in a body by accident,
        # and a paper's text cannot aim at a value chosen after it was written.
        msg.set_boundary(f"=_papersift_{secrets.token_hex(16)}")
    return msg


def add_list_headers(msg: EmailMessage, settings: Settings, unsubscribe_link: str) -> None:
    """RFC 2369 / RFC 8058 headers: https unsubscribe with one-click POST, and a mailto
    only to an address the operator routes into ``subscribers unsubscribe-mail`` (a mailto
    that nobody reads would lose the request)."""
    targets = [f"<{unsubscribe_link}>"]
    if settings.unsubscribe_mailto:
        _name, addr = _sender(settings.unsubscribe_mailto, "PAPERSIFT_UNSUBSCRIBE_MAILTO")
        token = unsubscribe_link.rsplit("token=", 1)[-1]
        targets.append(f"<mailto:{addr}?subject={quote('unsubscribe ' + token)}>")
    msg["List-Unsubscribe"] = ", ".join(targets)
    msg["List-Unsubscribe-Post"] = _constant("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    msg["List-Id"] = _constant("List-Id", f"papersift digest <digest.{mail_domain(settings)}>")
    msg["Auto-Submitted"] = _constant("Auto-Submitted", "auto-generated")
    msg["Precedence"] = _constant("Precedence", "bulk")


def confirmation_message(settings: Settings, email: str, confirm_link: str) -> EmailMessage:
    """Double opt-in: the link that turns a pending subscription on."""
    ctx = {"confirm_url": confirm_link, "base_url": settings.base_url, "email": email}
    return new_message(
        settings,
        email,
        "Confirm your papersift digest subscription",
        render("confirm.txt", **ctx),
        render("confirm.html", **ctx),
    )


def already_message(
    settings: Settings, email: str, manage_link: str, unsubscribe_link: str
) -> EmailMessage:
    """Sent when someone subscribes an address that is already confirmed: the owner
    learns of it and gets the manage link; the form itself reveals nothing."""
    ctx = {
        "manage_url": manage_link,
        "unsubscribe_url": unsubscribe_link,
        "base_url": settings.base_url,
        "email": email,
    }
    return new_message(
        settings,
        email,
        "You are already subscribed to the papersift digest",
        render("already.txt", **ctx),
        render("already.html", **ctx),
    )


# -- digests --------------------------------------------------------------------------------
def paper_url(settings: Settings, paper_id: str) -> str:
    """A paper's page on the web app: every link of a digest points there."""
    return f"{settings.base_url}/papers/{quote(paper_id, safe='/')}"


def _authors(names: list[str]) -> str:
    if len(names) > 3:
        return ", ".join(names[:3]) + " et al."
    return ", ".join(names)


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= SNIPPET:
        return text
    cut = text[:SNIPPET].rsplit(" ", 1)[0]
    return cut.rstrip(",.;:") + "..."  # ASCII keeps the text part unencoded (7bit)


def _item(settings: Settings, paper: Paper) -> dict[str, object]:
    meta = []
    if paper.published:
        meta.append(paper.published.isoformat())
    if paper.categories:
        meta.append(", ".join(paper.categories[:3]))
    snippet = _snippet(paper.abstract)
    return {
        "id": paper.id,
        "title": " ".join(paper.title.split()),
        "url": paper_url(settings, paper.id),
        "authors": _authors(paper.authors),
        "meta": " | ".join(meta),
        "snippet": snippet,
        "snippet_lines": textwrap.wrap(snippet, 74, break_on_hyphens=False),
        "pdf_url": paper.pdf_url if (paper.pdf_url or "").startswith("http") else None,
        "code_url": paper.code_url if (paper.code_url or "").startswith("http") else None,
    }


def message_id(settings: Settings, digest: Digest) -> str:
    """Deterministic per (subscriber, period): a resend after an uncertain delivery carries
    the same Message-ID, which many receivers use to drop the duplicate."""
    sub = digest.subscriber
    tag = hashlib.blake2b(sub.email.encode(), digest_size=4).hexdigest()
    return f"<digest.{digest.period}.{sub.id}.{tag}@{mail_domain(settings)}>"


def subject_of(digest: Digest) -> str:
    """The first paper's title and how many follow, so the inbox line says what is new."""
    kind = "weekly" if digest.subscriber.frequency == "weekly" else "daily"
    ids = digest.paper_ids
    if not ids:
        return f"papersift {kind}: nothing new this time"
    first = " ".join(digest.sections[0].papers[0].title.split())
    if len(first) > 70:
        first = first[:69].rstrip() + "\u2026"
    more = f" (+{len(ids) - 1} more)" if len(ids) > 1 else ""
    return f"papersift {kind}: {first}{more}"


def heading_of(digest: Digest) -> str:
    """The line above the papers: the day, or the week's Monday for weekly digests."""
    if digest.subscriber.frequency == "weekly":
        monday = digest.day - timedelta(days=digest.day.weekday())
        return f"Your papers for the week of {monday.day} {monday:%B %Y}"
    return f"Your papers for {digest.day:%A}, {digest.day.day} {digest.day:%B %Y}"


class MessageBuilder:
    """Builds digest messages for one run. A paper's HTML and text fragments are rendered
    once and reused for every subscriber who gets it: most papers go to many."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fragments: dict[str, tuple[Markup, str, str]] = {}

    def _fragment(self, paper: Paper) -> tuple[Markup, str, str]:
        """(HTML, text, title) of one paper's entry."""
        hit = self._fragments.get(paper.id)
        if hit is None:
            item = _item(self.settings, paper)
            hit = (
                Markup(render("_item.html", item=item)),
                render("_item.txt", item=item),
                str(item["title"]),
            )
            if len(self._fragments) < 100_000:
                self._fragments[paper.id] = hit
        return hit

    def build(self, digest: Digest, *, now: datetime | None = None) -> EmailMessage:
        """The multipart/alternative mail for a digest, with list headers and a stable id."""
        settings = self.settings
        sub = digest.subscriber
        unsubscribe = tokens.unsubscribe_url(settings, sub.id, sub.email)
        sections = []
        titles: list[str] = []
        for sec in digest.sections:
            frags = [self._fragment(p) for p in sec.papers]
            titles += [f[2] for f in frags]
            # A reader section says where it comes from and, per paper, why (the paper's
            # own fragment is shared by every reader, the reason is this reader's).
            whys = [" ".join(sec.reasons.get(p.id, "").split()) for p in sec.papers]
            sections.append(
                {
                    "title": sec.title,
                    "html": [f[0] for f in frags],
                    "text": [f[1] for f in frags],
                    "why": whys,
                    "why_lines": [textwrap.wrap(w, 74, break_on_hyphens=False) for w in whys],
                    "note": " ".join(sec.note.split()),
                    "link": sec.link if sec.link.startswith("http") else "",
                }
            )
        subject = subject_of(digest)
        ctx = {
            "subject": subject,
            "heading": heading_of(digest),
            "sections": sections,
            "preheader": "; ".join(titles[:3])[:140] if titles else "Nothing new this time",
            "email": sub.email,
            "frequency": sub.frequency,
            "base_url": settings.base_url,
            "manage_url": tokens.manage_url(settings, sub.id, sub.email),
            "unsubscribe_url": unsubscribe,
        }
        msg = new_message(
            settings,
            sub.email,
            subject,
            render("digest.txt", **ctx),
            render("digest.html", **ctx),
            message_id=message_id(settings, digest),
            date=now,
        )
        add_list_headers(msg, settings, unsubscribe)
        return msg


def build_message(
    settings: Settings, digest: Digest, *, now: datetime | None = None
) -> EmailMessage:
    """One digest message (a run uses one ``MessageBuilder`` for all of them)."""
    return MessageBuilder(settings).build(digest, now=now)
