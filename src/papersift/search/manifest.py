"""Checksums of an index generation: which files it is made of, their sizes and sha256.

A generation folder holds ``MANIFEST.json``::

    {"version": 1, "files": {"lexical/meta.json": {"size": 1234, "sha256": "...",
                                                   "mtime_ns": ...}, ...},
     "sqlite": ["catalog.sqlite"]}

Why both sizes and hashes: sizes are checked on every open (a ``stat`` per file, cheap at any
scale), hashes once per process in the background (the vector file is ~1.5 GB at a million
papers: hashing it on a request path would cost seconds). A live SQLite file (the catalog)
changes bytes whenever WAL frames are checkpointed into it, with the same rows, so it is
checked with ``PRAGMA quick_check`` instead of a hash; copies made for a snapshot are static
and hashed like any other file (``live=False``).

The manifest is written by the writer that holds the index lock when it lets go of it (see
``Generations.write_lock``); a file whose size and mtime did not change keeps its hash, so an
incremental update hashes only what it rewrote. While a writer works (or after one died), the
folder carries a ``.writing`` marker at the index root and nothing is judged against a
manifest that may be stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from papersift.search import spelling

NAME = "MANIFEST.json"
VERSION = 1
_BLOCK = 1 << 20
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp", ".lock")
# Files a generation makes again by itself when they are missing (the spelling vocabulary
# is written on first use, after the manifest): not part of what is checked.
_REBUILT_ON_DEMAND = frozenset({spelling.FILE})

Manifest = dict[str, Any]


class ManifestError(ValueError):
    """A generation's files are not the ones its manifest lists (damage, or a bad copy)."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (hashlib releases the GIL on big blocks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def listed_files(folder: Path) -> Iterable[tuple[str, Path]]:
    """(relative name, path) of the files that make up a generation: hidden files (locks,
    temporaries, tantivy's bookkeeping), SQLite side files and the manifest are not."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if (
            not path.is_file()
            or rel == NAME
            or rel in _REBUILT_ON_DEMAND
            or any(part.startswith(".") for part in Path(rel).parts)
            or rel.endswith(_SKIP_SUFFIXES)
        ):
            continue
        yield rel, path


def build(folder: Path, *, live: bool = True, previous: Manifest | None = None) -> Manifest:
    """The manifest of ``folder`` as it is on disk. ``previous`` entries whose size and mtime
    are unchanged keep their hash; ``live``: SQLite files get a quick_check, not a hash."""
    folder = Path(folder)
    old = (previous or {}).get("files", {})
    files: dict[str, dict[str, Any]] = {}
    sqlite_files: list[str] = []
    for rel, path in listed_files(folder):
        if live and rel.endswith(".sqlite"):
            sqlite_files.append(rel)
            continue
        st = path.stat()
        before = old.get(rel)
        if before and before.get("size") == st.st_size and before.get("mtime_ns") == st.st_mtime_ns:
            sha = str(before["sha256"])
        else:
            sha = sha256_file(path)
        files[rel] = {"size": st.st_size, "sha256": sha, "mtime_ns": st.st_mtime_ns}
    return {"version": VERSION, "files": files, "sqlite": sqlite_files}


def digest(manifest: Manifest) -> str:
    """A short identity of a manifest's contents (names, sizes, hashes)."""
    core = {k: [v["size"], v["sha256"]] for k, v in sorted(manifest.get("files", {}).items())}
    text = json.dumps([core, sorted(manifest.get("sqlite", []))], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read(folder: Path) -> Manifest | None:
    """The folder's manifest, or None when it has none (an older generation) or it is
    unreadable (then the sizes cannot be judged either; opening the files still is)."""
    try:
        data = json.loads((Path(folder) / NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return data


def write(folder: Path, manifest: Manifest) -> None:
    """Replace the folder's manifest atomically."""
    folder = Path(folder)
    tmp = folder / f".{NAME}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(manifest, sort_keys=True))
        os.replace(tmp, folder / NAME)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written manifest behind
        raise


def refresh(folder: Path) -> Manifest:
    """Bring the folder's manifest in step with its files (hashing only changed ones)."""
    manifest = build(folder, previous=read(folder))
    write(folder, manifest)
    return manifest


def check_sizes(folder: Path, manifest: Manifest) -> None:
    """Every listed file exists with its listed size (and every SQLite file exists)."""
    folder = Path(folder)
    for rel, entry in manifest.get("files", {}).items():
        if rel in _REBUILT_ON_DEMAND:  # listed by a manifest written before it was left out
            continue
        try:
            size = (folder / rel).stat().st_size
        except FileNotFoundError:
            raise ManifestError(f"{rel} is missing") from None
        if size != entry["size"]:
            raise ManifestError(f"{rel} is {size} bytes, the manifest says {entry['size']}")
    for rel in manifest.get("sqlite", []):
        if not (folder / rel).is_file():
            raise ManifestError(f"{rel} is missing")


def check_file(folder: Path, rel: str, entry: dict[str, Any]) -> None:
    """One listed file has its listed size and sha256."""
    path = Path(folder) / rel
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ManifestError(f"{rel} is missing") from None
    if size != entry["size"]:
        raise ManifestError(f"{rel} is {size} bytes, the manifest says {entry['size']}")
    if sha256_file(path) != entry["sha256"]:
        raise ManifestError(f"{rel} does not match its sha256 checksum")


def check_sqlite(path: Path) -> None:
    """SQLite's own consistency check of a live database file (read-only)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ManifestError(f"{Path(path).name}: {exc}") from exc
    if rows != [("ok",)]:
        raise ManifestError(f"{Path(path).name} fails SQLite's check: {rows[:3]}")


def check_all(
    folder: Path, manifest: Manifest, *, skip: AbstractSet[tuple[str, str]] = frozenset()
) -> set[tuple[str, str]]:
    """Hash every listed file not in ``skip`` ((name, sha256) pairs already verified) and
    quick_check every SQLite file; returns the pairs verified now. Raises ManifestError."""
    done: set[tuple[str, str]] = set()
    for rel, entry in manifest.get("files", {}).items():
        pair = (rel, str(entry["sha256"]))
        if pair in skip or rel in _REBUILT_ON_DEMAND:
            continue
        check_file(folder, rel, entry)
        done.add(pair)
    for rel in manifest.get("sqlite", []):
        check_sqlite(Path(folder) / rel)
    return done
