"""Cleaning user queries before they reach the indexes.

Anything a person can type or paste must give a result or a clear message, never an
exception: control characters and invisible format characters are dropped, very long input
is cut, ``author:`` is mapped to the ``authors`` field, and unknown ``field:`` prefixes
(``arXiv:2106.09685``, ``who:x``) are kept as plain words.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

MAX_QUERY_CHARS = 2000

# Field names a user may type, and the index field each one searches.
FIELD_ALIASES = {
    "title": "title",
    "ti": "title",
    "abstract": "text",
    "abs": "text",
    "text": "text",
    "author": "authors",
    "authors": "authors",
    "au": "authors",
}

_FIELD_PREFIX = re.compile(r"(?<![\w.])([A-Za-z_]+):")
_SYNTAX = re.compile(r'[+\-&|!(){}\[\]^"~*?:\\/<>=$%#@`\']')
_FIELD_CLAUSE = re.compile(r'\b(?:author|authors|au):(?:"[^"]*"?|\([^)]*\)?|\S+)', re.I)
_OPERATORS = re.compile(r"\b(?:AND|OR|NOT|IN|TO)\b")
# Query syntax beyond a bag of words: quotes, fields, required/excluded words, boolean words.
# (Parentheses alone are prose: "boundary layers (the slip effect)"; they group only together
# with a field or an operator, which trigger this anyway.)
# ``+`` and ``-`` are operators only where they stand before a word (a letter, a quote or a
# parenthesis) at the start of a term: "+1 nucleosomes", "- 2.5 V" and "x -0.3" are prose.
_SIGN_OP = r"(?:^|(?<=\s)|(?<=\())[+\-](?=[^\W\d_]|\"|\()"
_HAS_SYNTAX = re.compile(r'"|\b(?:title|text|authors):|' + _SIGN_OP + r"|\b(?:AND|OR|NOT)\b")
# Hard constraints (a paper that breaks one is not a match): required and excluded terms,
# AND / NOT, and author clauses. Phrases, title: and OR only say what to prefer.
_CONSTRAINT = re.compile(_SIGN_OP + r"|\b(?:AND|NOT)\b|\bauthors:")
_PROSE_SIGNS = re.compile(r"(?:^|(?<=\s)|(?<=\())[-+](?![^\W\d_]|\"|\()")
# Parts of a query that say what a paper must NOT be about: left out of what is embedded.
_EXCLUDED = re.compile(
    r'(?:(?:^|(?<=\s)|(?<=\())-|\bNOT\s+)(?:\w+:)?(?:"[^"]*"?|\([^)]*\)?|[^\s()"]+)'
)


@dataclass
class CleanQuery:
    """A query ready for the indexes, and what was changed on the way."""

    text: str  # for the lexical parser (field syntax kept)
    semantic: str  # for the embedder: no field names, no author clauses, no operators
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.text.strip()

    @property
    def has_syntax(self) -> bool:
        """True when the user asked for phrases, fields or boolean logic."""
        return bool(_HAS_SYNTAX.search(self.text))

    @property
    def constraint(self) -> bool:
        """True when the syntax excludes papers (required or excluded terms, AND, NOT,
        author clauses), not only prefers some: hybrid then filters both of its sides."""
        return bool(_CONSTRAINT.search(self.text))

    @property
    def words(self) -> str:
        """The query's words without syntax and without its excluded parts: what hybrid
        ranks by (meaning and bag of words) whatever the syntax."""
        kept = _EXCLUDED.sub(" ", _FIELD_CLAUSE.sub(" ", self.text))
        return plain_terms(re.sub(r"\b(?:title|text):", " ", kept))


def _strip_invisible(text: str) -> str:
    """Replace control and format characters (except ordinary whitespace) with spaces."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _map_fields(text: str) -> str:
    def repl(match: re.Match) -> str:
        name = match.group(1).lower()
        target = FIELD_ALIASES.get(name)
        return f"{target}:" if target else f"{match.group(1)} "

    return _FIELD_PREFIX.sub(repl, text)


def plain_terms(text: str) -> str:
    """The words of ``text`` with every bit of query syntax replaced by spaces."""
    text = _SYNTAX.sub(" ", text)
    text = _OPERATORS.sub(" ", text)
    return " ".join(text.split())


def clean_query(raw: str | None) -> CleanQuery:
    """Normalise a raw query string (never raises)."""
    notes: list[str] = []
    text = unicodedata.normalize("NFKC", raw or "")
    text = " ".join(_strip_invisible(text).split())
    if len(text) > MAX_QUERY_CHARS:
        cut = text[:MAX_QUERY_CHARS]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut
        notes.append(f"query shortened to its first {len(text):,} characters")
    text = _map_fields(text)
    # Apostrophes ("can't", "Biot's") and signs before anything but a word are prose.
    text = _PROSE_SIGNS.sub(" ", text.replace("'", " ").replace("\u2019", " "))
    text = " ".join(text.split())
    semantic = _EXCLUDED.sub(" ", _FIELD_CLAUSE.sub(" ", text))
    semantic = re.sub(r"\b(?:title|text):", " ", semantic)
    semantic = _OPERATORS.sub(" ", semantic)
    semantic = " ".join(_PROSE_SIGNS.sub(" ", semantic.replace('"', " ")).split())
    semantic = re.sub(r"(?:^|(?<=\s))\+(?=\S)", "", semantic)
    return CleanQuery(text=text, semantic=semantic, notes=notes)
