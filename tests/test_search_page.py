"""The search page acts on what the search service recognises: a pasted identifier goes
straight to its paper, a misspelling gets a "did you mean" link."""

from __future__ import annotations

from pathlib import Path

import httpx


def test_pasted_arxiv_id_goes_to_the_paper(live_server: str) -> None:
    for q in ("arXiv:hep-th/9901001v2", "https://arxiv.org/abs/hep-th/9901001"):
        r = httpx.get(f"{live_server}/search", params={"q": q}, timeout=30)
        assert r.status_code == 303, (q, r.status_code)
        assert r.headers["location"] == "/papers/hep-th/9901001"


def test_misspelled_query_offers_the_correction(live_server: str) -> None:
    r = httpx.get(f"{live_server}/search", params={"q": "atention mechanisms"}, timeout=30)
    assert r.status_code == 200
    assert "attention" in r.text.lower()
    if "Did you mean" in r.text:  # the typed query found enough to show as it is
        assert 'href="/search?q=attention' in r.text
    else:  # the corrected query's results are shown, and the page says so
        assert "showing" in r.text


def test_unknown_identifier_is_searched_as_words(live_server: str) -> None:
    r = httpx.get(f"{live_server}/search", params={"q": "arXiv:9999.99999"}, timeout=30)
    assert r.status_code == 200


def test_date_filters_only_when_papers_have_dates(tmp_path: Path) -> None:
    import json

    from papersift.api import Library
    from papersift.settings import load_settings
    from papersift.web.app import create_app

    from .conftest import serve_in_thread

    def page_for(records: list[dict]) -> str:
        home = tmp_path / f"home{len(records)}"
        data = tmp_path / f"papers{len(records)}.jsonl"
        data.write_text("\n".join(json.dumps(r) for r in records))
        with Library(home=home) as lib:
            lib.ingest([str(data)])
        app = create_app(load_settings(home), warm_search=False)
        with serve_in_thread(app) as url:
            return httpx.get(f"{url}/search", params={"q": "graphs"}, timeout=30).text

    undated = {"title": "Graphs of graphs", "abstract": "About graphs and more graphs."}
    dated = {"title": "Dated graphs", "abstract": "Graphs in time.", "date": "2024-05-01"}
    assert 'name="date_from"' not in page_for([undated])
    assert 'value="date"' not in page_for([undated])
    shown = page_for([undated, dated])
    assert 'name="date_from"' in shown and 'value="date"' in shown


def test_cached_results_do_not_outlive_an_index_change(tmp_path: Path) -> None:
    """The server keeps results for 60 s, but a paper indexed meanwhile shows at the next
    request: the cache is keyed by the index generation (a search racing an ingest once
    kept "0 results" for a minute)."""
    import json

    from papersift.api import Library
    from papersift.settings import load_settings
    from papersift.web.app import create_app

    from .conftest import serve_in_thread

    home = tmp_path / "home"
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps({"title": "Graphs of graphs", "abstract": "About graphs."}))
    with Library(home=home) as lib:
        lib.ingest([str(first)])
    app = create_app(load_settings(home), warm_search=False)
    with serve_in_thread(app) as url:
        api = f"{url}/api/v1/search"
        params = {"q": "zeolite", "mode": "lexical"}
        assert httpx.get(api, params=params, timeout=30).json()["total"] == 0
        later = tmp_path / "later.jsonl"
        later.write_text(json.dumps({"title": "Zeolite catalysts", "abstract": "Zeolite."}))
        with Library(home=home) as lib:
            lib.ingest([str(later)])
        assert httpx.get(api, params=params, timeout=30).json()["total"] == 1
        again = httpx.get(api, params=params, timeout=30).json()
        assert again["total"] == 1  # and cached under the new generation
