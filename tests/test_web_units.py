"""Pure functions of the web layer: escaping + highlighting, query terms, rate limits,
signed visitor ids and CSRF tokens, search parameter parsing."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from papersift.web.ratelimit import Limit, RateLimiter, TokenBuckets
from papersift.web.searching import parse_params
from papersift.web.templating import (
    paper_url,
    query_terms,
    rich_text,
    safe_url,
    snippet,
    with_query,
)


def test_rich_text_escapes_before_marking() -> None:
    html = str(rich_text("a <b>bold</b> & attention < 3", ["attention", "bold"]))
    assert "<b>" not in html
    assert "&lt;<mark>b</mark>&gt;" not in html  # "b" is no term; tags are escaped as text
    assert "&lt;b&gt;<mark>bold</mark>&lt;/b&gt;" in html
    assert "&amp; <mark>attention</mark> &lt; 3" in html


def test_terms_never_match_inside_entities_or_markup() -> None:
    # "lt", "amp" and "mark" as query terms must not corrupt the escaped output.
    html = str(rich_text("x < y & z mark", ["lt", "amp", "mark", "gt"]))
    assert html == "x &lt; y &amp; z <mark>mark</mark>"


def test_math_spans_are_escaped_and_wrapped() -> None:
    html = str(rich_text("if $x<y$ and $a&b$ then", None))
    assert '<span class="math">$x&lt;y$</span>' in html
    assert '<span class="math">$a&amp;b$</span>' in html
    assert str(rich_text("price $5 only", None)) == "price $5 only"


def test_script_payload_is_inert() -> None:
    html = str(rich_text("</script><script>alert(1)</script>", ["script"]))
    assert "<script" not in html.replace("<mark>", "")
    assert "&lt;/<mark>script</mark>&gt;" in html


def test_query_terms() -> None:
    assert query_terms('title:"Flash Attention" AND transformers OR x') == [
        "flash",
        "attent",
        "transform",
    ]  # the lexical index's own stems
    assert query_terms("") == [] and query_terms(None) == []
    assert query_terms("((( ''' ") == []
    assert len(query_terms(" ".join(f"w{i}x" for i in range(100)))) == 20
    assert query_terms("émoji 🚀 ünïcode") == ["émoji", "ünïcode"]


def test_highlighting_marks_stems_never_prefixes_or_stop_words() -> None:
    terms = query_terms("Transformer")
    assert str(rich_text("Transformers transform transformation transit", terms)) == (
        "<mark>Transformers</mark> <mark>transform</mark> <mark>transformation</mark> transit"
    )
    text = "An introduction to inference in transformers: why does it work"
    html = str(rich_text(text, query_terms("why does in transformer work")))
    assert html.count("<mark>") == 2  # transformers, work
    assert "<mark>in" not in html and "<mark>why" not in html and "<mark>does" not in html


def test_snippet_centres_on_the_match_and_keeps_math_whole() -> None:
    text = ("lorem " * 100) + "the attention result " + ("ipsum " * 100)
    html = str(snippet(text, ["attention"], length=120))
    assert html.startswith("… ") and html.endswith(" …")
    assert "<mark>attention</mark>" in html
    whole = "word " * 60 + "$x<y$ end"
    assert '<span class="math">$x&lt;y$</span> …' in str(snippet(whole, None, length=300))
    halved = "word " * 60 + "$x < y$ end"
    assert "$" not in str(snippet(halved, None, length=300))


def test_urls() -> None:
    assert paper_url("hep-th/9901001") == "/papers/hep-th/9901001"
    assert paper_url("a b?c#d") == "/papers/a%20b%3Fc%23d"
    assert safe_url("javascript:alert(1)") == "#"
    assert safe_url(" https://github.com/x ") == "https://github.com/x"
    assert safe_url(None) == "#"
    assert with_query({"q": "a&b", "mode": None}, page=2) == "?q=a%26b&page=2"


def test_token_bucket_refills() -> None:
    now = [0.0]
    buckets = TokenBuckets(Limit(capacity=2, rate=1.0), clock=lambda: now[0])
    assert buckets.take("k") == 0 and buckets.take("k") == 0
    assert buckets.take("k") == pytest.approx(1.0)
    now[0] = 0.5
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] = 2.0
    assert buckets.take("k") == 0
    assert buckets.take("other") == 0


def test_token_buckets_stay_bounded() -> None:
    buckets = TokenBuckets(Limit(1, 1), max_keys=10)
    for i in range(100):
        buckets.take(str(i))
    assert len(buckets._buckets) == 10


def test_rate_limiter_checks_visitor_and_ip() -> None:
    limiter = RateLimiter(Limit(2, 0.001), Limit(3, 0.001))
    assert limiter.check("v1", "1.1.1.1") == 0
    assert limiter.check("v1", "1.1.1.1") == 0
    assert limiter.check("v1", "1.1.1.1") > 0  # visitor exhausted
    assert limiter.check("v2", "1.1.1.1") > 0  # IP exhausted (3 taken) even for a new visitor
    assert limiter.check("v3", "2.2.2.2") == 0


def test_parse_params_collects_errors_without_raising() -> None:
    p = parse_params(
        {
            "q": "x",
            "mode": "bogus",
            "page": "0",
            "date_from": "2024-13-01",
            "has_code": "maybe",
            "collection": "a\x00b",
            "sort": "random",
        }
    )
    assert len(p.errors) == 6
    ok = parse_params(
        {
            "q": "  flash  ",
            "mode": "LEXICAL",
            "page": "3",
            "has_code": "on",
            "date_from": "2024-01-01",
            "date_to": "2024-02-01",
        }
    )
    assert ok.errors == [] and ok.mode == "lexical" and ok.page == 3 and ok.offset == 20
    assert ok.has_code is True and ok.date_to == date(2024, 2, 1)
    assert parse_params({"date_from": "2024-02-01", "date_to": "2024-01-01"}).errors
    assert parse_params({"q": "x" * 20_000}).errors


def test_result_cache_lru_and_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    from papersift.web import searching

    now = [100.0]
    monkeypatch.setattr(searching.time, "monotonic", lambda: now[0])
    cache = searching.ResultCache(size=2, ttl=60)
    cache.put(("a",), 1)
    cache.put(("b",), 2)
    assert cache.get(("a",)) == 1  # "a" is now the most recent
    cache.put(("c",), 3)  # evicts "b", the least recently used
    assert cache.get(("b",)) is None and cache.get(("c",)) == 3
    now[0] += 61
    assert cache.get(("a",)) is None  # expired
    assert (cache.hits, cache.misses) == (2, 2)


def test_search_gate_turns_away_what_cannot_start_in_time() -> None:
    from papersift.web.searching import SearchBusy, SearchGate, SearchUnavailable

    gate = SearchGate(concurrency=1, max_wait=0.05)
    with gate:
        with pytest.raises(SearchBusy), gate:
            pass
    assert gate.rejected == 1
    assert issubclass(SearchBusy, SearchUnavailable)  # every route answers it with a 503
    with gate:  # the slot was released
        pass


def test_shared_buckets_are_one_budget_for_every_worker(tmp_path: Path) -> None:
    from papersift.web.ratelimit import SharedTokenBuckets

    now = [1000.0]
    store = tmp_path / "ratelimit.sqlite"
    worker_a = SharedTokenBuckets(Limit(3, 1.0), store, "votes", clock=lambda: now[0])
    worker_b = SharedTokenBuckets(Limit(3, 1.0), store, "votes", clock=lambda: now[0])
    assert [worker_a.take("v"), worker_b.take("v"), worker_a.take("v")] == [0, 0, 0]
    assert worker_b.take("v") == pytest.approx(1.0)  # the third token went to worker a
    other_scope = SharedTokenBuckets(Limit(3, 1.0), store, "signups", clock=lambda: now[0])
    assert other_scope.take("v") == 0  # scopes do not share
    now[0] += 1.0
    assert worker_a.take("v") == 0 and worker_b.take("v") > 0


def _hammer(store: str, takes: int, out) -> None:
    from papersift.web.ratelimit import SharedTokenBuckets

    buckets = SharedTokenBuckets(Limit(50, 0.0001), Path(store), "votes")
    out.put(sum(1 for _ in range(takes) if buckets.take("visitor") == 0))


def test_shared_buckets_hold_across_concurrent_processes(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(str(tmp_path / "rl.sqlite"), 40, out)) for _ in range(3)
    ]
    for p in procs:
        p.start()
    allowed = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sum(allowed) == 50  # 120 attempts, one budget of 50, none lost or doubled


def test_unusable_store_falls_back_to_per_process_limits(tmp_path: Path, caplog) -> None:
    from papersift.web.ratelimit import SharedTokenBuckets

    store = tmp_path / "ratelimit.sqlite"
    store.write_bytes(b"this is not a database, it is garbage " * 100)
    limiter = RateLimiter(Limit(2, 0.001), Limit(10, 0.001), store=store, scope="votes")
    with caplog.at_level("WARNING", logger="papersift.web"):
        results = [limiter.check("v1", "1.1.1.1") for _ in range(3)]
    assert results[:2] == [0, 0] and results[2] > 0  # still limited, in this process
    assert "limiting per process instead" in caplog.text
    assert store.read_bytes().startswith(b"this is not a database")  # left as it was
    assert isinstance(limiter.visitors, SharedTokenBuckets)


def test_paper_cache_serves_lists_and_votes_stay_fresh(sqlite_db, monkeypatch) -> None:
    """List reads go through the paper cache (at most its ttl old); vote counts never do."""
    from datetime import UTC, datetime

    from papersift.ingest.merge import new_row
    from papersift.ingest.records import PaperRecord
    from papersift.rank import votes
    from papersift.store import papers as paper_store
    from papersift.web import searching
    from papersift.web.resources import cards, papers_by_id
    from papersift.web.searching import ResultCache

    now = datetime(2024, 6, 1, tzinfo=UTC)
    rows = [
        new_row(PaperRecord(title=f"Paper {i}", abstract="Old.").finalize(), f"p{i}", "t", now)
        for i in (1, 2)
    ]
    with sqlite_db.session() as s:
        paper_store.insert_rows(s, rows)
    clock = [1000.0]
    monkeypatch.setattr(searching.time, "monotonic", lambda: clock[0])
    cache = ResultCache(size=10, ttl=60)
    with sqlite_db.session() as s:
        assert set(papers_by_id(s, ["p1", "nope"], cache)) == {"p1"}
        paper_store.update_rows(s, [dict(rows[0], abstract="New.")])
        votes.upvote(s, "p1", "visitor-1")
    with sqlite_db.session() as s:
        assert papers_by_id(s, ["p1"], cache)["p1"].abstract == "Old."  # cached
        assert papers_by_id(s, ["p1"])["p1"].abstract == "New."  # no cache: the database
        (card,) = cards(s, ["p1"], "visitor-1", cache=cache)
        assert card.paper.abstract == "Old." and card.votes == 1 and card.voted
        clock[0] += 61
        assert papers_by_id(s, ["p1", "p2"], cache)["p1"].abstract == "New."  # ttl passed
    assert cache.hits == 2 and cache.misses == 4
