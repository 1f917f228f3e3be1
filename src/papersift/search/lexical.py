"""Lexical index: tantivy BM25 over the paper text, with a title boost and author names.

Fields (one tantivy document per paper):

- ``text``: title + abstract, as the embedder sees them; the main BM25 field,
- ``title``: the title again, so a word in the title counts extra (``TITLE_WEIGHT``),
- ``authors``: names, lower-cased and ASCII-folded, not stemmed,
- ``key`` (u64, fast): the key shared with the vector index; ``id`` (raw): the paper id,
- filter fields ``published`` (days since 1970, fast), ``has_code`` (0/1), ``categories`` (raw).

Text is split on non-alphanumerics, lower-cased, stripped of English stop words and
Snowball-stemmed (tantivy's ``en_stem`` plus stop words, which otherwise add noise to BM25 for
question-like queries).

Queries: a query without syntax is a bag of words where a repeated word weighs more (BM25
with query term frequency: measured +0.07 nDCG@10 on CISI's long queries over tantivy's
parser, which keeps each word once). A query with syntax (quotes, ``title:``, ``author:``,
``+``/``-``, ``AND``/``OR``/``NOT``, parentheses) goes through tantivy's parser; if it does not
parse it is retried as plain words and flagged as simplified. Nothing here raises on input.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import tantivy

from papersift.model import paper_text
from papersift.search.catalog import paper_key
from papersift.search.query import CleanQuery, plain_terms

ANALYZER = "papersift_en"
NAME_ANALYZER = "papersift_name"
TITLE_WEIGHT = 0.25  # extra weight of a title match on top of its match in ``text``
EPOCH = date(1970, 1, 1)
NO_DATE = -(2**31)  # documents without a date fail any date filter and sort last
MAX_DATE = 2**31 - 1
FRESH_HEAP = 1_500_000_000  # bytes of tantivy writer heap for a full build (one thread)
SHARE_CACHE = 500_000  # remembered document shares per open index (~60 MB at most)
# A plain query whose commonest word is in more papers than this is not counted in full:
# counting scores every match (tantivy cannot skip blocks then), 30+ ms for a broad query
# at a million papers. Its total is then that word's paper count: a true lower bound (each
# of those papers matches), far beyond what anyone pages through, and shown as "N+".
COUNT_CAP = 10_000
FILTER_CACHE = 32  # key sets of recent filters kept per open index (8 bytes a paper)


class LexicalDoc(Protocol):
    """What the lexical index reads of a paper (``store.search_docs.PaperDoc`` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def abstract(self) -> str: ...
    @property
    def authors(self) -> Sequence[str]: ...
    @property
    def published(self) -> date | None: ...
    @property
    def has_code(self) -> bool: ...
    @property
    def categories(self) -> Sequence[str]: ...


@dataclass
class FilterSpec:
    """Filters as the index understands them (all optional, combined with AND)."""

    date_from: date | None = None
    date_to: date | None = None
    has_code: bool | None = None
    category: str | None = None
    paper_ids: Sequence[str] | None = None  # e.g. the members of a collection

    @property
    def active(self) -> bool:
        return any(
            v is not None
            for v in (self.date_from, self.date_to, self.has_code, self.category, self.paper_ids)
        )


@dataclass
class LexicalResult:
    keys: list[int]
    scores: list[float]
    total: int


def day_number(value: date | None) -> int:
    return (value - EPOCH).days if value else NO_DATE


def text_analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def name_analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .build()
    )


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("key", indexed=True, fast=True)
    builder.add_text_field("id", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("text", tokenizer_name=ANALYZER)
    builder.add_text_field("title", tokenizer_name=ANALYZER)
    builder.add_text_field("authors", tokenizer_name=NAME_ANALYZER)
    builder.add_text_field("categories", tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("published", indexed=True, fast=True)
    builder.add_unsigned_field("has_code", indexed=True, fast=True)
    return builder.build()


def _count(result: tantivy.SearchResult) -> int | None:
    """How many documents matched (searched with ``count=True``; the stubs lack it)."""
    count = getattr(result, "count", None)
    return int(count) if count is not None else None


class LexicalIndex:
    """One tantivy index on disk; searching is thread-safe, writes are serialised."""

    def __init__(self, path: Path, *, title_weight: float = TITLE_WEIGHT) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        self.index = tantivy.Index(self.schema, path=str(self.path), reuse=True)
        self._text = text_analyzer()
        self._names = name_analyzer()
        self.index.register_tokenizer(ANALYZER, self._text)
        self.index.register_tokenizer(NAME_ANALYZER, self._names)
        self.title_weight = title_weight
        self._write_lock = threading.Lock()
        # term -> share of documents containing it, for feedback's common-word cut. Terms
        # repeat across queries (a Zipfian vocabulary), and a tantivy lookup per term per
        # query was a tenth of a hybrid search on a small corpus.
        self._shares: dict[str, float] = {}
        # Sorted keys of the papers passing a filter, by the filter query's text: a filtered
        # vector search keeps the nearest papers that are in it (a category or a date range
        # repeats across queries; reading 100k keys from tantivy costs tens of ms).
        self._passing: OrderedDict[str, np.ndarray] = OrderedDict()
        self._passing_lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------

    def _document(self, doc: LexicalDoc) -> tantivy.Document:
        out = tantivy.Document()
        out.add_unsigned("key", paper_key(doc.id))
        out.add_text("id", doc.id)
        out.add_text("text", paper_text(doc.title, doc.abstract))
        out.add_text("title", doc.title or "")
        for author in doc.authors:
            out.add_text("authors", author)
        for cat in doc.categories:
            out.add_text("categories", cat)
        out.add_integer("published", day_number(doc.published))
        out.add_unsigned("has_code", 1 if doc.has_code else 0)
        return out

    def write(
        self, docs: Iterable[LexicalDoc], *, delete_ids: Iterable[str] = (), fresh: bool = False
    ) -> int:
        """Add or replace documents (by id), delete others, commit once; returns docs added.

        ``fresh`` skips the per-document delete (the index is known to be empty).
        """
        written = 0
        with self._write_lock:
            # A full build: one thread, a big heap, one segment for a million papers (a top
            # 200 came 10 % sooner than from two, its p99 a quarter); the thread feeding it
            # is the slower one anyway. Small updates: one thread, less heap.
            if fresh:
                writer = self.index.writer(heap_size=FRESH_HEAP, num_threads=1)
            else:
                writer = self.index.writer(heap_size=200_000_000, num_threads=1)
            try:
                # (by id: tantivy-py's delete by term does not match u64 fields)
                for paper_id in delete_ids:
                    writer.delete_documents_by_term("id", paper_id)
                for doc in docs:
                    if not fresh:
                        writer.delete_documents_by_term("id", doc.id)
                    writer.add_document(self._document(doc))
                    written += 1
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
            finally:
                writer.wait_merging_threads()
        self.index.reload()
        self.forget_shares()
        return written

    def collect_garbage(self) -> None:
        """Delete segment files no commit refers to (left by a write that failed, e.g. on a
        full disk); best effort, since the disk may still be full."""
        try:
            writer = self.index.writer(heap_size=15_000_000, num_threads=1)
            try:
                writer.garbage_collect_files()
            finally:
                writer.rollback()
                writer.wait_merging_threads()
        except Exception:  # cleaning up after a failure must not mask it
            pass

    # -- queries -------------------------------------------------------------------------

    def reload(self) -> None:
        self.index.reload()
        self.forget_shares()

    @property
    def num_docs(self) -> int:
        return self.index.searcher().num_docs

    def analyze(self, text: str) -> list[str]:
        """The index terms of ``text`` (stemmed, no stop words)."""
        return self._text.analyze(text)

    def doc_share(self, term: str) -> float:
        """Fraction of documents whose text contains ``term``."""
        return self.doc_shares([term])[term]

    def doc_shares(self, terms: Iterable[str]) -> dict[str, float]:
        """Fraction of documents whose text contains each term (remembered per index)."""
        shares = self._shares
        out: dict[str, float] = {}
        searcher = None
        for term in terms:
            share = shares.get(term)
            if share is None:
                if searcher is None:
                    searcher = self.index.searcher()
                    docs = max(searcher.num_docs, 1)
                share = searcher.doc_freq("text", term) / docs
                if len(shares) >= SHARE_CACHE:
                    shares.clear()  # rare; cheaper than an LRU's bookkeeping on every hit
                shares[term] = share
            out[term] = share
        return out

    def forget_shares(self) -> None:
        """Drop remembered document shares and filter key sets (after the index changed)."""
        self._shares = {}
        with self._passing_lock:
            self._passing.clear()

    def _term(self, field: str, term: str, weight: float) -> tuple[tantivy.Occur, tantivy.Query]:
        query = tantivy.Query.term_query(self.schema, field, term)
        return tantivy.Occur.Should, tantivy.Query.boost_query(query, float(weight))

    def bag_weights(
        self, text: str, *, title_weight: float | None = None
    ) -> dict[tuple[str, str], float]:
        """(field, term) -> weight of the bag-of-words query of ``text`` (query-term counts)."""
        tw = self.title_weight if title_weight is None else title_weight
        out: dict[tuple[str, str], float] = {}
        for term, count in Counter(self.analyze(text)).items():
            out["text", term] = float(count)
            if tw:
                out["title", term] = count * tw
        for term, count in Counter(self._names.analyze(text)).items():
            out["authors", term] = float(count)
        return out

    def bag_of_words(self, text: str, *, title_weight: float | None = None) -> tantivy.Query | None:
        """BM25 query with query-term frequencies as weights; None if no term survives."""
        weights = self.bag_weights(text, title_weight=title_weight)
        if not any(field == "text" for field, _term in weights):
            return None  # only stop words (or nothing indexable): match nothing, say so
        return tantivy.Query.boolean_query(
            [self._term(field, term, w) for (field, term), w in weights.items()]
        )

    def scores_among(
        self,
        weights: Mapping[tuple[str, str], float],
        keys: Sequence[int],
        extra: tantivy.Query | None = None,
    ) -> dict[int, float]:
        """Scores of the documents with these keys for the OR of weighted (field, term)
        clauses (plus ``extra``), as one flat query; a key matching none of them scores 0.

        Flat, because tantivy's union scorer seeks by refilling a 4,096-document window
        around each key, for every term in it: a union nested in a union (original query
        OR expansion) did that work twice, 12 ms at a million papers for 200 keys and 25
        terms, against 7 ms flat (a query per term: 15 ms). The keys are a required clause
        of that query, not a filter around it: 1.5-2 ms sooner, same scores (1M, 300 keys).
        """
        if not keys:
            return {}
        clauses = [self._term(field, term, w) for (field, term), w in weights.items()]
        if extra is not None:
            clauses.append((tantivy.Occur.Should, extra))
        if not clauses:
            return {}
        clauses.append((tantivy.Occur.Must, self.key_set(keys)))
        res = self.search(tantivy.Query.boolean_query(clauses), limit=len(keys))
        return dict(zip(res.keys, res.scores, strict=True))

    def build_query(
        self, query: CleanQuery, *, title_weight: float | None = None
    ) -> tuple[tantivy.Query | None, bool]:
        """The tantivy query for a cleaned user query, and whether it was simplified."""
        tw = self.title_weight if title_weight is None else title_weight
        if not query.has_syntax:
            return self.bag_of_words(query.text, title_weight=tw), False
        fields = ["text", "title", "authors"] if tw else ["text", "authors"]
        try:
            return self.index.parse_query(
                query.text, fields, field_boosts={"title": tw} if tw else None
            ), False
        except ValueError:
            return self.bag_of_words(plain_terms(query.text), title_weight=tw), True

    def filter_query(self, spec: FilterSpec) -> tantivy.Query | None:
        """The filters as one tantivy query (None when there are none)."""
        must = tantivy.Occur.Must
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
        if spec.date_from is not None or spec.date_to is not None:
            lower = day_number(spec.date_from) if spec.date_from else NO_DATE + 1
            upper = day_number(spec.date_to) if spec.date_to else MAX_DATE
            clauses.append(
                (
                    must,
                    tantivy.Query.range_query(
                        self.schema, "published", tantivy.FieldType.Integer, lower, upper
                    ),
                )
            )
        if spec.has_code is not None:
            clauses.append(
                (must, tantivy.Query.term_query(self.schema, "has_code", 1 if spec.has_code else 0))
            )
        if spec.category:
            clauses.append(
                (must, tantivy.Query.term_query(self.schema, "categories", spec.category))
            )
        if spec.paper_ids is not None:
            ids = list(spec.paper_ids)
            clauses.append(
                (
                    must,
                    tantivy.Query.term_set_query(self.schema, "id", ids)
                    if ids
                    else tantivy.Query.empty_query(),
                )
            )
        if not clauses:
            return None
        return tantivy.Query.const_score_query(tantivy.Query.boolean_query(clauses), 0.0)

    def key_set(self, keys: Sequence[int]) -> tantivy.Query:
        """Matches exactly the documents with these keys (adds nothing to the score).

        An OR of term queries, not tantivy's TermSetQuery: the latter walks the whole term
        dictionary of ``key`` (one term per paper), 4 ms at 100k papers for 400 keys and
        growing with the collection; this costs one lookup per key (1.7 ms, flat).
        """
        clauses = [
            (tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "key", int(k)))
            for k in keys
        ]
        query = tantivy.Query.boolean_query(clauses) if clauses else tantivy.Query.empty_query()
        return tantivy.Query.const_score_query(query, 0.0)

    # -- searching -----------------------------------------------------------------------

    def _keys(
        self, searcher: tantivy.Searcher, hits: list[tuple[Any, tantivy.DocAddress]]
    ) -> list[int]:
        if not hits:
            return []
        # (u64 values: the stubs' union covers every fast-field type)
        values = cast(list[int], searcher.fast_field_values("key", [addr for _s, addr in hits]))
        return [int(k) for k in values]

    def search(
        self,
        query: tantivy.Query | None,
        *,
        limit: int = 100,
        offset: int = 0,
        filters: Sequence[tantivy.Query | None] = (),
        count: bool = False,
        order_by_date: bool = False,
    ) -> LexicalResult:
        """Top documents for a query AND all filters; ``count`` also counts every match."""
        if query is None or limit <= 0:
            return LexicalResult([], [], 0)
        active = [f for f in filters if f is not None]
        if active:
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, query)] + [(tantivy.Occur.Must, f) for f in active]
            )
        searcher = self.index.searcher()
        if order_by_date:
            result = searcher.search(
                query, limit, count=count, order_by_field="published", offset=offset
            )
            scores = [0.0] * len(result.hits)
        else:
            result = searcher.search(query, limit, count=count, offset=offset)
            scores = [float(s) for s, _a in result.hits]
        matched = _count(result) if count else None
        total = matched if matched is not None else len(result.hits)
        return LexicalResult(self._keys(searcher, result.hits), scores, total)

    def search_counted(
        self,
        query: tantivy.Query,
        text: str | None,
        *,
        limit: int,
        filters: Sequence[tantivy.Query | None] = (),
        order_by_date: bool = False,
    ) -> tuple[LexicalResult, bool]:
        """Like ``search(count=True)``, but a broad plain query (``text``: its words; None
        for a query with syntax) is not counted in full: (result, whether ``total`` is a
        lower bound). See ``COUNT_CAP``."""
        if text is not None and not any(f is not None for f in filters):
            bound = self.lower_bound(text)
            if bound > COUNT_CAP:
                res = self.search(query, limit=limit, count=False, order_by_date=order_by_date)
                res.total = max(bound, len(res.keys))
                return res, True
        return self.search(
            query, limit=limit, filters=filters, count=True, order_by_date=order_by_date
        ), False

    def lower_bound(self, text: str) -> int:
        """Papers a plain (bag-of-words) query of ``text`` certainly matches: those
        holding its commonest word (the query is an OR of its words)."""
        terms = set(self.analyze(text))
        if not terms:
            return 0
        docs = self.index.searcher().num_docs
        return round(max(self.doc_shares(terms).values()) * docs)

    def count(self, filters: tantivy.Query) -> int:
        result = self.index.searcher().search(filters, 1, count=True)  # limit 0 panics
        return _count(result) or 0

    def filtered_keys(self, filters: tantivy.Query, limit: int) -> list[int]:
        """Keys of up to ``limit`` documents passing ``filters``."""
        searcher = self.index.searcher()
        return self._keys(searcher, searcher.search(filters, limit, count=False).hits)

    def passing_keys(self, filters: tantivy.Query) -> np.ndarray:
        """Sorted keys (u64) of every document passing ``filters`` (remembered per index)."""
        name = repr(filters)
        with self._passing_lock:
            got = self._passing.get(name)
            if got is not None:
                self._passing.move_to_end(name)
                return got
        allowed = self.count(filters)
        keys = self.filtered_keys(filters, allowed) if allowed else []
        arr = np.sort(np.array(keys, dtype=np.uint64))
        with self._passing_lock:
            self._passing[name] = arr
            while len(self._passing) > FILTER_CACHE:
                self._passing.popitem(last=False)
        return arr

    def keep_passing(self, keys: Sequence[int], filters: tantivy.Query) -> set[int]:
        """The subset of ``keys`` whose documents pass ``filters``."""
        if not keys:
            return set()
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, self.key_set(keys)), (tantivy.Occur.Must, filters)]
        )
        searcher = self.index.searcher()
        return set(self._keys(searcher, searcher.search(query, len(keys), count=False).hits))
