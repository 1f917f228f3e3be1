"""Knowing when nothing matches, forgiving typos, pasted identifiers, syntax that keeps
meaning, and per-query comparisons of runs. Real indexes of the seed corpus (see
test_search.py), real tantivy and MiniLM."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from papersift.cli import app
from papersift.search import compare, floor, hybrid, spelling
from papersift.search.identifiers import Reference, identify
from papersift.search.query import clean_query
from papersift.search.service import SearchFilters, SearchService

from . import test_search as base

HOSTILE = base.HOSTILE
search_home = base.search_home  # the indexed seed home (a session fixture)
own_home = base.own_home


@pytest.fixture(scope="module")
def svc(search_home: Path) -> SearchService:
    settings, db = base._open(search_home)
    return SearchService(settings, db)


# -- pasted identifiers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "ref"),
    [
        ("2305.12345", Reference("arxiv", "2305.12345")),
        ("arXiv:2305.12345v2", Reference("arxiv", "2305.12345")),
        ("arXiv: 2305.12345", Reference("arxiv", "2305.12345")),
        (" (2305.12345). ", Reference("arxiv", "2305.12345")),
        ("https://arxiv.org/abs/2305.12345v3", Reference("arxiv", "2305.12345")),
        ("arxiv.org/pdf/2305.12345.pdf", Reference("arxiv", "2305.12345")),
        ("www.arxiv.org/html/2305.12345v1", Reference("arxiv", "2305.12345")),
        ("hep-th/9901001v2", Reference("arxiv", "hep-th/9901001")),
        ("10.48550/arXiv.2301.00001", Reference("arxiv", "2301.00001")),
        ("https://doi.org/10.1145/3368089.3409767", Reference("doi", "10.1145/3368089.3409767")),
        ("doi:10.1000/XYZ", Reference("doi", "10.1000/xyz")),
        (
            "https://openreview.net/forum?id=abc",
            Reference("url", "https://openreview.net/forum?id=abc"),
        ),
    ],
)
def test_identifiers_are_recognised(raw: str, ref: Reference):
    assert identify(raw) == ref


@pytest.mark.parametrize(
    "raw",
    ["", "flash attention", "2305", "arXiv 2305.12345 follow-ups", "10.5 volts", "x" * 10_000],
)
def test_ordinary_queries_are_not_identifiers(raw: str):
    assert identify(raw) is None


@pytest.mark.parametrize(
    "pasted",
    [
        "2401.00001",
        "arXiv:2401.00001v2",
        "https://arxiv.org/abs/2401.00001",
        "arxiv.org/pdf/2401.00001v1.pdf",
        "10.48550/arXiv.2401.00001",
    ],
)
def test_pasted_arxiv_id_goes_straight_to_the_paper(svc: SearchService, pasted: str):
    for mode in ("hybrid", "lexical", "semantic"):
        res = svc.search(pasted, mode=mode)
        assert res.direct == "2401.00001"
        assert [h.paper_id for h in res.hits] == ["2401.00001"] and res.total == 1


def test_unknown_identifier_is_said_and_searched_as_words(svc: SearchService):
    res = svc.search("arXiv:2999.99999")
    assert res.direct is None and "2999.99999" in (res.message or "")


# -- syntax filters or boosts, it keeps meaning ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "syntax", "constraint"),
    [
        ("+1 nucleosomes", False, False),
        ("x -0.3 V", False, False),
        ("gene A and B", False, False),
        ('"attention is all you need" follow-ups', True, False),
        ("title:diffusion", True, False),
        ("transformers -vision", True, True),
        ("+graph networks", True, True),
        ("a AND b", True, True),
        ("a NOT b", True, True),
        ("author:curie crystals", True, True),
    ],
)
def test_signs_are_operators_only_before_a_word(raw: str, syntax: bool, constraint: bool):
    q = clean_query(raw)
    assert (q.has_syntax, q.constraint) == (syntax, constraint)


def test_excluded_parts_are_not_embedded_or_ranked_by():
    q = clean_query('message passing -crystal NOT "inorganic materials" title:graphs')
    assert "crystal" not in q.semantic and "inorganic" not in q.semantic
    assert q.words == "message passing graphs"


def test_quoted_query_keeps_the_dense_side(svc: SearchService):
    """A phrase boosts its matches; papers saying it in other words still come."""
    lexical = svc.search('"message passing"', k=50, mode="lexical")
    hybrid_res = svc.search('"message passing"', k=50)
    assert lexical.total >= 2
    assert set(h.paper_id for h in lexical.hits) <= set(h.paper_id for h in hybrid_res.hits)
    assert hybrid_res.total > lexical.total
    assert {hybrid_res.hits[0].paper_id, hybrid_res.hits[1].paper_id} <= {
        h.paper_id for h in lexical.hits
    }


def test_excluded_word_filters_both_sides(svc: SearchService):
    res = svc.search("message passing neural networks -crystal", k=100)
    ids = [h.paper_id for h in res.hits]
    assert "2401.00001" in ids and "2209.00003" not in ids
    with svc.db.session() as s:
        from papersift.store import papers as paper_store

        papers = paper_store.get_papers(s, ids)
    assert not any("crystal" in (p.title + p.abstract).lower() for p in papers.values())


def test_plus_before_a_number_is_a_word(svc: SearchService):
    plain = svc.search("1 neural networks", k=10, mode="lexical")
    signed = svc.search("+1 neural networks", k=10, mode="lexical")
    assert [h.paper_id for h in signed.hits] == [h.paper_id for h in plain.hits]
    assert svc.search("+1 neural networks", k=10).hits


# -- the relevance floor ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "semantic"])
@pytest.mark.parametrize("query", ["zzqxv blorptang", "qqqzx wwwvkj"])
def test_nonsense_matches_nothing_and_says_what_to_try(svc: SearchService, mode: str, query: str):
    res = svc.search(query, mode=mode)
    assert res.hits == [] and res.total == 0
    assert "no paper matches" in res.message and "spelling" in res.message


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "lexical"])
def test_totals_are_what_can_be_paged_through(svc: SearchService, mode: str):
    for query in ("protein folding", "graph neural networks", "diffusion models"):
        first = svc.search(query, k=50, mode=mode)
        seen: list[str] = []
        offset = 0
        while offset < first.total and offset <= 2000:
            page = svc.search(query, k=50, offset=offset, mode=mode)
            seen.extend(h.paper_id for h in page.hits)
            offset += 50
        assert len(seen) == first.total, (query, mode)
        assert len(set(seen)) == len(seen)


def test_semantic_counts_only_papers_above_the_floor(svc: SearchService):
    res = svc.search("protein folding", k=1000, mode="semantic")
    cut = floor.cosine_floor(svc.embedder.model_id)
    assert res.total == len(res.hits) < 804
    assert all(h.score >= cut for h in res.hits)
    live = svc._ready()
    sims = live.vectors.search(svc.embedder.encode_query("protein folding"), 1000)[1]
    assert res.total == int((sims >= cut).sum())


def test_semantic_total_is_a_lower_bound_when_every_fetched_paper_matches(svc: SearchService):
    """Semantic mode fetches the nearest 100 (or up to the page's end), not a thousand:
    when all of them clear the floor the total says "at least", and a later page counts on."""
    query = "neural networks for language"
    full = svc.search(query, k=1000, mode="semantic")
    assert full.total > floor.SEMANTIC_FETCH and not full.more  # counted in full
    first = svc.search(query, k=10, mode="semantic")
    assert first.total == floor.SEMANTIC_FETCH and first.more
    assert [h.paper_id for h in first.hits] == [h.paper_id for h in full.hits[:10]]
    later = svc.search(query, k=10, offset=150, mode="semantic")
    assert later.total >= 160 and [h.paper_id for h in later.hits] == [
        h.paper_id for h in full.hits[150:160]
    ]
    narrow = svc.search("zzqxv blorptang", k=10, mode="semantic")
    assert narrow.total == len(narrow.hits) == 0 and not narrow.more


def test_a_filter_nothing_passes_gives_no_phantom_total(svc: SearchService):
    filters = SearchFilters(date_from=date(2030, 1, 1))
    for mode in ("hybrid", "lexical", "semantic"):
        res = svc.search("flash attention", filters=filters, mode=mode)
        assert res.hits == [] and res.total == 0 and "remove filters" in res.message
    res = svc.search("graph neural networks", filters=SearchFilters(date_from=date(2024, 1, 1)))
    assert res.total == len(res.hits) == 1


def test_floor_helpers():
    assert floor.above([0.9, 0.5, 0.18, 0.1], 0.18) == 3
    assert floor.above([], 0.2) == 0
    assert floor.cosine_floor("some-other-model") == -1.0
    assert floor.cosine_floor("all-MiniLM-L6-v2-onnx-int8", known_words=False) > floor.cosine_floor(
        "all-MiniLM-L6-v2-onnx-int8"
    )
    mask = floor.keep(np.array([0.1, 0.3, np.nan]), np.array([True, False, True]), 0.2)
    assert mask.tolist() == [True, True, True]


# -- digest topics ------------------------------------------------------------------------


def test_matches_among_given_papers_and_a_first_seen_window(svc: SearchService):
    ids = ["2401.00001", "2209.00003", "2305.00002"]
    hits = svc.matches("message passing neural networks", paper_ids=ids)
    assert [h.paper_id for h in hits][:2] in (
        ["2401.00001", "2209.00003"],
        ["2209.00003", "2401.00001"],
    )
    assert {h.paper_id for h in hits} <= set(ids)
    assert svc.matches("zzqxv blorptang", paper_ids=ids) == []
    assert svc.matches("message passing", paper_ids=[]) == []
    future = datetime.now(UTC) + timedelta(days=1)
    assert svc.matches("message passing", since=future) == []
    recent = svc.matches("message passing", since=datetime.now(UTC) - timedelta(days=3650))
    assert "2401.00001" in {h.paper_id for h in recent}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_matches_never_raises_on_hostile_topics(svc: SearchService, name: str):
    hits = svc.matches(HOSTILE[name], paper_ids=["2401.00001", "2209.00003"])
    assert isinstance(hits, list)


# -- spelling -----------------------------------------------------------------------------


def test_edit_distance_counts_typos_not_other_words():
    assert spelling.edit_distance("atention", "attention") == 1
    assert spelling.edit_distance("nueral", "neural") == 1  # swapped neighbours
    assert spelling.edit_distance("bake", "make") == 2  # b and m are not neighbouring keys
    assert spelling.edit_distance("abc", "abcdefgh", limit=3) == 3


def test_vocabulary_suggests_the_likeliest_word(tmp_path: Path):
    vocab = spelling.Vocabulary()
    vocab.add_texts(["Flash attention", "attention is quantization", "flash flush", "fish"] * 3)
    assert vocab.correct("atention") == "attention"
    assert vocab.correct("quantizaton") == "quantization"
    assert vocab.correct("zzqxv") is None
    assert vocab.suggest("flsh atention", lambda w: w in vocab.counts) == "flash attention"
    assert vocab.suggest("flash attention", lambda w: w in vocab.counts) is None
    vocab.save(tmp_path)
    again = spelling.Vocabulary.load(tmp_path)
    assert again is not None and again.counts == vocab.counts
    (tmp_path / spelling.FILE).write_bytes(b"not gzip")
    assert spelling.Vocabulary.load(tmp_path) is None


def test_typo_query_is_corrected_from_the_corpus_vocabulary(svc: SearchService):
    res = svc.search("flsh atention quantizaton", k=10)
    assert res.suggestion == "flash attention quantization"
    assert res.corrected and "showing 'flash attention quantization'" in res.message
    with svc.db.session() as s:
        from papersift.store import papers as paper_store

        titles = [
            p.title.lower()
            for p in paper_store.get_papers(s, [h.paper_id for h in res.hits]).values()
        ]
    assert any("flash" in t and "attention" in t for t in titles)


def test_a_known_query_gets_no_suggestion(svc: SearchService):
    res = svc.search("graph neural networks for molecules")
    assert res.suggestion is None and not res.corrected


def test_suggestion_alone_when_the_typed_query_finds_enough(svc: SearchService):
    res = svc.search("graph nueral networks", k=5)
    assert res.suggestion == "graph neural networks"
    assert res.hits


def test_vocabulary_is_built_for_an_index_without_one(own_home: Path):
    from papersift.settings import load_settings
    from papersift.store.db import Database

    settings = load_settings(own_home, f"sqlite:///{own_home / 'papersift.db'}")
    service = SearchService(settings, Database(settings.db_url))
    live = service._ready()
    (live.folder / spelling.FILE).unlink()
    live.vocab = None
    assert service.search("protien structure", k=5).suggestion == "protein structure"
    assert (live.folder / spelling.FILE).is_file()


# -- hybrid weights -----------------------------------------------------------------------


def test_dense_weight_follows_the_more_peaked_side():
    flat = np.linspace(1.0, 0.9, 100)
    peaked = np.concatenate([[5.0, 4.5, 4.0, 3.5, 3.0], np.linspace(1.0, 0.9, 95)])
    assert hybrid.dense_weight(flat, peaked) > 0.5 > hybrid.dense_weight(peaked, flat)
    assert hybrid.dense_weight(peaked, peaked) == pytest.approx(hybrid.ALPHA)
    # a lexical list of a few matches is all there is: confident, not flat
    assert hybrid.dense_weight([9.0, 8.5, 8.0], flat) < 0.5


def test_feedback_at_weight_zero_ranks_as_no_feedback(
    svc: SearchService, monkeypatch: pytest.MonkeyPatch
):
    """Re-scoring keeps the first pass's scales: only the expansion changes the order."""
    queries = ["graph neural networks for molecules", "protein structure", '"message passing"']
    monkeypatch.setattr(hybrid, "FEEDBACK_DOCS", 1)
    plain = [[h.paper_id for h in svc.search(q, k=20).hits] for q in queries]
    monkeypatch.setattr(hybrid, "FEEDBACK_DOCS", 10)
    monkeypatch.setattr(hybrid, "FEEDBACK_LAMBDA", 0.0)
    monkeypatch.setattr(hybrid, "DENSE_FEEDBACK", 0.0)
    assert [[h.paper_id for h in svc.search(q, k=20).hits] for q in queries] == plain


def test_fusion_ranks_a_paper_without_a_vector_by_its_lexical_side():
    lex = np.array([3.0, 2.0, 1.0])
    dense = np.array([np.nan, 0.1, 0.9])
    fused = hybrid.fuse(lex, lex, dense, np.array([0.1, 0.9]), 0.5)
    assert np.isfinite(fused).all() and fused[0] > 0


# -- per-query comparison -----------------------------------------------------------------


def test_runs_round_trip_and_trec_runs_are_read(tmp_path: Path):
    run = {"q1": ["a", "b"], "q2": ["c"]}
    compare.save_run(tmp_path / "run.json", run, collection="x", mode="hybrid")
    assert compare.load_run(tmp_path / "run.json")[0] == run
    (tmp_path / "run.trec").write_text("q1 Q0 b 2 1.0 t\nq1 Q0 a 1 2.0 t\nq2 Q0 c 1 1.0 t\n")
    assert compare.load_run(tmp_path / "run.trec")[0] == run
    deltas = compare.per_query(run, {"q1": ["b", "a"]}, {"q1": {"a": 1}, "q2": {"c": 1}}, {})
    assert [d.query_id for d in deltas] == ["q1", "q2"]  # worst loss first
    stats = compare.summary(deltas)
    assert (stats["wins"], stats["losses"], stats["ties"]) == (2, 0, 0)
    assert deltas[0].delta == pytest.approx(1 - 1 / np.log2(3)) and deltas[1].delta == 1.0


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{not json", "not JSON"),
        ('{"run": [1, 2]}', "expected"),
        ("q1 Q0\n", "TREC run"),
        ("q1 Q0 a first 1.0 t\n", "not a number"),
        ("\n\n", "no ranked documents"),
    ],
)
def test_bad_run_files_are_clear_errors(tmp_path: Path, content: str, error: str):
    path = tmp_path / "bad"
    path.write_text(content)
    with pytest.raises(compare.RunFileError, match=error):
        compare.load_run(path)


