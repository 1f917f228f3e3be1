"""What query syntax means in hybrid search: it filters or boosts, it never turns meaning off.

People paste titles in quotes, write "+1 nucleosomes" or "methods -dash exact": searching only
the lexical matches of such a query (as a strict parser would) loses every paper that says
the same thing in other words. So in hybrid mode:

- the ranking uses the query's words (minus excluded parts) on both sides, bag-of-words BM25
  and the embedding, exactly as for a plain query;
- phrases, ``title:`` and ``OR`` groups add the parsed query as a second lexical clause: a
  paper matching them ranks higher, one that does not is still a candidate;
- hard constraints filter both sides: ``+word`` / ``+"phrase"`` and ``author:`` clauses are
  required, ``-word`` / ``NOT word`` excluded, ``a AND b`` requires the whole parsed query.
"""

from __future__ import annotations

import re

import tantivy

from papersift.search.lexical import LexicalIndex
from papersift.search.query import CleanQuery

_PART = r'(?:\w+:)?(?:"[^"]*"?|\([^)]*\)?|[^\s()"]+)'
_START = r"(?:^|(?<=\s)|(?<=\())"
_REQUIRED = re.compile(_START + r"\+(" + _PART + ")")
_EXCLUDED = re.compile(_START + r"(?:-|\bNOT\s+)(" + _PART + ")")
_AUTHOR = re.compile(r'\bauthors:(?:"[^"]*"?|\([^)]*\)?|\S+)')
_AND = re.compile(r"\bAND\b")


def _parse(index: LexicalIndex, text: str) -> tantivy.Query | None:
    try:
        return index.index.parse_query(text, ["text", "authors"])
    except ValueError:
        return None


def ranking_query(
    index: LexicalIndex, clean: CleanQuery, title_weight: float
) -> tuple[tantivy.Query | None, bool]:
    """The lexical query hybrid ranks by, and whether the syntax had to be dropped."""
    if not clean.has_syntax:
        return index.bag_of_words(clean.text, title_weight=title_weight), False
    bag = index.bag_of_words(clean.words, title_weight=title_weight)
    parsed, simplified = index.build_query(clean, title_weight=title_weight)
    if simplified or parsed is None:
        return bag, simplified
    if bag is None:
        return parsed, False
    should = tantivy.Occur.Should
    return tantivy.Query.boolean_query([(should, bag), (should, parsed)]), False


def constraint_filter(index: LexicalIndex, clean: CleanQuery) -> tantivy.Query | None:
    """A score-free filter of the query's hard constraints (None when it has none)."""
    if not clean.constraint:
        return None
    text = clean.text
    must, must_not = tantivy.Occur.Must, tantivy.Occur.MustNot
    clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
    if _AND.search(text):
        whole = _parse(index, text)
        if whole is not None:
            clauses.append((must, whole))
    for part in [*_REQUIRED.findall(text), *_AUTHOR.findall(text)]:
        query = _parse(index, part)
        if query is not None:
            clauses.append((must, query))
    for part in _EXCLUDED.findall(text):
        query = _parse(index, part)
        if query is not None:
            clauses.append((must_not, query))
    if not clauses:
        return None
    if all(occur == must_not for occur, _q in clauses):
        clauses.insert(0, (must, tantivy.Query.all_query()))
    return tantivy.Query.const_score_query(tantivy.Query.boolean_query(clauses), 0.0)


def combine(*filters: tantivy.Query | None) -> tantivy.Query | None:
    """AND of the filters given (None when there are none)."""
    active = [f for f in filters if f is not None]
    if len(active) <= 1:
        return active[0] if active else None
    query = tantivy.Query.boolean_query([(tantivy.Occur.Must, f) for f in active])
    return tantivy.Query.const_score_query(query, 0.0)
