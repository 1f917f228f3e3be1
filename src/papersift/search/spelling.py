"""Spelling suggestions from the corpus's own vocabulary ("Did you mean ...").

The vocabulary is every lower-case word of the papers' titles and abstracts with the number
of papers using it, kept next to the index (``vocab.json.gz``) and built with it. A query
word is suspect when no paper uses it (nor any word with its stem); its suggestion is the
vocabulary word within two edits (insertions, deletions, swaps of neighbours, a letter
replaced by a neighbouring key; any other replacement counts two; one edit for words of up
to seven letters) that is likeliest: used by the most papers, each edit dividing that
count by ``EDIT_ODDS``. Known words, numbers, syntax and short words are left alone.

Lookup is a symmetric-delete index (as SymSpell): every vocabulary word is stored under
itself and its one-letter deletions, a query word is looked up under the same, so a
candidate within two edits shares a key; candidates are then checked with the exact
distance. Memory: about ten keys per word (a 100,000-word vocabulary is a few tens of MB).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from papersift.store import search_docs
from papersift.store.db import Database

FILE = "vocab.json.gz"
MIN_LEN = 3  # shorter words are never corrected
SWITCH = 10  # the corrected query replaces one that finds 10x fewer matches (or none)
FEW = 20  # ... and only one that finds fewer than this (else it is only suggested)
SHORT = 7  # words up to this long get at most one edit, longer ones two
MAX_WORDS = 300_000  # a bigger vocabulary keeps the words most papers use
EDIT_ODDS = 30.0  # one more edit is worth this factor in how many papers use a word
_WORD = re.compile(r"[^\W\d_]{2,40}")
_QUERY_TOKEN = re.compile(r"\S+")


def words_of(text: str) -> set[str]:
    """The distinct lower-case words of a text (letters only)."""
    return {w.lower() for w in _WORD.findall(text or "")}


_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEAR = {
    (a, b)
    for r, row in enumerate(_ROWS)
    for c, a in enumerate(row)
    for rr in (r - 1, r, r + 1)
    if 0 <= rr < len(_ROWS)
    for cc in (c - 1, c, c + 1)
    if 0 <= cc < len(_ROWS[rr])
    for b in _ROWS[rr][cc]
}


def _substitution(a: str, b: str) -> int:
    """A slip onto a neighbouring key is a typo; any other letter swapped for another
    is more often a different word (bake / make, bread / broad): it costs two edits."""
    if a == b:
        return 0
    return 1 if (a, b) in _NEAR else 2


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance, capped at ``limit``;
    substituting a letter that is not a neighbouring key costs 2."""
    if abs(len(a) - len(b)) >= limit:
        return limit
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = _substitution(ca, cb)
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) >= limit:
            return limit
        prev2, prev = prev, cur
    return min(prev[-1], limit)


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class Vocabulary:
    """Word -> number of papers using it, with a delete index for suggestions."""

    def __init__(self, counts: Counter[str] | None = None) -> None:
        self.counts: Counter[str] = counts or Counter()
        self._index: dict[str, list[str]] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.counts)

    def add_texts(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.counts.update(words_of(text))
        self._index = None

    def add_counts(self, counts: Counter[str]) -> None:
        """Add word counts as :meth:`add_texts` counts them (papers a word occurs in)."""
        self.counts.update(counts)
        self._index = None

    # -- storage --------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        counts = self.counts
        if len(counts) > MAX_WORDS:
            counts = Counter(dict(counts.most_common(MAX_WORDS)))
        path = Path(folder) / FILE
        tmp = path.with_name(f".{FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        # One string, one write: json.dump streams ~860k small writes through gzip at a
        # million papers (1.1 s of every incremental update); this takes a third of that.
        data = json.dumps(counts, separators=(",", ":")).encode("utf-8")
        try:
            with gzip.open(tmp, "wb", compresslevel=3) as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, folder: Path) -> Vocabulary | None:
        """The vocabulary saved in ``folder``; None when there is none or it is damaged."""
        try:
            with gzip.open(Path(folder) / FILE, "rb") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError, EOFError):
            return None
        if not isinstance(data, dict):
            return None
        return cls(Counter({str(k): int(v) for k, v in data.items() if isinstance(v, int)}))

    # -- suggestions ----------------------------------------------------------------------

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is not None:
            return index
        with self._lock:
            if self._index is None:
                built: dict[str, list[str]] = {}
                for word in self.counts:
                    if len(word) < MIN_LEN:
                        continue
                    built.setdefault(word, []).append(word)
                    for key in _deletes(word):
                        built.setdefault(key, []).append(word)
                self._index = built
            return self._index

    def correct(self, word: str) -> str | None:
        """The likeliest vocabulary word within reach of ``word`` (lower case), or None."""
        word = word.lower()
        if len(word) < MIN_LEN or not word.isalpha():
            return None
        limit = 1 if len(word) <= SHORT else 2
        index = self._lookup()
        found: set[str] = set()
        for key in {word} | _deletes(word):
            found.update(index.get(key, ()))
        best: tuple[float, str] | None = None
        for cand in found:
            if cand == word:
                continue
            dist = edit_distance(word, cand, limit + 1)
            if dist > limit:
                continue
            # noisy channel: how common the word is, times how likely this many typos are
            rank = (-self.counts[cand] * EDIT_ODDS**-dist, cand)
            if best is None or rank < best:
                best = rank
        return best[1] if best else None

    def suggest(self, query: str, known: Callable[[str], bool]) -> str | None:
        """The query with its unknown words corrected, or None when nothing was changed.

        ``known(word)`` says whether the index has the word in some form (e.g. its stem).
        """
        changed = False

        def fix(match: re.Match) -> str:
            nonlocal changed
            token = match.group(0)
            core = token.strip(".,;:!?()[]\"'")
            if not core.isalpha() or len(core) < MIN_LEN or ":" in token:
                return token
            lower = core.lower()
            if self.counts.get(lower) or known(lower):
                return token
            better = self.correct(lower)
            if better is None:
                return token
            changed = True
            return token.replace(core, better)

        out = _QUERY_TOKEN.sub(fix, query)
        return out if changed else None