def _tiny_collection(folder: Path) -> Path:
    docs = [
        ("1", "Graph neural networks", "Message passing on graphs."),
        ("2", "Protein folding", "Predicting structure from sequence."),
        ("3", "Crystal energies", "Formation energies of inorganic crystals."),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs)
    )
    queries = [("q1", "protein structure"), ("q2", "graphs of crystals")]
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries)
    )
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t2\t1\nq2\t3\t1\n")
    return folder


def test_eval_compare_against_a_mode_and_a_saved_run(tmp_path: Path):
    folder = _tiny_collection(tmp_path / "tiny")
    saved = tmp_path / "lexical.json"
    result = CliRunner().invoke(
        app, ["eval", str(folder), "--mode", "lexical", "--save-run", str(saved), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(saved.read_text())["run"]) == {"q1", "q2"}
    result = CliRunner().invoke(app, ["eval", str(folder), "--compare", "semantic", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["compare"]["queries"] == 2 and len(data["per_query"]) == 2
    result = CliRunner().invoke(app, ["eval", str(folder), "--compare", str(saved)])
    assert result.exit_code == 0, result.output
    assert "against lexical.json" in result.stdout


def test_eval_compare_and_save_run_bad_input(tmp_path: Path):
    folder = _tiny_collection(tmp_path / "tiny")
    result = CliRunner().invoke(app, ["eval", str(folder), "--compare", "fuzzy"])
    assert result.exit_code == 1 and "mode" in result.output and "run file" in result.output
    (tmp_path / "bad.json").write_text("{oops")
    result = CliRunner().invoke(app, ["eval", str(folder), "--compare", str(tmp_path / "bad.json")])
    assert result.exit_code == 1 and "not JSON" in result.output
    result = CliRunner().invoke(app, ["eval", str(folder), "--save-run", str(tmp_path)])
    assert result.exit_code == 1 and "cannot write" in result.output
