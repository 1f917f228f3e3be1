"""A rebuild's per-paper text work, in a second process beside tantivy when it is big.

Each paper's text is analysed twice besides tantivy's own indexing: its index terms for the
catalog's term rows (what hybrid search's feedback reads, see catalog.py) and its words for
the spelling vocabulary. Both are pure functions of the text, and in a rebuild of 236,579
papers they were half of the one Python thread's time (py-spy: 29 % and 20 % of all samples)
while the second core was mostly idle: tantivy's own threads took less than it had. So past
``PROCESS_FROM`` papers a worker process does them batch by batch while the rebuild's thread
reads the database and feeds tantivy; a batch's results reach the catalog a batch or two
later, always before the new generation goes live. A worker that dies fails the rebuild,
which then leaves nothing behind (indexer.py).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from typing import Any

import tantivy

from papersift.search.catalog import encode_terms
from papersift.search.lexical import text_analyzer
from papersift.search.spelling import words_of
from papersift.search.types import SearchError

TermRow = tuple[str, str, bytes]  # (paper id, content hash, encoded index terms)
Paper = tuple[str, str, str]  # (paper id, content hash, text)
Done = tuple[list[TermRow], Counter[str]]

# Small rebuilds (tests, the demo) stay in one process: starting a worker costs about a second.
PROCESS_FROM = 20_000
IN_FLIGHT = 2  # batches handed to the worker and not yet collected


@lru_cache(maxsize=1)
def _analyzer() -> tantivy.TextAnalyzer:
    return text_analyzer()


def term_rows(papers: Sequence[Paper]) -> list[TermRow]:
    """The catalog's term rows of these papers: their index terms as lexical.py analyses."""
    analyze = _analyzer().analyze
    return [(pid, content_hash, encode_terms(analyze(text))) for pid, content_hash, text in papers]


def analyse(papers: Sequence[Paper]) -> Done:
    """A batch's term rows, and in how many of its papers each word occurs."""
    words: Counter[str] = Counter()
    for _pid, _hash, text in papers:
        words.update(words_of(text))
    return term_rows(papers), words


class TextWork:
    """Analyses batches in order, in this process or (once more than ``PROCESS_FROM`` papers
    came) in one worker process, handing back each batch's results as they are ready."""

    def __init__(self, process_from: int | None = None) -> None:
        self._process_from = PROCESS_FROM if process_from is None else process_from
        self._seen = 0
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[Future[Done]] = deque()

    def submit(self, papers: Sequence[Paper]) -> Iterator[Done]:
        """Hand over a batch; yields the results of earlier batches that are done by now."""
        self._seen += len(papers)
        if self._pool is None and self._seen > self._process_from and (os.cpu_count() or 1) > 1:
            # Spawned, not forked: tantivy's writer threads are running in this process.
            context: Any = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        if self._pool is None:
            yield analyse(papers)
            return
        self._pending.append(self._pool.submit(analyse, list(papers)))
        while self._pending and (len(self._pending) > IN_FLIGHT or self._pending[0].done()):
            yield self._result(self._pending.popleft())

    def finish(self) -> Iterator[Done]:
        """The results of every batch not collected yet, then the worker stops."""
        try:
            while self._pending:
                yield self._result(self._pending.popleft())
        finally:
            self.close()

    def close(self) -> None:
        for pending in self._pending:
            pending.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @staticmethod
    def _result(pending: Future[Done]) -> Done:
        try:
            return pending.result()
        except BrokenProcessPool as exc:
            raise SearchError(
                "the process analysing paper texts for the index stopped; nothing was changed"
            ) from exc