_BUILD_LOCK = threading.Lock()


def vocabulary(live: Any, db: Database) -> Vocabulary:
    """The vocabulary of the open index ``live`` (a service's ``_Live``): read from its
    folder, or built from the database once when the index predates it."""
    vocab = live.vocab
    if vocab is not None:
        return vocab
    with _BUILD_LOCK:
        if live.vocab is None:
            vocab = Vocabulary.load(live.folder)
            if vocab is None:
                vocab = Vocabulary()
                with db.session() as s:
                    for batch in search_docs.iter_paper_docs(s):
                        vocab.add_texts(d.text for d in batch)
                try:
                    vocab.save(live.folder)
                except OSError:
                    pass  # a read-only index folder: keep it in memory only
            live.vocab = vocab
        return live.vocab


def suggest(live: Any, text: str, db: Database) -> str | None:
    """A corrected query when some word of ``text`` is in no paper, else None."""
    lexical = live.lexical
    searcher = None

    def known(word: str) -> bool:
        nonlocal searcher
        terms = lexical.analyze(word)
        if not terms:
            return True  # a stop word
        if any(share > 0 for share in lexical.doc_shares(terms).values()):
            return True
        if searcher is None:
            searcher = lexical.index.searcher()
        return searcher.doc_freq("authors", word) > 0

    words = [w for w in words_of(text) if len(w) >= MIN_LEN]
    if all(known(w) for w in words):
        return None  # (the common case: the vocabulary is not even read)
    return vocabulary(live, db).suggest(text, known)


def no_match_advice(filtered: bool, mode: str) -> str:
    """What to try when nothing matched."""
    tips = ["check the spelling", "use other or fewer words"]
    if filtered:
        tips.append("remove filters")
    if mode == "lexical":
        tips.append("try hybrid mode, which also matches by meaning")
    return "no paper matches this query: " + ", ".join(tips)
