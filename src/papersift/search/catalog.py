"""The catalog of indexed papers: key <-> paper id, what each index last saw, and the index
terms of each paper's text.

Both indexes address papers by a 63-bit key derived from the paper id (so any process can
compute it without a lookup). The catalog maps keys back to ids and records the content hash
each index was built from, so ``papersift index`` can bring the indexes in step with the
database by looking at hashes only. It is a small SQLite file next to the indexes: lookups of a
page of results take well under a millisecond at a million papers, updates are transactional,
and readers in other processes see committed changes at once.

The term counts (table ``terms``) are what hybrid search's feedback reads of its best
papers: written when the lexical index takes a paper, they spare every query a database read
and an analysis of ten abstracts (3-5 ms at a million papers). A row counts only while its
hash equals the paper's ``lex_hash``; a paper without one is read from the database.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

_CHUNK = 500
# A term row holds this much of its text's content hash: enough to tell a paper's texts
# apart (64 bits), 24 bytes a row less than the whole SHA-1.
_HASH_CHARS = 16
# Page cache (KiB) of a connection that writes: a build's inserts stay in memory instead of
# in read() calls. Reading connections (one per serving thread, dozens) keep SQLite's 2 MB.
WRITE_CACHE_KIB = 32 * 1024
BUSY_TIMEOUT_S = 30  # how long a statement waits for another connection's write to end
# How long setting up the kept counts waits for a writer (ms): a count must not stall.
INSTALL_WAIT_MS = 100
# A vector's hash starting with this was made from the title alone, while the abstract waits
# to be embedded (see indexer.TITLE_FIRST): searchable, but still pending.
PROVISIONAL = "title:"


def _has_vector(row: str) -> str:
    """SQL, 1 or 0: the row (``new``/``old``/``docs``) has a vector of a whole text."""
    return (
        f"({row}.vec_hash IS NOT NULL"
        f" AND substr({row}.vec_hash, 1, {len(PROVISIONAL)}) != '{PROVISIONAL}')"
    )


def _is_pending(row: str) -> str:
    """SQL, 1 or 0: the row is indexed by words and lacks a vector of that text."""
    return (
        f"({row}.lex_hash IS NOT NULL"
        f" AND ({row}.vec_hash IS NULL OR {row}.vec_hash != {row}.lex_hash))"
    )


_COUNTS = f"count(*), sum({_has_vector('docs')}), sum({_is_pending('docs')})"
_TALLY_TRIGGERS = (
    "CREATE TRIGGER docs_tally_insert AFTER INSERT ON docs BEGIN UPDATE tally SET"
    f" docs = docs + 1, vectors = vectors + {_has_vector('new')},"
    f" pending = pending + {_is_pending('new')}; END",
    "CREATE TRIGGER docs_tally_delete AFTER DELETE ON docs BEGIN UPDATE tally SET"
    f" docs = docs - 1, vectors = vectors - {_has_vector('old')},"
    f" pending = pending - {_is_pending('old')}; END",
    "CREATE TRIGGER docs_tally_update AFTER UPDATE ON docs"
    f" WHEN {_has_vector('old')} != {_has_vector('new')}"
    f" OR {_is_pending('old')} != {_is_pending('new')}"
    " BEGIN UPDATE tally SET"
    f" vectors = vectors - {_has_vector('old')} + {_has_vector('new')},"
    f" pending = pending - {_is_pending('old')} + {_is_pending('new')}; END",
)


def encode_terms(terms: Iterable[str]) -> bytes:
    """A paper's index terms as stored: ``term`` or ``term:count``, commonest first, deflated.

    (Index terms are letters and digits only, so neither separator occurs in one.)
    """
    counts = Counter(terms).most_common()
    text = " ".join(term if n == 1 else f"{term}:{n}" for term, n in counts)
    return zlib.compress(text.encode("utf-8"), 3)


def decode_terms(blob: bytes) -> dict[str, int]:
    """Term -> count, as :func:`encode_terms` stored them."""
    out: dict[str, int] = {}
    text = zlib.decompress(blob).decode("utf-8")
    if not text:
        return out
    # Commonest first: the terms with a count come before the (many more) seen once, which
    # are taken in one C-level call (a loop over every term cost 0.8 ms of a hybrid search).
    last = text.rfind(":")
    if last < 0:
        head, tail = "", text
    else:
        end = text.find(" ", last)
        head, tail = (text, "") if end < 0 else (text[:end], text[end + 1 :])
    for item in head.split(" ") if head else ():
        term, _sep, count = item.partition(":")
        out[term] = int(count) if count else 1
    if tail:
        out.update(dict.fromkeys(tail.split(" "), 1))
    return out


def paper_key(paper_id: str) -> int:
    """Stable 63-bit key of a paper id (fits SQLite INTEGER and usearch/tantivy u64)."""
    digest = hashlib.blake2b(paper_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


class Catalog:
    """SQLite table ``docs(key, paper_id, lex_hash, vec_hash)``; one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS docs (key INTEGER PRIMARY KEY, paper_id TEXT NOT NULL,"
                " lex_hash TEXT, vec_hash TEXT)"
            )
            conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS docs_paper ON docs(paper_id)")
            # By paper id: a build writes papers in id order, so rows are appended (keyed by
            # the random ``key``, every row of a batch dirtied its own page: the 1M build
            # took 452 s against 392).
            conn.execute(
                "CREATE TABLE IF NOT EXISTS terms (paper_id TEXT PRIMARY KEY, lex_hash TEXT NOT"
                " NULL, counts BLOB NOT NULL) WITHOUT ROWID"
            )

    def _conn(self) -> _Tx:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return _Tx(conn)

    def _write_conn(self) -> _Tx:
        """This thread's connection, with the bigger page cache of a writer."""
        tx = self._conn()
        if not getattr(self._local, "writer", False):
            tx.conn.execute(f"PRAGMA cache_size=-{WRITE_CACHE_KIB}")
            self._local.writer = True
        return tx

    def close(self) -> None:
        """Close this thread's connection (writers do, before CURRENT switches)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            self._local.writer = False

    def __len__(self) -> int:
        """How many papers are indexed."""
        return self._tally()[0]

    def probe(self) -> None:
        """Read one row of each table and index: a file that is not SQLite or lost a table
        fails here. Cheaper than a count at open (at 1M papers ``count(*)`` reads the whole
        docs index, 1.3 s with a cold page cache); a missing file is caught by the
        manifest first, damage inside a page by SQLite's ``quick_check`` in the background
        (``manifest.check_all``)."""
        with self._conn() as conn:
            conn.execute("SELECT key, lex_hash, vec_hash FROM docs LIMIT 1").fetchall()
            conn.execute("SELECT paper_id FROM docs INDEXED BY docs_paper LIMIT 1").fetchall()
            conn.execute("SELECT lex_hash FROM terms LIMIT 1").fetchall()

    def count_vectors(self) -> int:
        """How many indexed papers have a vector of their text (provisional ones not counted:
        they are still pending)."""
        return self._tally()[1]

    def count_pending_vectors(self) -> int:
        """How many indexed papers have no vector, or one of an older text."""
        return self._tally()[2]

    def keep_counts(self) -> None:
        """Set up the kept counts now: a build calls it once its rows are in, so the one
        scan is the build's, not the first update's."""
        self._tally()

    def _tally(self) -> tuple[int, int, int]:
        """(papers, vectors, pending) from the one-row ``tally`` table that triggers keep in
        step with ``docs`` in the same transactions. Why: at a million papers each count
        read the whole table (0.3-0.5 s), and an update counted three times before its
        papers were searchable. The tally is set up by the first count (one scan), not at
        creation, so a build's million inserts run without triggers; a catalog that
        cannot be written (a read-only copy) is counted by scans."""
        with self._conn() as conn:
            try:
                row = conn.execute("SELECT docs, vectors, pending FROM tally").fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                row = None  # no tally yet
            if row is None and not getattr(self._local, "read_only", False):
                try:
                    row = self._install_tally(conn)
                except sqlite3.OperationalError as exc:  # read-only, or locked past the timeout
                    if conn.in_transaction:
                        conn.rollback()
                    # (a read-only copy stays read-only: it is not asked again)
                    self._local.read_only = "readonly" in str(exc)
            if row is None:
                row = conn.execute(f"SELECT {_COUNTS} FROM docs").fetchone()
        return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)

    @staticmethod
    def _install_tally(conn: sqlite3.Connection) -> tuple[int, int, int]:
        # One installer, so the counts and triggers agree. A writer busy in the catalog
        # (an update) is not waited for: this count scans, a later one installs.
        conn.execute(f"PRAGMA busy_timeout = {INSTALL_WAIT_MS}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tally (one INTEGER PRIMARY KEY CHECK (one = 1),"
            " docs INTEGER NOT NULL, vectors INTEGER NOT NULL, pending INTEGER NOT NULL)"
        )
        row = conn.execute("SELECT docs, vectors, pending FROM tally").fetchone()
        if row is None:
            row = conn.execute(f"SELECT {_COUNTS} FROM docs").fetchone()
            conn.execute("INSERT INTO tally VALUES (1, ?, ?, ?)", [int(v or 0) for v in row])
            for sql in _TALLY_TRIGGERS:
                conn.execute(sql)
        conn.execute("COMMIT")
        return row

    def ids(self, keys: Sequence[int]) -> dict[int, str]:
        """Paper ids of the keys that are in the catalog."""
        out: dict[int, str] = {}
        keys = [int(k) for k in keys]
        with self._conn() as conn:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                out.update(
                    conn.execute(
                        f"SELECT key, paper_id FROM docs WHERE key IN ({marks})", chunk
                    ).fetchall()
                )
        return out

    def put_terms(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Rows of (paper_id, lex_hash, :func:`encode_terms` of the text with that hash)."""
        with self._write_conn() as conn:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO terms(paper_id, lex_hash, counts) VALUES (?, substr(?, 1, ?), ?)"
                " ON CONFLICT(paper_id) DO UPDATE SET lex_hash=excluded.lex_hash,"
                " counts=excluded.counts",
                [(pid, lex, _HASH_CHARS, blob) for pid, lex, blob in rows],
            )
            conn.execute("COMMIT")

    def terms(self, keys: Sequence[int]) -> dict[int, dict[str, int]]:
        """Term counts of the keys whose stored terms are of the text the index holds."""
        out: dict[int, dict[str, int]] = {}
        keys = [int(k) for k in keys]
        with self._conn() as conn:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, blob in conn.execute(
                    "SELECT d.key, t.counts FROM docs d JOIN terms t ON t.paper_id = d.paper_id"
                    f" AND t.lex_hash = substr(d.lex_hash, 1, {_HASH_CHARS})"
                    f" WHERE d.key IN ({marks})",
                    chunk,
                ):
                    try:
                        out[key] = decode_terms(blob)
                    except (zlib.error, UnicodeDecodeError, ValueError):
                        continue  # a damaged row: the paper is read from the database
        return out

    def hashes(self, paper_ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """(lex_hash, vec_hash) of the paper ids that are in the catalog."""
        out: dict[str, tuple[str | None, str | None]] = {}
        with self._conn() as conn:
            for i in range(0, len(paper_ids), _CHUNK):
                chunk = list(paper_ids[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                for pid, lex, vec in conn.execute(
                    f"SELECT paper_id, lex_hash, vec_hash FROM docs WHERE paper_id IN ({marks})",
                    chunk,
                ):
                    out[pid] = (lex, vec)
        return out

    def hashes_of_batch(self, paper_ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """``hashes`` for a batch sorted by id (a sync walks the papers in id order): one
        range scan over the catalog's paper_id index, then a lookup of the ids the range
        did not hold (new papers, or a database whose collation orders ids differently).
        At a million papers this is 5 ms a batch of 5,000 where lookups by list took 70."""
        if not paper_ids or paper_ids[0] > paper_ids[-1]:
            return self.hashes(paper_ids)
        wanted = set(paper_ids)
        out: dict[str, tuple[str | None, str | None]] = {}
        with self._conn() as conn:
            # (bounded: a collation that interleaves ids differently cannot make it a scan)
            for pid, lex, vec in conn.execute(
                "SELECT paper_id, lex_hash, vec_hash FROM docs WHERE paper_id BETWEEN ? AND ?"
                " ORDER BY paper_id LIMIT ?",
                (paper_ids[0], paper_ids[-1], 2 * len(paper_ids)),
            ):
                if pid in wanted:
                    out[pid] = (lex, vec)
        missing = [pid for pid in paper_ids if pid not in out]
        if missing:
            out.update(self.hashes(missing))
        return out

    def upsert(self, rows: Iterable[tuple[int, str, str | None, str | None]]) -> None:
        """Rows of (key, paper_id, lex_hash, vec_hash); a None hash keeps the stored one."""
        with self._write_conn() as conn:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO docs(key, paper_id, lex_hash, vec_hash) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET paper_id=excluded.paper_id, "
                "lex_hash=coalesce(excluded.lex_hash, lex_hash), "
                "vec_hash=coalesce(excluded.vec_hash, vec_hash)",
                list(rows),
            )
            conn.execute("COMMIT")

    def put(self, rows: Iterable[tuple[int, str, str | None, str | None]]) -> None:
        """Rows of (key, paper_id, lex_hash, vec_hash) exactly as given: a None hash marks
        "not in that index (yet)", so an interrupted update is redone by the next sync."""
        with self._write_conn() as conn:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO docs(key, paper_id, lex_hash, vec_hash) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET paper_id=excluded.paper_id, "
                "lex_hash=excluded.lex_hash, vec_hash=excluded.vec_hash",
                list(rows),
            )
            conn.execute("COMMIT")

    def without_vectors(self, after: int = -1, limit: int = 5000) -> list[tuple[int, str]]:
        """(key, paper_id) of indexed papers whose vector is missing or stale, by key."""
        with self._conn() as conn:
            return conn.execute(
                "SELECT key, paper_id FROM docs WHERE key > ? AND lex_hash IS NOT NULL"
                " AND (vec_hash IS NULL OR vec_hash != lex_hash) ORDER BY key LIMIT ?",
                (after, limit),
            ).fetchall()

    def remove(self, keys: Sequence[int]) -> None:
        """Forget these keys (papers that left the database)."""
        with self._write_conn() as conn:
            conn.execute("BEGIN")
            gone = [(int(k),) for k in keys]
            conn.executemany(
                "DELETE FROM terms WHERE paper_id = (SELECT paper_id FROM docs WHERE key = ?)",
                gone,
            )
            conn.executemany("DELETE FROM docs WHERE key = ?", gone)
            conn.execute("COMMIT")

    def iter_rows(
        self, batch: int = 5000
    ) -> Iterator[list[tuple[int, str, str | None, str | None]]]:
        """All (key, paper_id, lex_hash, vec_hash) in key order, in batches (snapshot deltas
        compare two catalogs this way)."""
        last = -1
        while True:
            with self._conn() as conn:
                rows = conn.execute(
                    "SELECT key, paper_id, lex_hash, vec_hash FROM docs WHERE key > ?"
                    " ORDER BY key LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def copy_to(self, path: Path) -> None:
        """A consistent copy of the catalog in one file (SQLite's online backup)."""
        dest = sqlite3.connect(path)
        try:
            with self._conn() as conn:
                conn.backup(dest)
        finally:
            dest.close()

    def iter_ids(self, batch: int = 5000) -> Iterator[list[tuple[int, str]]]:
        """All (key, paper_id) in key order, in batches."""
        last = -1
        while True:
            with self._conn() as conn:
                rows = conn.execute(
                    "SELECT key, paper_id FROM docs WHERE key > ? ORDER BY key LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]


class _Tx:
    """Context wrapper that rolls back an open transaction on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and self.conn.in_transaction:
            self.conn.rollback()
