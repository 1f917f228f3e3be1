"""The quality bar: ``papersift eval`` on the shared collections against the peer baselines.

The bar is read from ../shared/eval/BASELINES.md (not copied here): the default mode must beat
the RRF column by at least 0.01 nDCG@10 on every collection and never fall below the better of
its own lexical and semantic modes; a change of any one ranking setting must still beat RRF.
Corpus embeddings are cached on disk by ``papersift eval`` itself (LISA and NPL take a few
minutes each the first time), so after the first run this takes seconds per collection.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from papersift.cli import app

from .conftest import SHARED

EVAL = SHARED / "eval"
COLLECTIONS = ["cisi", "cranfield", "lisa", "npl"]
MARGIN = 0.01  # over the peer RRF


def _rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def baselines() -> dict[str, dict[str, float]]:
    """{column: {"cisi": nDCG@10, ...}} from every table of BASELINES.md (a table starts
    at its header row; columns are named by their first word: bm25s, all-MiniLM-L6-v2, RRF)."""
    text = (EVAL / "BASELINES.md").read_text()
    out: dict[str, dict[str, float]] = {}
    header: list[str] = []
    for cells in _rows(text):
        if cells and cells[0] == "collection":
            header = cells
            continue
        match = re.match(r"(\w+) nDCG@10", cells[0]) if cells else None
        if not match or not header:
            continue
        for name, cell in zip(header[1:], cells[1:], strict=False):
            try:
                value = float(cell)
            except ValueError:
                continue
            out.setdefault(name.split(" ")[0], {})[match.group(1).lower()] = value
    return out


@functools.cache
def run_eval_cli(collection: str, mode: str) -> dict:
    """``papersift eval`` through the CLI, once per (collection, mode) per session."""
    result = CliRunner().invoke(app, ["eval", str(EVAL / collection), "--mode", mode, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ndcg@10", "recall@100", "mrr@10"} <= set(data)
    return data


pytestmark = pytest.mark.skipif(
    not EVAL.is_dir(), reason=f"{EVAL} not present (set PAPERSIFT_SHARED)"
)


def test_baselines_cover_every_collection():
    table = baselines()
    for column in ("bm25s", "all-MiniLM-L6-v2", "RRF"):
        assert set(COLLECTIONS) <= set(table[column]), column


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_default_mode_beats_rrf_baseline(collection: str):
    bar = baselines()["RRF"][collection] + MARGIN
    data = run_eval_cli(collection, "hybrid")
    assert data["ndcg@10"] >= bar, (collection, data, bar)
    for mode in ("lexical", "semantic"):
        own = run_eval_cli(collection, mode)
        assert data["ndcg@10"] >= own["ndcg@10"], (collection, mode, data, own)


# One ranking setting changed at a time: the default must not hang on a tuned constant.
PERTURBATIONS = {
    "PEAK_POWER": 2.0,
    "FEEDBACK_LAMBDA": 0.35,
    "DENSE_FEEDBACK": 0.3,
    "TITLE_WEIGHT": 0.1,
    "ALPHA": 0.4,
    "FEEDBACK_DOCS": 5,
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each collection loaded and indexed once (as ``papersift eval`` does), for many runs."""
    from papersift.search import eval as search_eval
    from papersift.search.embedder import get_embedder
    from papersift.settings import load_settings
    from papersift.store.db import Database

    embedder = get_embedder()
    out = {}
    for name in COLLECTIONS:
        coll = search_eval.load_collection(EVAL / name)
        home = tmp_path_factory.mktemp(f"eval-{name}")
        settings = load_settings(home=home, db_url=f"sqlite:///{home / 'eval.db'}")
        db = Database(settings.db_url)
        out[name] = (coll, search_eval.load_collection_into(coll, settings, db, embedder))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("setting", sorted(PERTURBATIONS))
def test_one_setting_changed_still_beats_rrf(
    setting: str, indexed: dict, monkeypatch: pytest.MonkeyPatch
):
    from papersift.search import hybrid
    from papersift.search.metrics import evaluate

    monkeypatch.setattr(hybrid, setting, PERTURBATIONS[setting])
    bars = baselines()["RRF"]
    for name, (coll, service) in indexed.items():
        run = {
            qid: [h.paper_id for h in service.search(text, k=100).hits]
            for qid, text in coll.queries.items()
            if qid in coll.qrels
        }
        score = evaluate(run, coll.qrels)["ndcg@10"]
        assert score > bars[name], (setting, name, score, bars[name])


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
