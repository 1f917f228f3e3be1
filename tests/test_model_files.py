"""The bundled model files: tokenizer shipped with papersift, weights checked by checksum."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from papersift.search import embedder, modelfiles


def test_default_model_uses_the_bundled_tokenizer() -> None:
    files = modelfiles.resolve_model()
    assert files.tokenizer_path.is_relative_to(modelfiles.BUNDLED_TOKENIZER_DIR)
    assert files.tokenizer_path.is_file()
    assert (files.max_seq_length, files.pooling, files.normalize) == (256, "mean", True)


def test_a_damaged_model_file_is_refused(tmp_path: Path) -> None:
    good = modelfiles.resolve_model().onnx_path
    copy = tmp_path / "model.onnx"
    shutil.copyfile(good, copy)
    modelfiles.verify_checksum(copy, modelfiles.DEFAULT_MODEL_SHA256)  # intact copy passes
    with copy.open("r+b") as fh:  # flip one byte in the middle
        fh.seek(copy.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(modelfiles.EmbedderError, match="damaged"):
        modelfiles.verify_checksum(copy, modelfiles.DEFAULT_MODEL_SHA256)
    copy.write_bytes(b"")
    with pytest.raises(modelfiles.EmbedderError, match="reinstall"):
        modelfiles.verify_checksum(copy, modelfiles.DEFAULT_MODEL_SHA256)


def test_document_int8_setting_selects_its_own_model_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAPERSIFT_DOCUMENT_INT8", raising=False)
    assert not embedder.get_embedder().model_id.endswith("-doc-int8")
    monkeypatch.setenv("PAPERSIFT_DOCUMENT_INT8", "1")
    int8 = embedder.get_embedder()
    assert int8.model_id.endswith("-doc-int8")  # stored apart from float embeddings
    vector = int8.encode(["sparse attention for long documents"])[0]
    assert abs(float((vector**2).sum()) - 1.0) < 1e-3


def test_model_hashes_are_kept_for_the_next_process_but_not_for_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERSIFT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"first model")
    first = modelfiles.file_hashes(model)
    assert first[0] == hashlib.sha256(b"first model").hexdigest()
    stamp = model.stat().st_mtime_ns

    def no_hashing(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("hashed again")

    with monkeypatch.context() as patch:  # a new process, which must not read the file
        patch.setattr(modelfiles, "_hashes", {})
        patch.setattr(modelfiles.hashlib, "sha256", no_hashing)  # (hashlib's own)
        assert modelfiles.file_hashes(model) == first
    time.sleep(0.05)  # (past a coarse file clock's tick)
    model.write_bytes(b"other model")  # same size, new bytes, the old modification time
    os.utime(model, ns=(stamp, stamp))
    monkeypatch.setattr(modelfiles, "_hashes", {})
    assert modelfiles.file_hashes(model)[0] == hashlib.sha256(b"other model").hexdigest()
    (tmp_path / "cache" / "models" / "file-hashes.json").write_text("[not a record")
    monkeypatch.setattr(modelfiles, "_hashes", {})
    assert (
        modelfiles.file_fingerprint(model)
        == hashlib.blake2b(b"other model", digest_size=6).hexdigest()
    )
