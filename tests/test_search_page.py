"""The search page acts on what the search service recognises: a pasted identifier goes
straight to its paper, a misspelling gets a "did you mean" link."""

from __future__ import annotations

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
