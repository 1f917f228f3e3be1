"""One file, one logical transaction, many short database transactions.

A big file used to be one SQLite transaction: every web write (a vote, a sign-up) waited
for the whole file. Now a file goes in three steps, each made of short transactions:

1. **stage**: records are merged (against ``papers`` plus what this file staged already)
   and their final rows written to ``ingest_staged``, one short transaction per batch;
   nothing in ``papers`` changes.
2. **publish**: the staged rows move into ``papers`` in chunks of pure SQL (no Python per
   row); each chunk keeps the rows it replaced.
3. **done** (the commit point): one transaction writes the file's collection and marks
   the batch done; then the staged rows are cleared.

Anything that stops a file before its commit point (a malformed record late in the
file, a database error, kill -9) reverts what was published, chunk by chunk, and drops
what was staged: a failed file leaves nothing behind. A process that died leaves its
batch to the next ingest, ``index`` or ``serve`` start, which reverts it. Readers can see
a file's papers during its publish step (seconds: pure SQL), never before.

Only one batch exists at a time (``ingest_batches.lane`` is unique), so a second ingest
waits for the first: merging stays exact. A batch whose process is gone (same host, pid
not running) or silent for :data:`STALE` is abandoned.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.ingest.errors import IngestError
from papersift.store import staging as staging_store
from papersift.store.collections import upsert_collection
from papersift.store.db import Database, StoreError, store_error_text
from papersift.store.schema_staging import DONE, PUBLISHING, UNDOING

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 2000  # rows per publish / undo / clear transaction: ~0.1-0.2 s on SQLite
STALE = timedelta(minutes=10)  # a batch whose owner wrote nothing for this long is abandoned
WAIT_SECONDS = 3600.0  # how long an ingest waits for another one to finish
POLL_SECONDS = 0.5


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str, heartbeat: datetime, now: datetime) -> bool:
    host, _, pid = owner.rpartition(":")
    if now - heartbeat > STALE:
        return False
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's ingest: only its silence tells
    if int(pid) == os.getpid():
        return False  # this process: an earlier ingest of ours that failed to clean up
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finish_interrupted(db: Database) -> str | None:
    """Revert (or, once done, just clear) a batch whose process abandoned it.

    Returns what was done ("reverted", "cleared"), or None. Called at every ingest,
    ``index`` and ``serve`` start; safe to call while another process ingests.
    """
    with db.session() as session:
        batch = staging_store.current(session)
    if batch is None or _owner_alive(batch.owner, batch.heartbeat_at, datetime.now(UTC)):
        return None
    if batch.state == DONE:
        clear(db, batch.id)
        return "cleared"
    log.warning("reverting an interrupted ingest (%s)", batch.source)
    revert(db, batch.id)
    return "reverted"


def _chunks(db: Database, batch: int, step: Callable[[Session, int, int], bool]) -> None:
    """Run one chunk step per short transaction until it reports nothing left."""
    while True:
        with db.session() as session:
            more = step(session, batch, PUBLISH_CHUNK)
            staging_store.heartbeat(session, batch, datetime.now(UTC))
        if not more:
            return


def publish(db: Database, batch: int, collection: dict[str, Any] | None) -> None:
    """Move a staged batch into papers chunk by chunk, then commit it with its collection."""
    with db.session() as session:
        staging_store.set_state(session, batch, PUBLISHING, datetime.now(UTC))
    _chunks(db, batch, staging_store.publish_chunk)
    with db.session() as session:
        if collection:
            upsert_collection(
                session,
                collection["name"],
                collection["origin"],
                list(collection["order"]),
                title=collection.get("title"),
            )
        staging_store.set_state(session, batch, DONE, datetime.now(UTC))


def revert(db: Database, batch: int) -> None:
    """Undo whatever the batch published, then forget it."""
    with db.session() as session:
        staging_store.set_state(session, batch, UNDOING, datetime.now(UTC))
    _chunks(db, batch, staging_store.undo_chunk)
    clear(db, batch)


def clear(db: Database, batch: int) -> None:
    """Delete the batch's staged rows in short transactions, then free the lane."""
    _chunks(db, batch, staging_store.clear_chunk)
    with db.session() as session:
        staging_store.release(session, batch)


def _claim(db: Database, source: str, wait: float) -> int:
    deadline = time.monotonic() + wait
    while True:
        try:
            with db.session() as session:
                return staging_store.claim(session, source, owner_name(), datetime.now(UTC))
        except IntegrityError:
            pass
        if finish_interrupted(db) is None:
            if time.monotonic() > deadline:
                raise IngestError("another ingest is still running; try again when it is done")
            time.sleep(POLL_SECONDS)


class StagedFile:
    """A file's batch while it is staged: write batches, then commit."""

    def __init__(self, db: Database, batch: int) -> None:
        self.db = db
        self.batch = batch

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for the merge's lookups (reads only: no write lock is taken)."""
        with self.db.session() as session:
            yield session

    def write(self, rows: list[dict]) -> None:
        """Stage merged rows in one short transaction."""
        with self.db.session() as session:
            staging_store.stage(session, self.batch, rows)
            staging_store.heartbeat(session, self.batch, datetime.now(UTC))

    def commit(self, collection: dict[str, Any] | None) -> None:
        """Publish the staged rows and commit the file (with its collection, if any)."""
        publish(self.db, self.batch, collection)


@contextmanager
def staged_file(db: Database, source: str, *, wait: float = WAIT_SECONDS) -> Iterator[StagedFile]:
    """Claim the ingest lane for one file; on any error (or interrupt) before the file is
    committed, what it published is reverted and what it staged dropped."""
    staged = StagedFile(db, _claim(db, source, wait))
    try:
        yield staged
    except BaseException:
        _abandon(db, staged.batch)
        raise
    clear(db, staged.batch)


def _abandon(db: Database, batch: int) -> None:
    try:
        with db.session() as session:
            current = staging_store.current(session)
        if current is None or current.id != batch:
            return
        if current.state == DONE:
            clear(db, batch)
        else:
            revert(db, batch)
    except StoreError as exc:  # the next start finishes the job
        log.warning("failed ingest not reverted yet: %s", store_error_text(exc))
