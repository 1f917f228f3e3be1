"""Index snapshots: one indexer publishes generations, every other host follows them.

A snapshot store is a folder (``file://``, e.g. a shared volume) or an S3-compatible bucket
(``s3://``), reached through fsspec (s3fs for S3), laid out as::

    LATEST.json                     {"base": "v<ns>", "deltas": 3, "docs": N, "model": ...}
    v<ns>/base/MANIFEST.json        sha256 and size of every file below
    v<ns>/base/lexical/..., flat.npz | ivf.faiss | hnsw.usearch, catalog.sqlite, vocab.json.gz
    v<ns>/delta-000001/MANIFEST.json, docs.jsonl.gz, vectors.npz, rows.json

A **base** is a full copy of one generation (the catalog as an SQLite backup, so its bytes are
fixed). A **delta** holds what changed since the one before it, found by comparing the live
catalog with the catalog as last published (kept at ``index/publish/catalog.sqlite``): the
papers whose text or vector changed (their index fields, ``docs.jsonl.gz``), their vectors
(``vectors.npz``: keys + float32 rows), and the catalog rows to set and to drop
(``rows.json``). A follower
applies a delta with the same code the indexer uses for an incremental update, so a month of
new papers moves as a few MB instead of a 1.5 GB vector file. ``LATEST.json`` is written
last: a follower never sees a delta whose files are not all there. A rebuild on the publisher
(a new generation folder), too many deltas, or a delta larger than a fifth of the base starts
a new base.

Why fsspec: the same calls reach a folder, S3, MinIO or GCS, and s3fs does multipart uploads
and retries; only the snapshot layout and the catalog diff are written here.

Following is in :mod:`papersift.search.follow`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from papersift.search import manifest as manifests
from papersift.search.catalog import Catalog
from papersift.search.vectors import VectorIndex
from papersift.settings import Settings
from papersift.store import search_docs
from papersift.store.db import Database
from papersift.store.search_docs import PaperDoc

log = logging.getLogger(__name__)

LATEST = "LATEST.json"
MAX_DELTAS = 50  # then a new base: a new follower would replay too many
MAX_DELTA_SHARE = 0.2  # a delta bigger than this share of the base: publish a new base
_BLOCK = 1 << 20

Row = tuple[int, str, str | None, str | None]  # a catalog row


class SnapshotError(RuntimeError):
    """A snapshot cannot be published or followed (the message says why)."""


# -- the store ---------------------------------------------------------------------------


class Store:
    """The snapshot store behind a URL (fsspec file system + root path)."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        import fsspec  # type: ignore[import-untyped]

        options: dict[str, Any] = {}
        if url.startswith("s3://"):
            try:
                import s3fs  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
            except ImportError:
                raise SnapshotError(
                    "s3:// snapshots need s3fs: pip install 'papersift[s3]'"
                ) from None
            if endpoint_url:
                options["endpoint_url"] = endpoint_url
            options["skip_instance_cache"] = True  # one client per store (forked workers)
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **options)
        self.local = url.startswith("file://")

    @classmethod
    def of(cls, settings: Settings) -> Store:
        if not settings.snapshot_url:
            raise SnapshotError("no snapshot store: set snapshot_url (PAPERSIFT_SNAPSHOT_URL)")
        return cls(settings.snapshot_url, settings.snapshot_endpoint_url)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def read_json(self, *parts: str) -> Any:
        """A JSON file of the store, or None when it is not there."""
        try:
            return json.loads(self.fs.cat_file(self.path(*parts)))
        except FileNotFoundError:
            return None

    def put_file(self, local: Path, *parts: str) -> None:
        target = self.path(*parts)
        if self.local:
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{target}.{os.getpid()}.tmp"
            self.fs.put_file(str(local), tmp)
            self.fs.mv(tmp, target)  # a rename: readers see all of a file or none
        else:
            self.fs.put_file(str(local), target)  # an S3 PUT is atomic

    def write_json(self, data: Any, *parts: str) -> None:
        target = self.path(*parts)
        body = json.dumps(data, sort_keys=True).encode()
        if self.local:
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{target}.{os.getpid()}.tmp"
            self.fs.pipe_file(tmp, body)
            self.fs.mv(tmp, target)
        else:
            self.fs.pipe_file(target, body)

    def latest(self) -> dict[str, Any] | None:
        if not self.local:
            self.fs.invalidate_cache()
        data = self.read_json(LATEST)
        return data if isinstance(data, dict) and data.get("base") else None

    def download(
        self, parts: tuple[str, ...], local: Path, entry: dict[str, Any], rate_mb: float = 0.0
    ) -> None:
        """One file to ``local`` (through a ``.part`` file), checked against its manifest
        entry as it streams; ``rate_mb`` caps the speed (MB/s, 0: none)."""
        import hashlib

        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(local.name + ".part")
        digest = hashlib.sha256()
        started, done = time.monotonic(), 0
        block = min(_BLOCK, int(rate_mb * 1e6 / 4)) if rate_mb else _BLOCK
        with self.fs.open(self.path(*parts), "rb") as src, part.open("wb") as dst:
            while chunk := src.read(max(block, 4096)):
                digest.update(chunk)
                dst.write(chunk)
                done += len(chunk)
                if rate_mb:
                    ahead = done / (rate_mb * 1e6) - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        if done != entry["size"] or digest.hexdigest() != entry["sha256"]:
            part.unlink(missing_ok=True)
            raise SnapshotError(f"{'/'.join(parts)} does not match its checksum")
        os.replace(part, local)


