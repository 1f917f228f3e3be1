"""Recommendations: the metrics on known answers, the method's behaviour on small vectors,
``papersift eval-rec`` on a slice of the CiteULike libraries, and bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from papersift.cli import app
from papersift.rank.rec_eval import (
    RecEvalError,
    holdout,
    load_dataset,
    mean_metrics,
    top_ids,
    user_metrics,
)
from papersift.rank.recommend import (
    ArrayPapers,
    CorpusStats,
    LibraryCooccurrence,
    RecommendError,
    corpus_stats,
    recommend,
    saved_weights,
    shared_terms,
)
from tests.conftest import SHARED

CITEULIKE = SHARED / "eval" / "rec_citeulike"


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_on_a_hand_made_ranking():
    ranked = ["a", "b", "c", "d"] + [f"x{i}" for i in range(30)] + ["e"]
    got = user_metrics(ranked, {"b", "e", "zz"})  # b at rank 2, e at rank 35, zz never
    assert got["recall@20"] == pytest.approx(1 / 3)
    assert got["recall@100"] == pytest.approx(2 / 3)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["ndcg@20"] == pytest.approx((1 / math.log2(3)) / ideal)


def test_perfect_and_empty_rankings():
    assert user_metrics(["a", "b"], {"a", "b"}) == {
        "recall@20": 1.0,
        "recall@100": 1.0,
        "ndcg@20": pytest.approx(1.0),
    }
    assert user_metrics([], {"a"}) == {"recall@20": 0.0, "recall@100": 0.0, "ndcg@20": 0.0}
    assert mean_metrics([user_metrics(["a"], {"a"}), user_metrics(["b"], {"a"})]) == {
        "recall@20": 0.5,
        "recall@100": 0.5,
        "ndcg@20": 0.5,
    }


def test_top_ids_leaves_out_banned_rows():
    ids = ["p0", "p1", "p2", "p3"]
    assert top_ids(ids, np.array([0.9, 0.1, 0.5, 0.7]), {0}, 2) == ["p3", "p2"]


# -- the method on small vectors -------------------------------------------------------------


def _clustered(seed: int = 0) -> ArrayPapers:
    """Three topics of 30 papers each, around orthogonal directions, with topic words."""
    rng = np.random.default_rng(seed)
    dim = 16
    words = ["graph neural network", "protein folding", "galaxy survey"]
    ids, vecs, texts = [], [], []
    for topic in range(3):
        center = np.zeros(dim)
        center[topic] = 1.0
        for i in range(30):
            ids.append(f"t{topic}-{i}")
            vecs.append(center + rng.normal(0, 0.25, dim))
            texts.append(f"{words[topic]} paper {i}")
    return ArrayPapers(ids, np.array(vecs), texts)


def test_recommends_the_saved_topic_with_reasons():
    papers = _clustered()
    stats = corpus_stats(papers.matrix, papers.texts(papers.ids))
    library = [f"t1-{i}" for i in range(5)]
    recs = recommend(library, papers.every_paper(), papers, stats, k=10)
    assert len(recs) == 10
    assert all(r.paper_id.startswith("t1-") for r in recs)
    assert not {r.paper_id for r in recs} & set(library)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    for r in recs:
        assert 1 <= len(r.reasons.nearest) <= 3
        assert all(pid in library for pid, _cos in r.reasons.nearest)
        assert {"protein", "folding"} <= set(r.reasons.terms)
    assert saved_weights(recs)[0][0] in library


def test_exclusions_and_dismissals_are_honoured():
    papers = _clustered()
    stats = corpus_stats(papers.matrix)
    library = [f"t1-{i}" for i in range(5)] + ["t2-0"]
    first = recommend(library, papers.every_paper(), papers, stats, k=90, reasons=False)
    dismissed = [r.paper_id for r in first if r.paper_id.startswith("t2-")][:2]
    sent = first[0].paper_id
    after = recommend(
        library,
        papers.every_paper(),
        papers,
        stats,
        k=90,
        exclude=[sent],
        dismissed_ids=dismissed,
        reasons=False,
    )
    got = [r.paper_id for r in after]
    assert sent not in got and not set(got) & set(dismissed)
    assert len(got) == 90 - len(library) - 1 - len(dismissed)

    def mean_rank(ranking: list[str]) -> float:
        ranks = [i for i, p in enumerate(ranking) if p.startswith("t2-") and p not in dismissed]
        return sum(ranks) / len(ranks)

    # "not interested" pushes the rest of that topic down
    assert mean_rank(got) > mean_rank([r.paper_id for r in first if r.paper_id != sent]) + 1


def test_empty_library_and_unknown_ids_are_clear_errors():
    papers = _clustered()
    stats = corpus_stats(papers.matrix)
    with pytest.raises(RecommendError, match="empty"):
        recommend([], papers.every_paper(), papers, stats)
    with pytest.raises(RecommendError, match="unknown paper id 'nope'"):
        recommend(["nope"], papers.every_paper(), papers, stats)
    with pytest.raises(RecommendError, match="at least two"):
        recommend(["t0-0"], papers.every_paper(), papers, CorpusStats(16))


def test_corpus_stats_are_additive():
    papers = _clustered()
    whole = corpus_stats(papers.matrix)
    parts = CorpusStats(16)
    parts.add(papers.matrix[:40])
    parts.add(papers.matrix[40:])
    assert parts.n == whole.n == 90
    assert np.allclose(parts.solver(), whole.solver())


def test_cosaved_counts_other_readers_libraries():
    co = LibraryCooccurrence([["a", "b"], ["a", "b", "c"], ["d"]])
    got = co(["a"])
    # a and b are saved by the same two readers: 2 / sqrt(2 * 2); c: 1 / sqrt(2 * 1)
    assert got["b"] == pytest.approx(1.0)
    assert got["c"] == pytest.approx(1 / math.sqrt(2))
    assert "d" not in got
    assert co(["unknown"]) == {}


def test_cosaved_papers_join_the_candidates():
    papers = _clustered()
    stats = corpus_stats(papers.matrix)
    co = LibraryCooccurrence([["t0-0", "t2-5"], ["t0-0", "t2-5"]])
    only_near = lambda _q, _n: ["t0-1", "t0-2", "t0-3"]  # noqa: E731
    recs = recommend(["t0-0"], only_near, papers, stats, k=5, cosaved=co, reasons=False)
    assert "t2-5" in {r.paper_id for r in recs}


def test_shared_terms_prefer_rare_words():
    stats = corpus_stats(np.eye(3), ["deep learning", "deep sparse attention", "deep nets"])
    assert shared_terms("sparse attention is deep", ["deep sparse attention"], stats) == [
        "attention",
        "sparse",
        "deep",
    ]


# -- the data folder and the command ---------------------------------------------------------


def _write(folder: Path, papers: list[dict], users: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "papers.jsonl").write_text("".join(json.dumps(p) + "\n" for p in papers))
    (folder / "users.jsonl").write_text("".join(json.dumps(u) + "\n" for u in users))
    return folder


@pytest.fixture(scope="module")
def citeulike_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real readers and the papers of their libraries, plus other papers: ~300 in all."""
    if not (CITEULIKE / "users.jsonl").is_file():
        pytest.skip(f"the CiteULike libraries are not at {CITEULIKE}")
    users = [json.loads(line) for line in (CITEULIKE / "users.jsonl").open()]
    users = [u for u in users if 12 <= len(u["library"]) <= 40][:6]
    wanted = {p for u in users for p in u["library"] + u["hidden"]}
    papers = [json.loads(line) for line in (CITEULIKE / "papers.jsonl").open()]
    others = [p for p in papers if p["id"] not in wanted]
    random.Random(7).shuffle(others)
    chosen = [p for p in papers if p["id"] in wanted] + others[: 300 - len(wanted)]
    users.append({"user": "nobody", "library": [], "hidden": [chosen[0]["id"]]})
    return _write(tmp_path_factory.mktemp("citeulike") / "slice", chosen, users)


