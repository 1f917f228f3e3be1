"""Comment Markdown to safe HTML: markdown-it-py parses, nh3 (the ammonia sanitizer) cleans.

Two maintained libraries, each doing what it is built for: markdown-it-py turns CommonMark
into HTML with raw HTML switched off (``<script>`` in a comment is shown as text) and its own
link validation (no ``javascript:``, ``vbscript:``, ``file:`` or ``data:`` links); nh3 then
keeps only an allow-list of tags and attributes, only http(s) and mailto URLs, and sets
``rel="nofollow ugc noopener"`` on every link (comments are user content: no ranking credit,
no window.opener). Images are not rendered (no tracking pixels, no hot-linking): the image
syntax becomes a link. Nothing here writes HTML by hand.
"""

from __future__ import annotations

import functools

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

MAX_CHARS = 5000  # a comment's Markdown; longer is refused, never cut

TAGS = {
    "p", "br", "hr", "strong", "em", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "h3", "h4", "h5", "h6",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "nofollow ugc noopener"


@functools.lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("strikethrough")
    md.disable("image")  # ![alt](url) is read as "!" and a link
    return md


def _demote_headings(html: str) -> str:
    """A comment's "# Title" must not outrank the page's own headings: h1/h2 become h3."""
    for level in ("1", "2"):
        html = html.replace(f"<h{level}>", "<h3>").replace(f"</h{level}>", "</h3>")
    return html


def render(markdown: str) -> Markup:
    """Safe HTML for a comment body (an empty body gives empty markup)."""
    html = _demote_headings(_parser().render(markdown or ""))
    clean = nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel=LINK_REL,
        strip_comments=True,
        clean_content_tags={"script", "style"},
    )
    return Markup(clean)
