"""The demo corpus that ships inside the package: the five seed listing pages and a slice
of real arXiv listings (its most recent weeks), with their embeddings precomputed.

The embeddings were made by papersift itself (``tools/build_demo_corpus.py``) and are
stored with the model id that made them and the content hash of each paper's text, as the
embeddings table keeps them. They are loaded only when the model id matches the one in
use and only for papers whose text still hashes the same; everything else is embedded as
usual by the index update, so a different model never gets foreign vectors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from papersift.store import papers as paper_store
from papersift.store import search_docs
from papersift.store.db import Database

CORPUS_FILE = "arxiv-recent.jsonl.gz"
VECTORS_FILE = "embeddings.npy"
MANIFEST_FILE = "embeddings.json"


class DemoDataError(Exception):
    """The packaged demo data is missing or damaged."""


def data_dir() -> Path:
    """The package's data folder (a real folder in a wheel or source install)."""
    return Path(str(resources.files("papersift") / "data"))


def seeds_dir() -> Path:
    return data_dir() / "seeds"


def demo_paths() -> list[Path]:
    """What ``papersift demo`` ingests, in order: the real slice, then the seed pages (which
    merge into the slice's records of the same papers)."""
    paths = [data_dir() / CORPUS_FILE, seeds_dir()]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DemoDataError(f"the packaged demo corpus is incomplete: {', '.join(missing)}")
    return paths


@dataclass(frozen=True)
class DemoVectors:
    """The precomputed vectors and what they belong to."""

    model_id: str
    ids: list[str]
    hashes: list[str]
    vectors: np.ndarray


def read_vectors(folder: Path | None = None) -> DemoVectors | None:
    """The packaged vectors, or None when the package has none; DemoDataError if damaged."""
    folder = folder or data_dir()
    manifest_path, vectors_path = folder / MANIFEST_FILE, folder / VECTORS_FILE
    if not manifest_path.is_file() or not vectors_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        vectors = np.load(vectors_path, allow_pickle=False)
        ids = [str(p) for p, _h in manifest["papers"]]
        hashes = [str(h) for _p, h in manifest["papers"]]
        model_id = str(manifest["model_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DemoDataError(f"the packaged demo embeddings are unreadable: {exc}") from None
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise DemoDataError(
            f"the packaged demo embeddings do not fit their manifest "
            f"({vectors.shape} for {len(ids)} papers)"
        )
    return DemoVectors(model_id, ids, hashes, vectors)


def load_vectors(db: Database, model_id: str, demo: DemoVectors | None = None) -> int:
    """Store the packaged vectors of papers whose text is unchanged, when ``model_id`` is the
    model that made them; returns how many were stored (0 for another model)."""
    demo = demo if demo is not None else read_vectors()
    if demo is None or demo.model_id != model_id:
        return 0
    with db.session() as session:
        stored = paper_store.content_hashes(session, demo.ids)
        rows = [
            (pid, chash, demo.vectors[i])
            for i, (pid, chash) in enumerate(zip(demo.ids, demo.hashes, strict=True))
            if stored.get(pid) == chash
        ]
        search_docs.save_embeddings(session, rows, model_id)
    return len(rows)