# -- publishing --------------------------------------------------------------------------


def _link_or_copy(src: Path, dest: Path) -> None:
    """Hard links where possible: the indexer replaces files by renaming, so a link keeps
    the bytes of the moment (tantivy's segment files are never rewritten)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _stage_base(folder: Path, catalog: Catalog, stage: Path) -> None:
    for rel, path in manifests.listed_files(folder):
        if not rel.endswith(".sqlite"):
            _link_or_copy(path, stage / rel)
    catalog.copy_to(stage / "catalog.sqlite")


def _published_rows(path: Path) -> Iterator[list[Row]]:
    if not path.exists():
        return
    yield from Catalog(path).iter_rows()


def _diff(live: Catalog, published: Path) -> tuple[list[Row], list[Row]]:
    """(rows new or changed in ``live``, rows gone from it) against the published catalog,
    by a merge of the two in key order."""

    def flat(batches: Iterator[list[Row]]) -> Iterator[Row]:
        for batch in batches:
            yield from batch

    changed: list[Row] = []
    gone: list[Row] = []
    old = flat(_published_rows(published))
    prev = next(old, None)
    for row in flat(live.iter_rows()):
        while prev is not None and prev[0] < row[0]:
            gone.append(prev)
            prev = next(old, None)
        if prev is not None and prev[0] == row[0]:
            if tuple(prev) != tuple(row):
                changed.append(row)
            prev = next(old, None)
        else:
            changed.append(row)
    while prev is not None:
        gone.append(prev)
        prev = next(old, None)
    return changed, gone


def _stage_delta(
    db: Database,
    folder: Path,
    meta: dict[str, Any],
    changed: list[Row],
    gone: list[Row],
    stage: Path,
) -> None:
    stage.mkdir(parents=True)
    with db.session() as s:
        docs = search_docs.paper_docs(s, [pid for _k, pid, _l, _v in changed])
    with gzip.open(stage / "docs.jsonl.gz", "wt", encoding="utf-8") as fh:
        for _k, pid, lex, _v in changed:
            doc = docs.get(pid)
            if doc is None or lex is None:
                continue  # left the database meanwhile, or not in the lexical index
            record = asdict(doc)
            record["published"] = doc.published.isoformat() if doc.published else None
            fh.write(json.dumps(record) + "\n")
    keys = np.array([k for k, _p, _l, vec in changed if vec is not None], dtype=np.uint64)
    matrix = np.zeros((0, int(meta.get("dim") or 1)), dtype=np.float32)
    if len(keys) and meta.get("dim") and VectorIndex.exists(folder):
        index = VectorIndex.load(folder, int(meta["dim"]), view=True)
        found, matrix = index.get(keys)
        keys = keys[found]
    np.savez(stage / "vectors.npz", keys=keys, matrix=matrix)
    rows = [list(r) for r in changed]
    (stage / "rows.json").write_text(json.dumps({"rows": rows, "removed": [list(r) for r in gone]}))


def read_delta(folder: Path) -> tuple[list[PaperDoc], np.ndarray, np.ndarray, list[Row], list[Row]]:
    """(docs, vector keys, vectors, catalog rows, removed rows) of a downloaded delta."""
    docs: list[PaperDoc] = []
    with gzip.open(folder / "docs.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if record.get("published"):
                record["published"] = date.fromisoformat(record["published"])
            docs.append(PaperDoc(**record))
    with np.load(folder / "vectors.npz") as data:
        keys, matrix = data["keys"].astype(np.uint64), data["matrix"].astype(np.float32)
    listed = json.loads((folder / "rows.json").read_text())
    rows = [(int(k), str(p), lex, vec) for k, p, lex, vec in listed["rows"]]
    removed = [(int(k), str(p), lex, vec) for k, p, lex, vec in listed["removed"]]
    return docs, keys, matrix, rows, removed


def _upload(store: Store, stage: Path, prefix: tuple[str, ...]) -> dict[str, Any]:
    listed = manifests.build(stage, live=False)
    for rel in listed["files"]:
        store.put_file(stage / rel, *prefix, *rel.split("/"))
    manifests.write(stage, listed)
    store.put_file(stage / manifests.NAME, *prefix, manifests.NAME)
    return listed


def publish_snapshot(settings: Settings, db: Database) -> str:
    """Bring the index in step with the database and publish it to ``snapshot_url``: a new
    base when there is none for this generation, else a delta of what changed. Returns one
    line saying what was published (the queue runs this as a job)."""
    from papersift.search.service import get_service

    store = Store.of(settings)
    service = get_service(settings, db)
    service.sync()
    gens = service.generations
    work = gens.root / "publish"
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    published = work / "catalog.sqlite"
    stage = work / f"stage-{time.time_ns()}"
    try:
        with gens.write_lock():
            meta = gens.read_meta()
            if meta is None:
                raise SnapshotError("nothing to publish: the index is empty")
            name = str(meta["dir"])
            live = gens.open(meta, gens.stamp(), writable=True)
            state = json.loads(state_path.read_text()) if state_path.exists() else {}
            latest = store.latest()
            full = (
                state.get("url") != store.url
                or state.get("base") != name
                or latest is None
                or (latest.get("base"), latest.get("deltas")) != (name, state.get("deltas"))
                or int(state.get("deltas", 0)) >= MAX_DELTAS
                or not published.exists()
            )
            changed: list[Row] = []
            gone: list[Row] = []
            if not full:
                changed, gone = _diff(live.catalog, published)
                if not changed and not gone:
                    live.catalog.close()
                    return f"nothing new to publish ({name} delta {state['deltas']} is current)"
                full = len(changed) + len(gone) > MAX_DELTA_SHARE * max(1, int(meta["docs"]))
            if full:
                _stage_base(live.folder, live.catalog, stage)
            else:
                _stage_delta(db, live.folder, meta, changed, gone, stage)
            live.catalog.close()
        deltas = 0 if full else int(state["deltas"]) + 1
        prefix = (name, "base") if full else (name, f"delta-{deltas:06d}")
        _upload(store, stage, prefix)
        info = {k: meta.get(k) for k in ("docs", "vectors", "model", "dim")}
        store.write_json({"base": name, "deltas": deltas, "published": time.time(), **info}, LATEST)
        if full:
            tmp = work / ".catalog.tmp"
            shutil.copyfile(stage / "catalog.sqlite", tmp)
            os.replace(tmp, published)
        else:
            catalog = Catalog(published)
            catalog.remove([r[0] for r in gone])
            catalog.put(changed)
            catalog.close()
        state_path.write_text(json.dumps({"url": store.url, "base": name, "deltas": deltas}))
    except (OSError, sqlite3.Error) as exc:
        raise SnapshotError(f"publishing to {store.url} failed: {exc}") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    what = "base" if full else f"delta {deltas} ({len(changed)} changed, {len(gone)} removed)"
    log.info("published %s %s to %s", name, what, store.url)
    return f"published {name} {what} to {store.url}"
