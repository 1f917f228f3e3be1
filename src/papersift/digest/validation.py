"""Input checks for subscriptions: addresses, topics, collection names and preferences.

Everything a subscriber types ends up in mail headers or queries, so the rules are strict:
no control characters anywhere (a CR or LF in an address is header injection), bounded
lengths and counts, one plain ``local@domain`` address (no display names, no lists).
The same functions serve the CLI, the web form and the JSON API, so all three reject the
same input with the same message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_EMAIL = 254  # RFC 5321 path limit minus the angle brackets
MAX_LOCAL = 64
MAX_TOPIC = 200
MAX_TOPICS = 20
MAX_COLLECTION = 255
MAX_COLLECTIONS = 20
MAX_PAPERS_LIMIT = 100
FREQUENCIES = ("daily", "weekly")

# RFC 5322 "atext" plus dots between atoms; quoted local parts are not accepted.
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class ValidationError(ValueError):
    """Bad subscription input; ``errors`` holds one clear message per problem."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))


def has_control_chars(text: str) -> bool:
    """True for C0/C1 controls (CR, LF, TAB, NUL, ...), line/paragraph separators and
    invisible format characters: none of them belongs in an address or a topic."""
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def normalize_email(raw: object) -> str:
    """The address, trimmed and lower-cased, or ValidationError saying what is wrong."""
    if not isinstance(raw, str):
        raise ValidationError("email address must be a string")
    if has_control_chars(raw):
        raise ValidationError("email address must not contain control characters (CR, LF, ...)")
    text = raw.strip()
    if not text:
        raise ValidationError("email address is required")
    if len(text) > MAX_EMAIL:
        raise ValidationError(f"email address is longer than {MAX_EMAIL} characters")
    if not text.isascii():
        raise ValidationError(
            "email address must be plain ASCII (internationalized addresses are not supported)"
        )
    if any(ch.isspace() for ch in text):
        raise ValidationError("email address must not contain spaces")
    if text.count("@") != 1:
        raise ValidationError("email address must contain exactly one @")
    local, domain = text.split("@")
    if not local or len(local) > MAX_LOCAL or not _LOCAL.match(local):
        raise ValidationError(f"{text!r} is not a valid email address (bad part before @)")
    domain = domain.lower()
    labels = domain.split(".")
    if domain != "localhost" and (len(labels) < 2 or not all(_LABEL.match(x) for x in labels)):
        raise ValidationError(f"{text!r} is not a valid email address (bad domain after @)")
    if labels[-1].isdigit():
        raise ValidationError(f"{text!r} is not a valid email address (domain is a number)")
    return f"{local}@{domain}".lower()


def _clean_items(
    values: Iterable[object] | None, *, what: str, max_len: int, max_count: int
) -> list[str]:
    """Strip, collapse whitespace and de-duplicate (case-insensitively) a list of strings."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    seen: set[str] = set()
    errors: list[str] = []
    for value in values:
        if not isinstance(value, str):
            errors.append(f"each {what} must be a string")
            continue
        if has_control_chars(value):
            errors.append(f"{what} {value[:40]!r} contains control characters (CR, LF, ...)")
            continue
        text = " ".join(value.split())
        if not text:
            continue  # an empty form field is not an error
        if len(text) > max_len:
            errors.append(f"{what} {text[:40]!r}... is longer than {max_len} characters")
            continue
        key = text.casefold()
        if key not in seen:
            seen.add(key)
            out.append(text)
    if len(out) > max_count:
        errors.append(f"at most {max_count} {what}s, got {len(out)}")
    if errors:
        raise ValidationError(errors)
    return out


def clean_topics(values: Iterable[object] | None) -> list[str]:
    return _clean_items(values, what="topic", max_len=MAX_TOPIC, max_count=MAX_TOPICS)


def clean_collections(values: Iterable[object] | None) -> list[str]:
    return _clean_items(
        values, what="collection", max_len=MAX_COLLECTION, max_count=MAX_COLLECTIONS
    )


@dataclass
class Preferences:
    """What a subscriber wants: validated, ready to store."""

    topics: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)
    frequency: str = "daily"
    max_papers: int = 20
    send_empty: bool = False


def clean_preferences(
    *,
    topics: Iterable[object] | None = None,
    collections: Iterable[object] | None = None,
    frequency: object = "daily",
    max_papers: object = 20,
    send_empty: object = False,
) -> Preferences:
    """Validated preferences; every problem is reported at once, not only the first."""
    errors: list[str] = []
    prefs = Preferences()
    for name, fn in (("topics", clean_topics), ("collections", clean_collections)):
        try:
            setattr(prefs, name, fn(topics if name == "topics" else collections))
        except ValidationError as exc:
            errors.extend(exc.errors)
    if not isinstance(frequency, str) or frequency.strip().lower() not in FREQUENCIES:
        errors.append(f"frequency must be one of {', '.join(FREQUENCIES)}")
    else:
        prefs.frequency = frequency.strip().lower()
    try:
        if isinstance(max_papers, bool):
            raise ValueError
        if isinstance(max_papers, str):
            number = int(max_papers.strip())
        elif isinstance(max_papers, int | float):
            number = int(max_papers)
        else:
            raise TypeError
        if not 1 <= number <= MAX_PAPERS_LIMIT:
            raise ValueError
        prefs.max_papers = number
    except (TypeError, ValueError):
        errors.append(f"max papers must be a whole number from 1 to {MAX_PAPERS_LIMIT}")
    if not isinstance(send_empty, bool):
        errors.append("send_empty must be true or false")
    else:
        prefs.send_empty = send_empty
    if errors:
        raise ValidationError(errors)
    return prefs
