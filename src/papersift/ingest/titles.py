"""Readable titles for collections that have none: a listing page saved as
``000_e3b0215ea9dd5350.txt`` is called by its papers' most distinctive title terms
(tf-idf of the collection's titles against every title in the library), e.g.
"Diffusion · Video · Editing", and a page with words in its file name by those words."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from papersift.model import readable_name
from papersift.store import collections as collection_store
from papersift.store import papers as paper_store
from papersift.store.db import Session

MAX_TITLE_CHARS = 200
MAX_DESCRIPTION_CHARS = 2_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WORD = re.compile(r"[^\W\d_][\w-]*[^\W_]|[^\W\d_]", re.UNICODE)
# Title words that say nothing about a topic (besides English function words).
_STOP = frozenset(
    """a an the and or of for to in on at by with from into via as is are be we our its
    their this that these those using based towards toward beyond through under over new
    how what when why which can do does not no vs versus study approach method methods
    model models paper learning large language data analysis framework efficient
    improving improved robust""".split()
)


class TitleError(ValueError):
    """A collection title or description that cannot be used; the message says why."""


def clean_title(text: str, *, what: str = "title", limit: int = MAX_TITLE_CHARS) -> str:
    """The title (or description) as stored: stripped, one line, checked."""
    if _CONTROL.search(text.replace("\n", " ") if what == "description" else text):
        raise TitleError(f"the collection {what} contains control characters")
    value = " ".join(text.split()) if what == "title" else text.strip()
    if what == "title" and not value:
        raise TitleError("the collection title is empty")
    if len(value) > limit:
        raise TitleError(f"the collection {what} is {len(value):,} characters (limit {limit:,})")
    return value


def _stem(word: str) -> str:
    """Plural and singular as one term ('effects' and 'effect')."""
    if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _terms(title: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(title.lower()) if len(w) > 2 and w not in _STOP}


def title_df(corpus: Iterable[str]) -> tuple[Counter[str], int]:
    """Document frequency of every title term, and the number of titles."""
    df: Counter[str] = Counter()
    n_docs = 0
    for title in corpus:
        n_docs += 1
        df.update(_terms(title))
    return df, n_docs


def distinctive_terms(titles: list[str], df: Counter[str], n_docs: int, k: int = 3) -> list[str]:
    """The ``k`` terms of ``titles`` with the highest tf-idf against the corpus' ``df``,
    each in the spelling the titles use most."""
    tf: Counter[str] = Counter()
    spelling: dict[str, Counter[str]] = {}
    for title in titles:
        words = [w for w in _WORD.findall(title) if len(w) > 2 and w.lower() not in _STOP]
        for stem in {_stem(w.lower()) for w in words}:
            tf[stem] += 1
        for w in words:
            spelling.setdefault(_stem(w.lower()), Counter())[w] += 1
    if not tf:
        return []
    n_docs = max(n_docs, len(titles))

    def score(term: str) -> tuple[float, str]:
        idf = math.log((1 + n_docs) / (1 + df.get(term, 0))) + 1
        return (-(tf[term] * idf), term)

    candidates = [t for t in tf if tf[t] >= 2] or list(tf)
    best = sorted(candidates, key=score)[:k]
    return [spelling[t].most_common(1)[0][0] for t in best]


def _display(term: str) -> str:
    return term if any(ch.isupper() for ch in term) else term[:1].upper() + term[1:]


def default_title(session: Session, name: str, df: tuple[Counter[str], int] | None = None) -> str:
    """A readable title for a collection: its name as words, else its distinctive terms."""
    if words := readable_name(name):
        return words
    counts, n_docs = df if df is not None else title_df(paper_store.iter_titles(session))
    titles = collection_store.member_titles(session, name)
    return " · ".join(_display(t) for t in distinctive_terms(titles, counts, n_docs))


def fill_missing_titles(session: Session) -> int:
    """Give every untitled collection its default title; returns how many got one."""
    names = collection_store.untitled(session)
    if not names:
        return 0
    df = (
        None if all(readable_name(n) for n in names) else title_df(paper_store.iter_titles(session))
    )
    done = 0
    for name in names:
        title = default_title(session, name, df)
        if title:
            collection_store.set_title(session, name, title[:MAX_TITLE_CHARS])
            done += 1
    return done
