"""Index generations: which folder of indexes is live, opening it, and the writers' lock.

Indexes are derived data under ``$PAPERSIFT_HOME/index``: deleting the folder loses nothing,
the next search (or ``papersift index``) rebuilds it from the database, re-using the stored
embeddings. Layout::

    index/CURRENT            {"dir": "v...", "gen": 7, "docs": N, "vectors": M, "model": ...}
    index/v<time>/lexical/   tantivy
    index/v<time>/flat.npz | ivf.faiss | hnsw.usearch
    index/v<time>/catalog.sqlite
    index/v<time>/MANIFEST.json  sizes and sha256 of the files (see search/manifest.py)

A rebuild writes a new ``v<time>`` folder and switches ``CURRENT`` atomically, so searches
keep working meanwhile. Incremental updates change the live folder and bump ``gen``; every
process re-opens its indexes when it sees ``CURRENT`` change (one ``stat`` per search).
Writers take a file lock, so two ``papersift ingest`` runs cannot corrupt the index.
Readers check file sizes against the manifest on open and hash the files once per process in
a background thread; a generation that fails either is set aside as ``broken-*``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from papersift.search import manifest as manifests
from papersift.search.catalog import Catalog
from papersift.search.lexical import LexicalIndex
from papersift.search.spelling import Vocabulary
from papersift.search.vectors import VectorIndex, VectorParams

log = logging.getLogger(__name__)

Meta = dict[str, Any]  # the JSON object in CURRENT
Stamp = tuple[int, int, int]  # (mtime ns, size, inode) of CURRENT: changes on every switch


class IndexUnavailable(RuntimeError):
    """The index cannot answer right now (being rebuilt after damage): retry shortly."""


FULL_BELOW = 1 << 20  # bytes free under which an index that fails to open is not blamed


def _disk_full(root: Path) -> bool:
    """Whether the filesystem holding ``root`` has (next to) no space left."""
    try:
        stat = os.statvfs(root)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < FULL_BELOW


@dataclass
class Generation:
    """The open indexes of one generation, and the caches that live as long as they do."""

    folder: Path
    stamp: Stamp | None
    meta: Meta
    lexical: LexicalIndex
    vectors: VectorIndex | None
    catalog: Catalog
    # Feedback term distributions by paper key (LRU, see execute.TERM_CACHE).
    terms: OrderedDict[int, dict[str, float]] = field(default_factory=OrderedDict)
    terms_lock: threading.Lock = field(default_factory=threading.Lock)
    vocab: Vocabulary | None = None  # spelling suggestions: read on first need

    @property
    def pending_vectors(self) -> int:
        """Indexed papers that have no vector yet."""
        return int(self.meta.get("docs", 0)) - int(self.meta.get("vectors", 0))


class Generations:
    """The index folder of one home: finds, opens and switches generations (thread-safe)."""

    def __init__(self, root: Path, params: VectorParams, *, view: bool = True) -> None:
        self.root = Path(root)
        self.current_path = self.root / "CURRENT"  # stat()ed on every search
        self.params = params
        self._view = view  # readers memory-map the vector graph
        self._live: Generation | None = None
        self.damaged: str | None = None  # why the last generation was set aside, if one was
        self._lock = threading.RLock()
        self._writing = threading.RLock()
        self._depth = 0  # write_lock re-entered by this process's writer
        self.marker = self.root / ".writing"  # a writer is (or died) between manifests
        self._verified: set[tuple[str, str, str]] = set()  # (folder, name, sha256) hashed
        self._verifier: threading.Thread | None = None

    def stamp(self) -> Stamp | None:
        """Identity of the CURRENT file as it is now (None if there is none)."""
        try:
            st = self.current_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def read_meta(self) -> Meta | None:
        """CURRENT's contents, or None if it is missing, corrupt or names no folder."""
        try:
            meta = json.loads(self.current_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or not (self.root / str(meta.get("dir", ""))).is_dir():
            return None
        return meta

    def write_meta(self, meta: Meta) -> None:
        """Switch CURRENT atomically (write a temporary file, rename it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".CURRENT.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.current_path)

    def open(self, meta: Meta, stamp: Stamp | None, *, writable: bool = False) -> Generation:
        """Open the indexes CURRENT names (writers load the vectors instead of mapping them).
        Readers first check the files' sizes against the manifest (``ManifestError``)."""
        folder = self.root / meta["dir"]
        if not writable and self.settled():
            listed = manifests.read(folder)
            if listed is not None:
                manifests.check_sizes(folder, listed)
        vectors = None
        if VectorIndex.exists(folder) and meta.get("dim"):
            vectors = VectorIndex.load(
                folder, int(meta["dim"]), self.params, view=self._view and not writable
            )
        lexical = LexicalIndex(folder / "lexical")
        catalog = Catalog(folder / "catalog.sqlite")
        # Checks that read every part once: a damaged file fails here, not in a search.
        lexical.num_docs  # noqa: B018
        catalog.probe()
        return Generation(folder, stamp, meta, lexical, vectors, catalog)

    def current(self) -> Generation | None:
        """The open indexes, re-opened if another process changed them."""
        stamp = self.stamp()
        live = self._live
        if live is not None and live.stamp == stamp:
            return live
        with self._lock:
            stamp = self.stamp()
            if self._live is not None and self._live.stamp == stamp:
                return self._live
            meta = self.read_meta() if stamp else None
            try:
                self._live = self.open(meta, stamp) if meta else None
            except Exception as exc:  # damaged files: tantivy, usearch, numpy or sqlite
                assert meta is not None
                if _disk_full(self.root):
                    # SQLite cannot create its shared-memory file on a full disk and says
                    # "disk I/O error": the files are fine, so nothing is set aside.
                    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root))
                    raise IndexUnavailable(
                        "the disk holding the search index is full; free some space"
                    ) from full
                self._set_aside(meta, exc)
                self._live = None
            if self._live is not None and self.verify_in_background:
                self._start_verifier()
            return self._live

    # -- checksums -------------------------------------------------------------------------

    verify_in_background = True  # hash the open generation's files once, in a thread

    def writer_active(self) -> bool:
        """Whether a writer (in any process, this one included) holds the index lock."""
        try:
            with (self.root / ".lock").open("a") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except OSError:
            return False
        return False

    def settled(self) -> bool:
        """No writer is at work and none died mid-write: the manifest describes the files."""
        return not self.marker.exists() and not self.writer_active()

    def _start_verifier(self) -> None:
        if self._verifier is None or not self._verifier.is_alive():
            self._verifier = threading.Thread(
                target=self.verify_quietly, name="index-verify", daemon=True
            )
            self._verifier.start()

    def wait_checked(self, timeout: float | None = None) -> bool:
        """Wait for the background checksum check (it opens the catalog, which creates
        SQLite's side files in the generation's folder); returns whether none is running."""
        thread = self._verifier
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def verify_quietly(self) -> None:
        try:
            self.verify()
        except OSError as exc:
            # A full or failing disk: the generation is not judged damaged, and the check
            # runs again when the index is next opened. One line, not a traceback.
            log.warning("checking the index generation's checksums did not finish: %s", exc)
        except Exception:
            log.exception("checking the index generation's checksums failed")

    def verify(self) -> bool:
        """Hash the live generation's files not yet hashed by this process; a generation
        that fails is set aside (and rebuilt by whoever searches next). Returns True when
        the files match. A writer's leftovers (the marker, no writer alive) are adopted:
        the indexer's own bookkeeping redoes what it left half done."""
        live = self._live
        if live is None:
            return True
        if self.marker.exists() and not self.writer_active():
            with self.write_lock(blocking=False):
                pass  # (the manifest is refreshed as the lock is let go)
        if not self.settled():
            return True  # judged again when the writer switches CURRENT
        folder = live.folder
        listed = manifests.read(folder)
        if listed is None:
            return True
        skip = {(rel, sha) for f, rel, sha in self._verified if f == str(folder)}
        try:
            done = manifests.check_all(folder, listed, skip=skip)
        except manifests.ManifestError as exc:
            # Only damage if nothing changed meanwhile: same manifest, no writer, same CURRENT.
            if manifests.read(folder) == listed and self.settled() and self._live is live:
                with self._lock:
                    if self._live is live:
                        self._set_aside(live.meta, exc)
                        self._live = None
                return False
            return True
        self._verified.update((str(folder), rel, sha) for rel, sha in done)
        return True

    def _set_aside(self, meta: Meta, exc: BaseException) -> None:
        """Move a generation that cannot be opened out of the way (kept for a post-mortem as
        ``broken-<dir>-<time>``) and retire CURRENT, so the next build starts clean."""
        name = str(meta.get("dir", ""))
        self.damaged = (
            f"index generation {name} could not be opened ({exc.__class__.__name__}: {exc})"
        )
        log.error("%s; set aside, the index will be rebuilt", self.damaged)
        try:
            os.replace(self.root / name, self.root / f"broken-{name}-{time.time_ns()}")
        except OSError:
            pass  # another process moved it first
        if self.read_meta() is None or (self.read_meta() or {}).get("dir") == name:
            self.current_path.unlink(missing_ok=True)

    def forget(self) -> None:
        """Drop the open generation (after this process switched CURRENT)."""
        with self._lock:
            self._live = None

    @contextmanager
    def write_lock(self, *, blocking: bool = True) -> Iterator[bool]:
        """Serialise writers within this process and across processes; yields whether the
        lock is held (always, unless ``blocking`` is False and another writer has it).

        The outermost holder marks the index as being written and, as it lets go, writes
        the live generation's manifest (hashing the files it changed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self._writing.acquire(blocking=blocking):
            yield False
            return
        try:
            if self._depth:
                self._depth += 1
                try:
                    yield True
                finally:
                    self._depth -= 1
                return
            with (self.root / ".lock").open("a") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield False
                    return
                self._depth = 1
                try:
                    self.marker.touch()
                    yield True
                    self._write_manifest()
                finally:
                    self._depth = 0
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._writing.release()

    def _write_manifest(self) -> None:
        """Record the live generation's checksums, then clear the marker (a failure leaves
        the marker: the manifest is not trusted until a writer finishes cleanly)."""
        meta = self.read_meta()
        if meta is not None:
            manifests.refresh(self.root / str(meta["dir"]))
        self.marker.unlink(missing_ok=True)

    def new_folder(self, name: str) -> Path:
        """A fresh generation folder (fails if it exists)."""
        folder = self.root / name
        folder.mkdir(parents=True)
        return folder

    def drop_old(self, keep: str) -> None:
        """Delete every generation folder but ``keep``."""
        for child in self.root.iterdir():
            if child.is_dir() and child.name.startswith("v") and child.name != keep:
                shutil.rmtree(child, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        """What the current index holds (for ``papersift index`` and the web app)."""
        live = self.current()
        if live is None:
            return {"built": False, "docs": 0, "vectors": 0, "path": str(self.root)}
        return {"built": True, "path": str(live.folder), **live.meta}
