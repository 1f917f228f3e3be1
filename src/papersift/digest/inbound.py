"""Unsubscribe requests that arrive by mail: the ``mailto:`` of List-Unsubscribe.

RFC 2369's mailto unsubscribe only works if something reads that mailbox, so digests carry
one only when the operator names an address (``PAPERSIFT_UNSUBSCRIBE_MAILTO``) and routes
it into ``papersift subscribers unsubscribe-mail`` (an /etc/aliases pipe, procmail, a
fetchmail mda...). The message is read here: the signed unsubscribe token is in the subject
(where our mailto puts it) or anywhere in a text part (a forwarded digest, a pasted link).
The token is the proof, as for the one-click link; who sent the mail does not matter.
"""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser

from papersift.digest import subscriptions as subs
from papersift.digest.tokens import TokenError
from papersift.settings import Settings
from papersift.store.db import Database

MAX_MESSAGE = 1_000_000  # bytes; an unsubscribe request is a few hundred
MAX_CANDIDATES = 20
# itsdangerous URL-safe timed tokens: payload.timestamp.signature, base64url pieces; a
# payload it compressed starts with one more dot
_TOKEN = re.compile(r"\.?[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}")


class InboundError(ValueError):
    """The message cannot be acted on; the text says why (for the sender's bounce)."""


def candidate_tokens(raw: bytes) -> list[str]:
    """Token-shaped strings of the message: subject first, then its text parts."""
    if len(raw) > MAX_MESSAGE:
        raise InboundError(f"message over {MAX_MESSAGE:,} bytes: not an unsubscribe request")
    if not raw.strip():
        raise InboundError("empty message")
    try:
        texts = _texts(raw)
    except Exception as exc:
        # on hostile input (IndexError, HeaderParseError, ...): the message is unreadable.
        raise InboundError(f"unreadable message ({exc.__class__.__name__})") from exc
    found: list[str] = []
    for text in texts:
        for match in _TOKEN.finditer(text):
            token = match.group(0)
            # a dot before an uncompressed token is the sentence's, not the token's
            found += [token, token[1:]] if token.startswith(".") else [token]
    return list(dict.fromkeys(found))[:MAX_CANDIDATES]


def _texts(raw: bytes) -> list[str]:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    texts = [str(message.get("subject", ""))]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            try:
                texts.append(part.get_content())
            except (LookupError, ValueError):  # unknown charset, broken encoding
                payload = part.get_payload(decode=True)
                raw_text = payload if isinstance(payload, bytes) else b""
                texts.append(raw_text.decode("utf-8", "replace"))
    return texts


def unsubscribe_by_mail(
    db: Database, settings: Settings, raw: bytes
) -> tuple[subs.Subscriber, bool]:
    """Unsubscribe whoever the first valid token in the message names; (subscriber,
    changed). InboundError when no token in it is valid: nothing changes then."""
    candidates = candidate_tokens(raw)
    if not candidates:
        raise InboundError("no unsubscribe token in the message")
    problem = None
    for token in candidates:
        try:
            return subs.unsubscribe(db, settings, token)
        except TokenError as exc:
            problem = exc
    raise InboundError(f"no valid unsubscribe token in the message ({problem})")