@pytest.mark.slow
def test_eval_rec_on_a_citeulike_slice(citeulike_slice: Path):
    result = CliRunner().invoke(app, ["eval-rec", str(citeulike_slice), "--json"])
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(last) >= {"recall@20", "recall@100", "ndcg@20", "methods"}
    assert last["users"] == 6
    assert set(last["methods"]) == {
        "papersift",
        "papersift (no co-saved)",
        "popularity",
        "tf-idf SVM",
        "MiniLM centroid",
    }
    for scores in last["methods"].values():
        assert 0.0 <= scores["recall@20"] <= scores["recall@100"] <= 1.0
    # with ~300 candidates and the readers' own topics, content beats chance by far
    assert last["recall@100"] > 0.5
    assert "user nobody skipped: empty library" in _said(result)
    table = CliRunner().invoke(app, ["eval-rec", str(citeulike_slice), "--no-references"])
    assert table.exit_code == 0, table.output
    assert "papersift (no co-saved)" in table.stdout and "tf-idf SVM" not in table.stdout


def _said(result: object) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(str(getattr(result, "stderr", "")).split())


def test_eval_rec_missing_folder_is_a_clear_error(tmp_path: Path):
    result = CliRunner().invoke(app, ["eval-rec", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "is not a folder" in _said(result)
    result = CliRunner().invoke(app, ["eval-rec", str(tmp_path)])
    assert result.exit_code == 1
    assert "papers.jsonl is missing" in _said(result)


def test_malformed_lines_name_the_file_and_line(tmp_path: Path):
    folder = _write(tmp_path / "d", [{"id": "1", "title": "a"}], [])
    with (folder / "papers.jsonl").open("a") as fh:
        fh.write("{not json\n")
    result = CliRunner().invoke(app, ["eval-rec", str(folder)])
    assert result.exit_code == 1
    assert "papers.jsonl:2: not JSON" in _said(result)
    _write(folder, [{"id": "1", "title": "a"}], [{"user": "u", "library": "1"}])
    with pytest.raises(RecEvalError, match="users.jsonl:1: 'library' must be a list"):
        load_dataset(folder)
    _write(folder, [{"title": "no id"}], [])
    with pytest.raises(RecEvalError, match="papers.jsonl:1: expected an object with an id"):
        load_dataset(folder)


def test_users_without_library_or_hidden_are_skipped_with_a_message(tmp_path: Path):
    papers = [{"id": str(i), "title": f"paper {i}"} for i in range(5)]
    users = [
        {"user": "empty", "library": [], "hidden": ["1"]},
        {"user": "nothing-hidden", "library": ["1"], "hidden": []},
        {"user": "ok", "library": ["1", "2", "99"], "hidden": ["3"]},
    ]
    data = load_dataset(_write(tmp_path / "d", papers, users))
    assert [u.user for u in data.users] == ["ok"]
    assert data.users[0].library == ["1", "2"]
    text = "\n".join(data.skipped)
    assert "user empty skipped: empty library" in text
    assert "user nothing-hidden skipped: nothing hidden to find" in text
    assert "user ok: 1 unknown paper ids ignored" in text
    only_empty = _write(tmp_path / "e", papers, users[:1])
    with pytest.raises(RecEvalError, match="no user with both"):
        load_dataset(only_empty)


def test_holdout_moves_part_of_each_library_and_drops_hidden(tmp_path: Path):
    papers = [{"id": str(i), "title": f"paper {i}"} for i in range(20)]
    users = [{"user": "u", "library": [str(i) for i in range(10)], "hidden": ["15"]}]
    split = holdout(load_dataset(_write(tmp_path / "d", papers, users)))
    (u,) = split.users
    assert len(u.hidden) == 2 and len(u.library) == 8
    assert set(u.hidden) | set(u.library) == {str(i) for i in range(10)}


def test_worker_processes_give_the_same_numbers(tmp_path: Path):
    from papersift.rank.rec_eval import evaluate_methods

    rng = np.random.default_rng(3)
    words = ["graph", "protein", "galaxy", "market"]
    papers = [{"id": str(i), "title": f"{words[i % 4]} study {i}"} for i in range(60)]
    users = [
        {
            "user": f"u{n}",
            "library": [str(i) for i in range(n % 4, 60, 4)][:8],
            "hidden": [str(n % 4 + 40)],
        }
        for n in range(6)
    ]
    data = load_dataset(_write(tmp_path / "d", papers, users))
    vectors = np.eye(4)[[i % 4 for i in range(60)]] + rng.normal(0, 0.3, (60, 4))
    one = evaluate_methods(data, vectors, workers=1)
    two = evaluate_methods(data, vectors, workers=2)
    assert one.methods == two.methods
    assert one.methods["papersift"]["recall@100"] == 1.0  # the hidden paper is on topic
