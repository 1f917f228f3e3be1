"""Following a snapshot store: a ``serve`` host with ``snapshot_url`` keeps the newest
published generation (see :mod:`papersift.search.snapshots` for the layout).

Every ``snapshot_poll_seconds`` one process per home (a non-blocking file lock picks it)
reads ``LATEST.json``. A new base is downloaded into ``index/.incoming-<name>`` while the old
generation keeps serving; each file streams through sha256 and must match the base's manifest,
then the folder is renamed into place and ``CURRENT`` switched (under the index write lock,
so readers in every worker re-open it on their next search). Deltas are applied in order on
top, each also checked first. A follower killed mid-download restarts on the next start:
finished files that still match their checksum are kept, ``.part`` files are fetched again.
The applied base and delta are recorded in ``CURRENT`` (``snapshot``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from papersift.search import manifest as manifests
from papersift.search.catalog import paper_key
from papersift.search.generations import Generations
from papersift.search.indexer import Indexer
from papersift.search.snapshots import SnapshotError, Store, read_delta
from papersift.search.vectors import VectorIndex
from papersift.settings import Settings

log = logging.getLogger(__name__)


def _fetch(store: Store, prefix: tuple[str, ...], dest: Path, rate_mb: float) -> dict[str, Any]:
    """Download one base or delta into ``dest`` (resuming: matching files are kept);
    returns its manifest with this host's modification times."""
    listed = store.read_json(*prefix, manifests.NAME)
    if not isinstance(listed, dict) or not isinstance(listed.get("files"), dict):
        raise SnapshotError(f"{'/'.join(prefix)} has no manifest")
    dest.mkdir(parents=True, exist_ok=True)
    for rel, entry in listed["files"].items():
        if ".." in rel.split("/") or rel.startswith("/"):
            raise SnapshotError(f"{rel}: not a file name inside the snapshot")
        local = dest / rel
        if local.is_file():
            try:
                manifests.check_file(dest, rel, entry)
                entry["mtime_ns"] = local.stat().st_mtime_ns
                continue  # fetched before this process was stopped
            except manifests.ManifestError:
                local.unlink()
        store.download((*prefix, *rel.split("/")), local, entry, rate_mb)
        entry["mtime_ns"] = local.stat().st_mtime_ns
    return listed


class Follower:
    """Brings one home's index to the store's newest snapshot (see the module docstring)."""

    def __init__(self, settings: Settings, generations: Generations) -> None:
        self.settings = settings
        self.gens = generations
        self.store = Store.of(settings)
        self.rate = float(settings.snapshot_download_rate)

    def once(self) -> str | None:
        """One look at the store; says what changed (None: nothing, or another process of
        this home is following right now)."""
        root = self.gens.root
        root.mkdir(parents=True, exist_ok=True)
        with (root / ".follow.lock").open("a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                return self._follow()
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _have(self) -> dict[str, Any]:
        meta = self.gens.read_meta() or {}
        have = meta.get("snapshot") or {}
        if have.get("url") != self.store.url or have.get("base") != meta.get("dir"):
            return {}
        return dict(have)

    def _follow(self) -> str | None:
        latest = self.store.latest()
        if latest is None:
            return None
        base, deltas = str(latest["base"]), int(latest.get("deltas", 0))
        mine = self.gens.root / "publish" / "state.json"
        if mine.exists() and json.loads(mine.read_text()).get("base") == base:
            return None  # this home published it (the indexer's own serve host)
        have = self._have()
        done: list[str] = []
        if have.get("base") != base:
            self._adopt_base(latest)
            have = {"base": base, "deltas": 0}
            done.append(f"base {base}")
        for n in range(int(have.get("deltas", 0)) + 1, deltas + 1):
            self._apply_delta(base, n)
            done.append(f"delta {n}")
        return ", ".join(done) or None

    def _adopt_base(self, latest: dict[str, Any]) -> None:
        base = str(latest["base"])
        incoming = self.gens.root / f".incoming-{base}"
        for old in self.gens.root.glob(".incoming-*"):
            if old != incoming:
                shutil.rmtree(old, ignore_errors=True)  # an older base half fetched
        listed = _fetch(self.store, (base, "base"), incoming, self.rate)
        manifests.write(incoming, manifests.build(incoming, previous=listed))
        with self.gens.write_lock():
            target = self.gens.root / base
            if target.exists():
                shutil.rmtree(target)  # an adoption cut short after its rename
            os.replace(incoming, target)
            before = self.gens.read_meta() or {}
            self.gens.write_meta(
                {
                    "dir": base,
                    "gen": int(before.get("gen", 0)) + 1,
                    **{k: latest.get(k) for k in ("docs", "vectors", "model", "dim")},
                    "updated": time.time(),
                    "snapshot": {"url": self.store.url, "base": base, "deltas": 0},
                }
            )
            self.gens.drop_old(keep=base)
        self.gens.forget()
        log.info("index snapshot %s adopted from %s", base, self.store.url)

    def _apply_delta(self, base: str, n: int) -> None:
        """Apply delta ``n`` with the indexer's own incremental-update steps."""
        name = f"delta-{n:06d}"
        incoming = self.gens.root / f".incoming-{base}-{name}"
        _fetch(self.store, (base, name), incoming, self.rate)
        docs, keys, matrix, rows, removed = read_delta(incoming)
        gens = self.gens
        with gens.write_lock():
            meta = gens.read_meta()
            if meta is None or meta.get("dir") != base:
                raise SnapshotError(f"delta {n} of {base} found another generation live")
            live = gens.open(meta, gens.stamp(), writable=True)
            try:
                Indexer._write_lexical(live, docs, [r[1] for r in removed])
                dim = int(meta.get("dim") or matrix.shape[1] or 1)
                vectors = live.vectors or VectorIndex(dim, gens.params)
                vectors.remove([r[0] for r in removed] + [paper_key(d.id) for d in docs])
                if len(keys):
                    vectors.add(keys, matrix)
                if meta.get("dim"):
                    vectors.save(live.folder)
                live.catalog.put(rows)  # exactly as on the publisher
                meta.update(
                    gen=int(meta.get("gen", 0)) + 1,
                    docs=len(live.catalog),
                    vectors=live.catalog.count_vectors(),
                    updated=time.time(),
                    snapshot={"url": self.store.url, "base": base, "deltas": n},
                )
                gens.write_meta(meta)
            finally:
                live.catalog.close()
        gens.forget()
        shutil.rmtree(incoming, ignore_errors=True)
        log.info("index snapshot %s %s applied (%d papers)", base, name, len(docs))


def follow_forever(
    settings: Settings, generations: Generations, stop: threading.Event
) -> threading.Thread:
    """Start a daemon thread that follows the store until ``stop`` is set."""
    follower = Follower(settings, generations)

    def loop() -> None:
        while True:
            try:
                changed = follower.once()
                if changed:
                    log.info("index follows %s: %s", follower.store.url, changed)
            except Exception:
                log.exception("following index snapshots at %s failed", follower.store.url)
            if stop.wait(settings.snapshot_poll_seconds):
                return

    thread = threading.Thread(target=loop, name="snapshot-follow", daemon=True)
    thread.start()
    return thread
