"""The fused document graph (search/fusion.py): same vectors as the export, made once, and
every way it can fail leaves the embedder on the model as it is. Real onnxruntime and onnx."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from papersift.search import fusion
from papersift.search.embedder import Embedder, resolve_model
from papersift.search.modelfiles import file_fingerprint

TEXTS = [
    "Sparse attention for long documents. We study transformers whose attention is sparse "
    "and show that retrieval quality holds while the cost falls. " * 3,
    "graph neural networks",
    "",
]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PAPERSIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PAPERSIFT_QUERY_INT8", "0")
    monkeypatch.delenv("PAPERSIFT_EMBED_CACHE", raising=False)  # really run the model
    return tmp_path / "cache" / "models"


def _export_vectors(emb: Embedder) -> np.ndarray:
    """The same texts through the graph as exported (the unfused reference)."""
    from papersift.search.embedder import _session

    fused = emb.session
    emb.session = _session(emb.files.onnx_path, 1)
    try:
        return emb.encode(TEXTS)
    finally:
        emb.session = fused


def test_documents_run_on_the_fused_graph_with_the_same_vectors(cache: Path) -> None:
    emb = Embedder()
    assert emb.document_path.name.endswith("-fused.onnx") and emb.document_path.parent == cache
    ops = collections.Counter(n.op_type for n in onnx.load(str(emb.document_path)).graph.node)
    assert ops["Attention"] == 6 and ops["BiasGelu"] == 6 and ops["Softmax"] == 0
    vecs = emb.encode(TEXTS)
    assert np.allclose(vecs, _export_vectors(emb), atol=1e-4)
    assert emb.model_id == resolve_model().model_id  # stored embeddings stay valid
    stamp = emb.document_path.stat().st_mtime_ns
    again = Embedder()  # made once per model fingerprint
    assert again.document_path == emb.document_path
    assert emb.document_path.stat().st_mtime_ns == stamp
    assert not list(cache.glob(".derive-*"))


def test_a_corrupt_fused_file_falls_back_and_is_removed(cache: Path) -> None:
    source = resolve_model().onnx_path
    cache.mkdir(parents=True)
    bad = cache / f"{file_fingerprint(source)}-fused.onnx"
    bad.write_bytes(b"not an onnx model")
    emb = Embedder()
    assert emb.document_path == source and not bad.exists()
    assert np.allclose(np.linalg.norm(emb.encode(TEXTS), axis=1), 1.0, atol=1e-5)
    assert Embedder().document_path == bad  # the next load makes it again


def test_a_fusion_that_strays_is_refused(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fusion, "MIN_FUSED_AGREEMENT", 1.01)  # nothing agrees so well
    with caplog.at_level("WARNING", logger="papersift.search"):
        emb = Embedder()
    assert emb.document_path == emb.files.onnx_path and "agrees too little" in caplog.text
    assert not list(cache.glob("*-fused.onnx"))


def _tiny_model(path: Path) -> None:
    """A graph with the embedder's inputs but no attention: nothing for fusion to match."""
    table = numpy_helper.from_array(
        np.random.default_rng(1).normal(size=(30522, 8)).astype(np.float32), "table"
    )
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"])],
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", 8])],
        [table],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_model_without_the_pattern_is_used_as_it_is(cache: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    _tiny_model(folder / "model.onnx")
    (folder / "tokenizer.json").symlink_to(resolve_model().tokenizer_path)
    assert fusion.fused_model(folder / "model.onnx", "tiny") is None
    emb = Embedder(folder)
    assert emb.document_path == folder / "model.onnx" and emb.dim == 8
    assert not list(cache.glob("*-fused.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not onnx")
    assert fusion.fused_model(garbage, "garbage") is None  # a warning, not a crash


def test_int8_documents_are_opt_in_under_their_own_model_id(cache: Path) -> None:
    float_emb = Embedder()
    int8 = Embedder(document_int8=True)
    assert int8.document_path.name.endswith("-doc-int8.onnx")
    assert int8.model_id == f"{float_emb.model_id}-doc-int8"
    ops = collections.Counter(n.op_type for n in onnx.load(str(int8.document_path)).graph.node)
    assert ops["QAttention"] == 6
    a, b = int8.encode(TEXTS), float_emb.encode(TEXTS)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    agreement = (a * b).sum(axis=1)
    assert float(agreement[:2].min()) > 0.99  # real texts; an empty one only two tokens
    assert float(agreement.min()) > 0.95


@pytest.fixture()
def query_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model cache with the int8 query model on (the service's default)."""
    monkeypatch.setenv("PAPERSIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PAPERSIFT_QUERY_INT8", raising=False)
    monkeypatch.delenv("PAPERSIFT_EMBED_CACHE", raising=False)
    return tmp_path / "cache" / "models"


def test_a_query_only_process_never_loads_the_document_model(query_cache: Path) -> None:
    """The int8 model's agreement is measured once and kept; the next process answers
    queries without the document model, and loads it on its first document."""
    first = Embedder()
    records = list(query_cache.glob("*-int8.onnx.agreement.json"))
    assert first.query_session is not None and len(records) == 1
    reference = first.encode(TEXTS)
    later = Embedder()
    assert later.query_session is not None and later._session is None
    query = later.encode_query("graph neural networks")
    assert later._session is None and float(query @ reference[1]) > 0.98
    assert np.allclose(later.encode(TEXTS), reference, atol=1e-5)  # loaded now
    assert later._session is not None and later.model_id == first.model_id


def test_a_kept_agreement_is_still_held_to_the_bar(
    query_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    Embedder()
    record = next(query_cache.glob("*-int8.onnx.agreement.json"))
    with monkeypatch.context() as patch, caplog.at_level("WARNING", logger="papersift.search"):
        patch.setattr("papersift.search.embedder.MIN_QUERY_AGREEMENT", 1.01)
        refused = Embedder()
    assert refused.query_session is None and "agrees too little" in caplog.text
    record.write_text("{not json")  # a damaged record is measured again
    again = Embedder()
    assert again.query_session is not None and again._session is not None
    assert '"agreement"' in record.read_text()


def test_a_corrupt_fused_file_found_late_falls_back_under_the_same_model_id(
    query_cache: Path,
) -> None:
    emb = Embedder()  # makes the fused graph and the agreement record
    fused = emb.document_path
    assert fused.name.endswith("-fused.onnx")
    reference = emb.encode(TEXTS)
    fused.write_bytes(b"not an onnx model")
    late = Embedder()
    assert late._session is None  # not loaded yet: the damage is found at the first document
    model_id = late.model_id
    assert np.allclose(late.encode(TEXTS), reference, atol=1e-4)
    assert late.document_path == late.files.onnx_path and not fused.exists()
    assert late.model_id == model_id  # stored embeddings stay valid
