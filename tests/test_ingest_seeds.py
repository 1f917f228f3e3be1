"""The seed pages: exact counts, order, merging and idempotence, on SQLite and PostgreSQL."""

from __future__ import annotations

from papersift.ingest import ingest_paths
from papersift.store import collections as coll_store
from papersift.store import papers as paper_store

from .conftest import SEEDS

EXPECTED_SIZES = {
    "000_e3b0215ea9dd5350": 119,
    "001_871d086d1143f9dd": 260,
    "002_a0039cd534f1dc65": 119,
    "003_ff17b690f83e58cb": 222,
    "004_221a856607130bf5": 220,
}


def test_seed_pages_give_804_papers_and_five_ordered_collections(db):
    summary = ingest_paths(db, [SEEDS])
    assert not summary.failed
    assert summary.total("added") == 804
    with db.session() as s:
        assert paper_store.count_papers(s) == 804
        sizes = {name: size for name, _o, size in coll_store.collection_sizes(s)}
        assert sizes == EXPECTED_SIZES
        first = coll_store.get_collection(s, "000_e3b0215ea9dd5350")
        paper = paper_store.get_paper(s, first.entries[0].paper_id)
        assert paper.title == "Binary and Ternary Natural Language Generation"
        assert paper.code_urls == ["https://github.com/facebookresearch/Ternary_Binary_Transformer"]
        # a paper on two pages keeps both sources and sits in both collections
        multi = [p for p in paper_store.iter_papers(s) if len(p.sources) > 1]
        assert len(multi) == 114
        assert len(coll_store.collections_of_paper(s, multi[0].id)) == len(multi[0].sources)


def test_reingesting_changes_nothing(db):
    ingest_paths(db, [SEEDS])
    with db.session() as s:
        before = {p.id: p.to_dict() for p in paper_store.iter_papers(s)}
    again = ingest_paths(db, [SEEDS])
    assert again.total("added") == 0 and again.total("updated") == 0
    assert again.total("unchanged") == 940
    with db.session() as s:
        after = {p.id: p.to_dict() for p in paper_store.iter_papers(s)}
    assert after == before


def test_code_links_lose_trailing_punctuation(db):
    ingest_paths(db, [SEEDS])
    with db.session() as s:
        urls = [u for p in paper_store.iter_papers(s) for u in p.code_urls]
    assert urls, "the seeds carry GitHub links"
    assert not [u for u in urls if u[-1] in ".,;:)" or u.endswith(".git")]
    assert "https://github.com/seokwon99/CCPT" in urls
