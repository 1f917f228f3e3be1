"""The opt-in disk cache of document embeddings by text (``PAPERSIFT_EMBED_CACHE``)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

from papersift.settings import current as current_settings


class TextCache:
    """Opt-in disk cache of document embeddings by text (``PAPERSIFT_EMBED_CACHE=folder``).

    The database already keeps every paper's embedding; this cache is for the cases where the
    same texts go into many fresh databases: test sessions and evaluation runs. One SQLite file
    per model, float16 vectors keyed by the SHA-1 of the text.
    """

    def __init__(self, folder: Path, model_id: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_id)
        self.path = folder / f"{safe}.sqlite"
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS vec (sha TEXT PRIMARY KEY, v BLOB NOT NULL)")

    @classmethod
    def from_env(cls, model_id: str) -> TextCache | None:
        folder = current_settings().embed_cache
        return cls(folder, model_id) if folder else None

    @staticmethod
    def _sha(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def get(self, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Cached vectors by position in ``texts``."""
        shas = [self._sha(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with closing(sqlite3.connect(self.path, timeout=30)) as conn:
            for start in range(0, len(shas), 500):
                chunk = shas[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for sha, blob in conn.execute(
                    f"SELECT sha, v FROM vec WHERE sha IN ({marks})", chunk
                ):
                    found[sha] = np.frombuffer(blob, dtype="<f2").astype(np.float32)
        return {i: found[sha] for i, sha in enumerate(shas) if sha in found}

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [
            (self._sha(t), np.asarray(v, dtype="<f2").tobytes())
            for t, v in zip(texts, vectors, strict=True)
        ]
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            conn.executemany("INSERT OR REPLACE INTO vec(sha, v) VALUES (?, ?)", rows)
