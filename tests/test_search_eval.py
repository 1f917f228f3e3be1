"""The quality bar: ``papersift eval`` on the shared collections against the peer baselines.

The bar is read from ../shared/eval/BASELINES.md (not copied here): the default mode must beat
the RRF column on every collection. Corpus embeddings are cached on disk by ``papersift eval``
itself, so after the first run this takes seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from papersift.cli import app

from .conftest import SHARED

EVAL = SHARED / "eval"
COLLECTIONS = ["cisi", "cranfield"]


def baselines() -> dict[str, dict[str, float]]:
    """{column: {"cisi": nDCG@10, ...}} from the first table of BASELINES.md."""
    text = (EVAL / "BASELINES.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out: dict[str, dict[str, float]] = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        match = re.match(r"(\w+) nDCG@10", cells[0])
        if not match:
            continue
        for name, cell in zip(header[1:], cells[1:], strict=False):
            out.setdefault(name.split(" ")[0], {})[match.group(1).lower()] = float(cell)
    return out


def run_eval_cli(collection: str, mode: str) -> dict:
    result = CliRunner().invoke(app, ["eval", str(EVAL / collection), "--mode", mode, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ndcg@10", "recall@100", "mrr@10"} <= set(data)
    return data


pytestmark = pytest.mark.skipif(
    not EVAL.is_dir(), reason=f"{EVAL} not present (set PAPERSIFT_SHARED)"
)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_default_mode_beats_rrf_baseline(collection: str):
    bar = baselines()["RRF"][collection]
    data = run_eval_cli(collection, "hybrid")
    assert data["ndcg@10"] > bar, (collection, data, bar)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_semantic_mode_reproduces_the_exact_minilm_baseline(collection: str):
    """int8 ONNX + our pooling must match sentence-transformers' MiniLM within noise."""
    bar = baselines()["all-MiniLM-L6-v2"][collection]
    data = run_eval_cli(collection, "semantic")
    assert abs(data["ndcg@10"] - bar) < 0.01, (collection, data, bar)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_lexical_mode_is_as_good_as_bm25s(collection: str):
    bar = baselines()["bm25s"][collection]
    data = run_eval_cli(collection, "lexical")
    assert data["ndcg@10"] > bar - 0.01, (collection, data, bar)


def test_eval_rejects_a_folder_that_is_not_beir(tmp_path: Path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    result = CliRunner().invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 1 and "queries file" in result.output
    (tmp_path / "queries.jsonl").write_text("not json\n")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t1\n")
    result = CliRunner().invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 1 and "not JSON" in result.output
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--mode", "nope"])
    assert result.exit_code == 1 and "unknown mode" in result.output


def test_eval_on_a_tiny_collection(tmp_path: Path):
    docs = [
        ("1", "Graph neural networks", "Message passing on graphs."),
        ("2", "Protein folding", "Predicting structure from sequence."),
        ("3", "Crystal energies", "Formation energies of inorganic crystals."),
    ]
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs)
    )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "protein structure"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "unjudged query"})
        + "\n"
    )
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t2\t1\n")
    for mode in ("hybrid", "lexical", "semantic"):
        result = CliRunner().invoke(app, ["eval", str(tmp_path), "--mode", mode, "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout.strip().splitlines()[-1])
        assert data["queries"] == 1 and data["ndcg@10"] == 1.0 and data["mrr@10"] == 1.0
    result = CliRunner().invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 0 and "ndcg@10" in result.stdout
