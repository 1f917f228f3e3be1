"""What a parser produces: a paper as one source describes it, validated and normalized."""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, field
from datetime import date, datetime

from papersift.ingest.errors import IngestError
from papersift.model import (
    PaperMetadata,
    clean_text,
    normalize_arxiv_id,
    normalize_doi,
    normalize_title,
    strip_record_controls,
)

MAX_TITLE_CHARS = 2_000
MAX_ABSTRACT_CHARS = 100_000
MAX_AUTHORS = 5_000
MAX_COMMENT_CHARS = 10_000
MAX_CATEGORY_CHARS = 64

# Code hosts whose links count as "code". Stop at whitespace, quotes and brackets; trailing
# sentence punctuation is trimmed afterwards because URLs may legitimately contain dots.
_CODE_URL = re.compile(
    r"https?://(?:www\.)?(?:github\.com|gitlab\.com|huggingface\.co)/[^\s<>\"'`(){}\[\]\\]+",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?'\"*_~"


def extract_code_urls(*texts: str | None) -> list[str]:
    """GitHub, GitLab and Hugging Face links in ``texts``, trimmed, deduplicated, in order."""
    text = "\n".join(t for t in texts if t)
    if "://" not in text:  # most abstracts have no link: a plain substring scan settles it
        return []
    matches = _CODE_URL.findall(text)
    if not matches:
        return []
    found: list[str] = []
    seen: set[str] = set()
    for raw in matches:
        url = raw.rstrip(_TRAILING).removesuffix(".git").rstrip("/")
        if url.count("/") < 3 or not url.split("/", 3)[3]:  # a bare host is not a code link
            continue
        if url[:7].lower() == "http://":
            url = "https://" + url[7:]
        if url.lower() not in seen:
            seen.add(url.lower())
            found.append(url)
    return found


_DATE_ONLY = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})")
_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_YEAR = re.compile(r"^(\d{4})$")
_RFC2822 = re.compile(r"^(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\b")
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}


def parse_date(value: object, *, field_name: str = "date") -> date | None:
    """A date from ISO, RFC 2822 or year(-month) text; impossible dates raise IngestError."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        if m := _DATE_ONLY.match(text):
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if m := _YEAR_MONTH.match(text):
            return date(int(m.group(1)), int(m.group(2)), 1)
        if m := _YEAR.match(text):
            return date(int(m.group(1)), 1, 1)
    except ValueError as exc:
        raise IngestError(f"impossible {field_name} {text!r} ({exc})") from None
    if m := _RFC2822.match(text):  # arXiv's version dates: 'Mon, 2 Jan 2023 10:00:00 GMT'
        month = _MONTHS.get(m.group(2).lower())
        if month:
            try:
                return date(int(m.group(3)), month, int(m.group(1)))
            except ValueError as exc:
                raise IngestError(f"impossible {field_name} {text!r} ({exc})") from None
    try:
        return email.utils.parsedate_to_datetime(text).date()
    except (TypeError, ValueError, IndexError):
        raise IngestError(f"unreadable {field_name} {text[:60]!r}") from None


def split_authors(value: object) -> list[str]:
    """Author names from a list or a 'A, B and C' / 'A; B' string."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        names = [clean_text(str(v)) for v in value if v is not None]
    else:
        text = clean_text(str(value))
        parts = re.split(r";|,|\band\b", text) if ";" not in text else text.split(";")
        names = [clean_text(p) for p in parts]
    return [n for n in names if n]


@dataclass(kw_only=True)
class PaperRecord(PaperMetadata):
    """One source's description of a paper; ``location`` says where in the source it was."""

    location: str = ""
    extra_text: str = ""  # e.g. arXiv comments: searched for code links, not stored
    title_key: str = ""  # set by finalize(): the normalized title used for merging

    def finalize(self) -> PaperRecord:
        """Normalize fields and check limits; raises IngestError on unusable records."""
        strip_record_controls(self)
        self.title = clean_text(self.title)
        self.abstract = clean_text(self.abstract)
        if not self.title:
            raise IngestError("record has no title", location=self.location)
        if len(self.title) > MAX_TITLE_CHARS:
            raise IngestError(
                f"title is {len(self.title):,} characters (limit {MAX_TITLE_CHARS:,})",
                location=self.location,
            )
        if len(self.abstract) > MAX_ABSTRACT_CHARS:
            raise IngestError(
                f"abstract is {len(self.abstract):,} characters (limit {MAX_ABSTRACT_CHARS:,})",
                location=self.location,
            )
        if len(self.authors) > MAX_AUTHORS:
            raise IngestError(f"more than {MAX_AUTHORS} authors", location=self.location)
        self.authors = [a[:300] for a in self.authors]
        self.arxiv_id = normalize_arxiv_id(self.arxiv_id) if self.arxiv_id else None
        self.doi = normalize_doi(self.doi)
        if self.arxiv_id:
            self.abs_url = self.abs_url or f"https://arxiv.org/abs/{self.arxiv_id}"
            self.pdf_url = self.pdf_url or f"https://arxiv.org/pdf/{self.arxiv_id}"
        links = extract_code_urls(self.abstract, self.extra_text)
        for url in self.code_urls:
            for found in extract_code_urls(url) or []:
                if found not in links:
                    links.append(found)
        self.code_urls = links
        self.categories = [c for c in dict.fromkeys(self.categories) if c]
        self.comment = clean_text(self.comment) or None
        if self.comment and len(self.comment) > MAX_COMMENT_CHARS:
            raise IngestError(
                f"comment is {len(self.comment):,} characters (limit {MAX_COMMENT_CHARS:,})",
                location=self.location,
            )
        self.primary_category = clean_text(self.primary_category) or None
        if self.primary_category is None and self.arxiv_id and self.categories:
            self.primary_category = self.categories[0]  # arXiv lists the primary first
        if self.primary_category and len(self.primary_category) > MAX_CATEGORY_CHARS:
            raise IngestError(
                f"primary category is {len(self.primary_category):,} characters"
                f" (limit {MAX_CATEGORY_CHARS})",
                location=self.location,
            )
        self.title_key = normalize_title(self.title)[:255]
        return self


@dataclass
class ParsedCollection:
    """A listing page's order: record indexes in page order."""

    name: str
    origin: str
    record_indexes: list[int] = field(default_factory=list)
