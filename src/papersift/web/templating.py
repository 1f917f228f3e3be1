"""Jinja2 environment (autoescape on) and the filters that turn paper text into safe HTML.

Highlighting never marks up HTML: the raw text is split on query-term matches and on
``$...$`` math spans, every piece is escaped on its own, and only then are the pieces
wrapped in ``<mark>`` or ``<span class="math">``. Paper text can therefore contain ``<``,
``&`` or ``</script>`` and still comes out as inert text.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import tantivy
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from papersift.model import paper_day
from papersift.search.lexical import text_analyzer
from papersift.web.security import csrf_token

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

_WORD = re.compile(r"[^\W_][\w\-']*", re.UNICODE)
_OPERATORS = {"and", "or", "not", "title", "author", "abstract"}
# Question and function words beyond the index's stop list: a query "why does attention
# work" should mark "attention", not every "does" and "why" on the page.
_QUIET = frozenset(
    "why what how which when where who whom whose does do did done doing can could would "
    "should may might must shall has have had having been being its our we you your i me "
    "my from than so very also using use used via about over under between".split()
)
_MATH = re.compile(r"\$[^$\n]{1,400}\$")
MAX_TERMS = 20
_local = threading.local()  # one tantivy analyzer per thread
PAGE_CACHE = "private, no-cache"  # pages show the visitor's votes: revalidate every time


def _analyzer() -> tantivy.TextAnalyzer:
    analyzer = getattr(_local, "analyzer", None)
    if analyzer is None:
        analyzer = _local.analyzer = text_analyzer()
    return analyzer


@functools.lru_cache(maxsize=50_000)
def _stem(word: str) -> str | None:
    """The index term of one word (as the lexical index makes it), None for a stop word."""
    terms = _analyzer().analyze(word)
    return terms[0] if terms else None


def query_terms(query: str | None) -> list[str]:
    """Index terms of a query worth highlighting: stems as the lexical index makes them,
    stop words and operators left out, so "in" never marks "introduction" and
    "transformers" marks "transformer"."""
    if not query:
        return []
    terms: list[str] = []
    for word in _WORD.findall(query[:1000]):
        word = word.lower().strip("-'")
        if len(word) < 2 or word in _OPERATORS or word in _QUIET:
            continue
        stem = _stem(word)
        if stem and stem not in terms:
            terms.append(stem)
        if len(terms) == MAX_TERMS:
            break
    return terms


def _wanted(terms: list[str] | None) -> frozenset[str]:
    """Index terms for ``terms`` (words or stems alike: a stem stems to itself)."""
    return frozenset(stem for t in terms or () if (stem := _stem(t.lower())))


def _matches(text: str, terms: frozenset[str]) -> Iterator[re.Match[str]]:
    """The whole words of ``text`` whose index term is one of ``terms``."""
    if not terms:
        return
    for match in _WORD.finditer(text):
        word = match.group(0).lower().strip("-'")
        if word and _stem(word) in terms:
            yield match


def _marked(text: str, terms: frozenset[str]) -> str:
    out: list[str] = []
    last = 0
    for match in _matches(text, terms):
        out.append(str(escape(text[last : match.start()])))
        out.append(f"<mark>{escape(match.group(0))}</mark>")
        last = match.end()
    out.append(str(escape(text[last:])))
    return "".join(out)


def rich_text(text: str | None, terms: list[str] | None = None) -> Markup:
    """Escaped text with query terms in <mark> and $math$ in a styled span."""
    if not text:
        return Markup("")
    wanted = _wanted(terms)
    out: list[str] = []
    last = 0
    for match in _MATH.finditer(text):
        out.append(_marked(text[last : match.start()], wanted))
        out.append(f'<span class="math">{escape(match.group(0))}</span>')
        last = match.end()
    out.append(_marked(text[last:], wanted))
    return Markup("".join(out))


def snippet(text: str | None, terms: list[str] | None = None, length: int = 320) -> Markup:
    """About ``length`` characters of an abstract around the first matched term."""
    text = text or ""
    if len(text) <= length:
        return rich_text(text, terms)
    start = 0
    first = next(_matches(text, _wanted(terms)), None)
    if first is not None:
        match = first
        if match.start() > length // 2:
            start = text.rfind(" ", 0, match.start() - length // 4) + 1
    end = text.find(" ", start + length)
    end = len(text) if end == -1 else end
    piece = text[start:end]
    # Do not cut a math span in half: drop an unmatched trailing or leading dollar piece.
    if piece.count("$") % 2:
        cut = piece.rfind("$")
        piece = piece[:cut]
    prefix = "… " if start else ""
    suffix = " …" if end < len(text) else ""
    return Markup(prefix) + rich_text(piece, terms) + Markup(suffix)


def paper_url(paper_id: str) -> str:
    """/papers/<id>, keeping the slash of old arXiv ids and DOIs readable."""
    return "/papers/" + quote(paper_id, safe="/")


def safe_url(url: str | None) -> str:
    """Only http(s) links from paper data become hrefs (no javascript: or data: URLs)."""
    if url and url.strip().lower().startswith(("http://", "https://")):
        return url.strip()
    return "#"


def collection_url(name: str) -> str:
    return "/collections/" + quote(name, safe="")


def author_url(name: str) -> str:
    return "/authors/" + quote(name, safe="")


def category_url(name: str) -> str:
    return "/categories/" + quote(name, safe="")


def authors_line(authors: list[str] | None, limit: int = 6) -> str:
    authors = authors or []
    if len(authors) <= limit:
        return ", ".join(authors)
    return ", ".join(authors[:limit]) + f" and {len(authors) - limit} more"


def human_date(value: date | datetime | None) -> str:
    if value is None:
        return ""
    return value.strftime("%-d %b %Y")


def with_query(params: Mapping[str, Any], **changes: object) -> str:
    """A query string from the current params with some changed (None drops a key)."""
    merged = {k: v for k, v in params.items() if v not in (None, "")}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return "?" + urlencode(merged) if merged else "?"


def static_versions() -> dict[str, str]:
    """Content hashes of the static files, for cache-busting ``?v=`` URLs."""
    out = {}
    for path in STATIC_DIR.glob("*"):
        if path.is_file():
            out[path.name] = hashlib.sha1(path.read_bytes()).hexdigest()[:10]
    return out


def make_templates() -> Jinja2Templates:
    """The app's templates: autoescaped, with the filters and URL helpers above."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html", "xml"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    versions = static_versions()
    env.globals.update(
        static=lambda name: f"/static/{name}?v={versions.get(name, '0')}",
        paper_url=paper_url,
        collection_url=collection_url,
        author_url=author_url,
        category_url=category_url,
        paper_day=paper_day,
        with_query=with_query,
        csrf_token=csrf_token,
    )
    env.filters.update(
        rich=rich_text,
        snippet=snippet,
        authors=authors_line,
        human_date=human_date,
        safe_url=safe_url,
    )
    return Jinja2Templates(env=env)


class Renderer:
    """Renders pages for one request with their caching policy (every HTML page goes
    through here)."""

    def __init__(self, request: Request, templates: Jinja2Templates) -> None:
        self.request = request
        self.templates = templates

    def __call__(
        self,
        name: str,
        context: Mapping[str, Any],
        status_code: int = 200,
        *,
        cache_control: str | None = PAGE_CACHE,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        values = dict(context)
        # The signed-in account (web.deps.current_account put it there), for the nav.
        values.setdefault("account", self.request.scope.get("state", {}).get("account"))
        response = self.templates.TemplateResponse(
            self.request, name, values, status_code=status_code, headers=dict(headers or {})
        )
        if cache_control is not None:
            response.headers["Cache-Control"] = cache_control
        return response
