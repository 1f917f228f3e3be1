"""The daily pages, author and category pages and their feeds and JSON, on the real app over
a copy of the web test home with papers on several days added through the store.

Days of the added papers (March 2026): Fri 27 Feb (1), Mon 2 Mar (3), Wed 4 Mar (2), Mon 9
Mar (1); 3 Mar and 5-8 Mar are empty and the day links must skip them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from papersift.model import PaperMetadata
from papersift.rank import days
from papersift.store import papers as paper_store
from papersift.store.db import Database

from .digest_support import copy_home
from .test_web_pages import PageCheck

ATOM = "{http://www.w3.org/2005/Atom}"
HOPPER = "Grace Hopper"


def _meta(n: int, day: date, **extra: Any) -> tuple[str, PaperMetadata]:
    arxiv = f"2603.{n:05d}"
    meta = PaperMetadata(
        title=f"Daily test paper {n}: {extra.pop('topic', 'sparse attention')}",
        abstract=f"Abstract of daily paper {n}, about attention and days.",
        authors=extra.pop("authors", ["Ada Lovelace", f"Author {n}"]),
        published=day - timedelta(days=2),
        announced=day,
        categories=extra.pop("categories", ["cs.CL", "cs.LG"]),
        primary_category="cs.CL",
        arxiv_id=arxiv,
        abs_url=f"https://arxiv.org/abs/{arxiv}",
        pdf_url=f"https://arxiv.org/pdf/{arxiv}",
        **extra,
    )
    return arxiv, meta


DAILY = [
    _meta(1, date(2026, 2, 27)),
    _meta(2, date(2026, 3, 2), authors=[HOPPER, "Ada Lovelace"]),
    _meta(
        3,
        date(2026, 3, 2),
        code_urls=["https://github.com/example/daily3"],
        comment="12 pages, 3 figures; code at github.com/example/daily3",
        doi="10.1234/daily.3",
    ),
    _meta(4, date(2026, 3, 2), categories=["stat.ML"], topic="kernels"),
    _meta(5, date(2026, 3, 4), authors=[HOPPER]),
    _meta(6, date(2026, 3, 4)),
    _meta(7, date(2026, 3, 9)),
]


def add_daily_papers(db: Database) -> None:
    """The papers above, written as ingest writes them (store rows, first seen now)."""
    now = datetime.now(UTC)
    rows = [
        paper_store.new_paper_row(meta, paper_id=pid, source="test-daily", now=now)
        for pid, meta in DAILY
    ]
    with db.session() as session:
        paper_store.insert_rows(session, rows)


def make_home(web_home: Path, dest: Path) -> Path:
    copy_home(web_home, dest)
    db = Database(f"sqlite:///{dest / 'papersift.db'}")
    add_daily_papers(db)
    db.dispose()
    return dest


def app_for(home: Path):
    from papersift.settings import load_settings
    from papersift.web.app import create_app

    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    return create_app(settings, warm_search=False)


@pytest.fixture(scope="module")
def daily_home(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(web_home, tmp_path_factory.mktemp("daily") / "home")


@pytest.fixture(scope="module")
def client(daily_home: Path) -> Iterator[TestClient]:
    with TestClient(app_for(daily_home)) as c:
        yield c


@pytest.fixture
def fresh(seeded_home: Path, tmp_path: Path) -> Iterator[TestClient]:
    """An app of its own on the seed pages and the daily papers, as a fresh install has
    them: no votes or views yet (the web test home gets other tests' votes), and its own
    votes reach no other test."""
    with TestClient(app_for(make_home(seeded_home, tmp_path / "home"))) as c:
        yield c


def page(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.text[:400])
    assert response.headers["content-type"].startswith("text/html")
    assert "Traceback" not in response.text
    check = PageCheck()
    check.feed(response.text)
    assert check.inline_scripts == 0 and check.style_attrs == 0 and check.event_attrs == []
    return response.text


def card_ids(html: str, list_id: str) -> list[str]:
    block = html.split(f'id="{list_id}"', 1)[1].split("</ol>", 1)[0]
    return re.findall(r'<h3 class="card-title"><a href="/papers/([^"]+)"', block)


# --- day, week and month pages --------------------------------------------------------


def test_day_page_lists_the_days_papers_with_links_that_skip_empty_days(
    client: TestClient,
) -> None:
    html = page(client, "/papers/date/2026-03-02")
    assert "Monday, 2 March 2026" in html
    assert sorted(card_ids(html, "daily")) == ["2603.00002", "2603.00003", "2603.00004"]
    assert 'href="/papers/date/2026-02-27"' in html  # the previous day with papers
    assert 'id="next-period" href="/papers/date/2026-03-04"' in html  # 3 March is empty
    assert 'type="date" name="date" value="2026-03-02"' in html
    assert 'href="/papers/week/2026-W10"' in html and 'href="/papers/month/2026-03"' in html
    empty = page(client, "/papers/date/2026-03-03")
    assert "No papers on this day" in empty and 'href="/papers/date/2026-03-04"' in empty
    html = page(client, "/papers/date/2026-03-04")
    assert 'id="prev-period" href="/papers/date/2026-03-02"' in html
    assert 'id="next-period" href="/papers/date/2026-03-09"' in html


def test_day_order_is_votes_then_newest(fresh: TestClient) -> None:
    before = card_ids(page(fresh, "/papers/date/2026-03-02"), "daily")
    last = before[-1]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page(fresh, "/papers/date/2026-03-02"))
    assert token
    # A card's ▲ is a real form: posting it votes and comes back to the same page.
    response = fresh.post(
        f"/papers/{last}/upvote",
        data={"csrf_token": token[1], "next": "/papers/date/2026-03-02"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/papers/date/2026-03-02"
    after = card_ids(page(fresh, "/papers/date/2026-03-02"), "daily")
    assert after[0] == last and after[1:] == before[:-1]
    api = fresh.get("/api/v1/daily", params={"date": "2026-03-02"}).json()
    assert [p["id"] for p in api["results"]] == after
    assert api["results"][0]["upvotes"] == 1
    # A "next" that leaves the site is ignored: back to the paper instead.
    response = fresh.post(
        f"/papers/{last}/upvote",
        data={"csrf_token": token[1], "next": "//evil.example/x", "undo": "1"},
        follow_redirects=False,
    )
    assert response.headers["location"] == f"/papers/{last}"


def test_week_and_month_pages(client: TestClient) -> None:
    html = page(client, "/papers/week/2026-W10")
    assert "Week 10 of 2026" in html
    assert len(card_ids(html, "daily")) == 5
    assert 'href="/papers/date/2026-03-02"' in html and "Tue 3" in html  # the week's days
    assert 'id="prev-period" href="/papers/week/2026-W09"' in html
    assert 'id="next-period" href="/papers/week/2026-W11"' in html
    html = page(client, "/papers/month/2026-03")
    assert "March 2026" in html and len(card_ids(html, "daily")) == 6
    assert '<table class="calendar"' in html
    assert re.search(
        r'href="/papers/date/2026-03-02"><span class="cal-day">2</span>'
        r'<span class="cal-n">3</span>',
        html,
    )
    assert 'id="prev-period" href="/papers/month/2026-02"' in html


def test_the_date_picker_and_the_home_page(client: TestClient) -> None:
    response = client.get("/papers/date", params={"date": "2026-03-04"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/papers/date/2026-03-04"
    latest = client.get("/papers/date", follow_redirects=False).headers["location"]
    for path, params, where in (
        ("/papers/week", {}, "/papers/week/2026-W11"),
        ("/papers/week", {"week": "2026-W10"}, "/papers/week/2026-W10"),
        ("/papers/month", {}, "/papers/month/2026-03"),
        ("/papers/month", {"month": "2026-02"}, "/papers/month/2026-02"),
    ):
        response = client.get(path, params=params, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == where
    # The seed pages have no dates (their day is the day they were ingested, today); the
    # home page and the picker start at the newest day of dated papers instead.
    assert latest == "/papers/date/2026-03-09"
    home = page(client, "/")
    assert f'href="{latest}"' in home and "Newest: 9 Mar 2026" in home
    assert card_ids(home, "latest-day") == ["2603.00007"]
    today = datetime.now(UTC).date().isoformat()
    assert len(card_ids(page(client, f"/papers/date/{today}"), "daily")) == 50  # the seeds


BAD_PAGES = [
    ("/papers/date/2026-02-30", "not a date in the calendar"),
    ("/papers/date/99999-01-01", "YYYY-MM-DD"),
    ("/papers/date/x", "YYYY-MM-DD"),
    ("/papers/date/0001-01-01", "1900 or later"),
    ("/papers/date/2026-3-2", "YYYY-MM-DD"),
    ("/papers/date/%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96-03-02", "YYYY-MM-DD"),  # fullwidth
    ("/papers/date/%D9%A2%D9%A0%D9%A2%D9%A6-03-02", "YYYY-MM-DD"),  # Arabic-Indic digits
    ("/papers/date?date=2026-13-01", "not a date"),
    ("/papers/date?date=%00", "YYYY-MM-DD"),
    ("/papers/week?week=2026-W99", "not 99"),
    ("/papers/month?month=June", "YYYY-MM"),
    ("/papers/week/2026-W54", "ISO weeks 1 to 53, not 54"),
    ("/papers/week/2025-W53", "ISO weeks 1 to 52, not 53"),
    ("/papers/week/2026-W00", "not 0"),
    ("/papers/week/2026-10", "2026-W10"),
    ("/papers/month/2026-13", "01 to 12"),
    ("/papers/month/2026-00", "01 to 12"),
    ("/papers/month/2026-1", "YYYY-MM"),
    ("/papers/date/2026-03-02?page=0", "page"),
    ("/papers/date/2026-03-02?page=x", "page"),
    ("/papers/date/2026-03-02?page=2", "page must be within range"),
    ("/papers/week/2026-W10?page=-1", "page"),
    ("/papers/month/2026-03?page=99999999999999999999", "page"),
    ("/authors/Ada%20Lovelace?page=0", "page"),
    ("/categories/cs.CL?page=abc", "page"),
    ("/authors/Ada%20Lovelace?page=50", "page must be within range"),
]


@pytest.mark.parametrize(("url", "message"), BAD_PAGES)
def test_bad_periods_and_pages_get_a_400_page_that_says_why(
    client: TestClient, url: str, message: str
) -> None:
    html = page(client, url, 400)
    assert message in html
    assert 'href="/subscribe"' in html  # the error page is a page of the site


def test_week_53_exists_where_the_year_has_one(client: TestClient) -> None:
    assert "Week 53 of 2026" in page(client, "/papers/week/2026-W53")


# --- JSON -----------------------------------------------------------------------------


def test_daily_api_has_the_daily_papers_fields(client: TestClient) -> None:
    response = client.get("/api/v1/daily", params={"date": "2026-03-02"})
    assert response.status_code == 200
    body = response.json()
    assert body["period"] == "day" and body["key"] == "2026-03-02" and body["total"] == 3
    assert body["previous"] == "2026-02-27" and body["following"] == "2026-03-04"
    paper = next(p for p in body["results"] if p["id"] == "2603.00003")
    assert paper["title"].startswith("Daily test paper 3")
    assert paper["summary"].startswith("Abstract of daily paper 3")
    assert paper["authors"] == [{"name": "Ada Lovelace"}, {"name": "Author 3"}]
    assert paper["published"] == "2026-02-28" and paper["announced"] == "2026-03-02"
    assert paper["publishedAt"] == "2026-03-02T00:00:00Z" and paper["day"] == "2026-03-02"
    assert paper["upvotes"] == 0
    assert paper["githubRepo"] == "https://github.com/example/daily3" == paper["code_url"]
    assert paper["comment"].startswith("12 pages") and paper["doi"] == "10.1234/daily.3"
    assert paper["url"] == "/papers/2603.00003" and paper["categories"] == ["cs.CL", "cs.LG"]
    # ETag and 304, as every GET of the API.
    etag = response.headers["etag"]
    assert response.headers["cache-control"] == "public, no-cache"
    again = client.get(
        "/api/v1/daily", params={"date": "2026-03-02"}, headers={"If-None-Match": etag}
    )
    assert again.status_code == 304


def test_daily_api_pages_weeks_and_months(client: TestClient) -> None:
    first = client.get("/api/v1/daily/week", params={"week": "2026-W10", "k": 2}).json()
    assert first["total"] == 5 and len(first["results"]) == 2 and first["k"] == 2
    assert first["days"] == {"2026-03-02": 3, "2026-03-04": 2}
    assert first["previous"] == "2026-W09" and first["following"] == "2026-W11"
    seen = [p["id"] for p in first["results"]]
    url = first["next"]
    while url:
        body = client.get(url).json()
        seen += [p["id"] for p in body["results"]]
        url = body["next"]
    assert sorted(seen) == [f"2603.0000{i}" for i in range(2, 7)]
    by_page = client.get("/api/v1/daily/week", params={"week": "2026-W10", "k": 2, "page": 3})
    assert [p["id"] for p in by_page.json()["results"]] == seen[4:]
    month = client.get("/api/v1/daily/month", params={"month": "2026-02"}).json()
    assert [p["id"] for p in month["results"]] == ["2603.00001"]
    assert month["start"] == "2026-02-01" and month["end"] == "2026-02-28"
    assert month["previous"] is None and month["following"] == "2026-03"
    latest = client.get("/api/v1/daily").json()
    assert latest["period"] == "day" and latest["total"] > 0 and latest["previous"]


BAD_API = [
    ("/api/v1/daily", {"date": "2026-02-30"}, 400, "not a date in the calendar"),
    ("/api/v1/daily", {"date": "1899-12-31"}, 400, "1900 or later"),
    ("/api/v1/daily", {"date": "99999-01-01"}, 422, None),
    ("/api/v1/daily", {"date": "x"}, 422, None),
    ("/api/v1/daily", {"date": "\u0662\u0660\u0662\u0666-03-02"}, 422, None),
    ("/api/v1/daily", {"date": "2026-03-02", "k": "0"}, 422, None),
    ("/api/v1/daily", {"date": "2026-03-02", "k": "101"}, 422, None),
    ("/api/v1/daily", {"date": "2026-03-02", "offset": "-1"}, 422, None),
    ("/api/v1/daily", {"date": "2026-03-02", "page": "0"}, 422, None),
    ("/api/v1/daily/week", {"week": "2026-W54"}, 400, "ISO weeks 1 to 53"),
    ("/api/v1/daily/week", {"week": "2026-W00"}, 400, "not 0"),
    ("/api/v1/daily/week", {"week": "2026W10"}, 422, None),
    ("/api/v1/daily/week", {"week": "2026-W10", "offset": "x"}, 422, None),
    ("/api/v1/daily/month", {"month": "2026-13"}, 400, "01 to 12"),
    ("/api/v1/daily/month", {"month": "2026-3"}, 422, None),
    ("/api/v1/daily/month", {"month": "2026-03", "k": "many"}, 422, None),
]


@pytest.mark.parametrize(("url", "params", "status", "message"), BAD_API)
def test_bad_api_input_is_a_problem(
    client: TestClient, url: str, params: dict, status: int, message: str | None
) -> None:
    response = client.get(url, params=params)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    if message:
        assert message in body["detail"]


def test_trending_and_newest_differ_and_say_which_signal(fresh: TestClient) -> None:
    body = fresh.get("/api/v1/trending", params={"window": "week", "k": 20}).json()
    assert body["signal"] == "newest"
    html = page(fresh, "/trending?window=week")
    assert 'data-signal="newest"' in html and "No votes or views yet" in html
    home = page(fresh, "/")
    assert "No votes or views yet" in home
    # The seeds of the latest day that saved listing pages include come first; the day
    # page's order (no votes: newest first) is a different list.
    trending_ids = [p["id"] for p in body["results"]][:10]
    assert trending_ids != card_ids(home, "latest-day")
    first = fresh.get(f"/api/v1/papers/{trending_ids[0]}").json()
    assert first["collections"]  # on a saved listing page
    paper = body["results"][5]["id"]
    fresh.get(f"/papers/{paper}")  # a vote needs a visitor seen before
    fresh.post(f"/api/v1/papers/{paper}/upvote")
    voted = fresh.get("/api/v1/trending", params={"window": "week"}).json()
    assert voted["signal"] == "votes" and voted["results"][0]["id"] == paper
    assert 'data-signal="votes"' in page(fresh, "/trending?window=week")


# --- paper, author and category pages -------------------------------------------------


def test_paper_page_has_authors_dates_categories_and_links(client: TestClient) -> None:
    html = page(client, "/papers/2603.00003")
    assert '<a href="/authors/Ada%20Lovelace">Ada Lovelace</a>' in html
    assert 'Listed <a href="/papers/date/2026-03-02">2 Mar 2026</a>' in html
    assert "Submitted 28 Feb 2026" in html
    assert '<a class="tag" href="/categories/cs.CL">cs.CL</a>' in html
    for url in (
        "https://arxiv.org/abs/2603.00003",
        "https://arxiv.org/pdf/2603.00003",
        "https://arxiv.org/html/2603.00003",
        "https://doi.org/10.1234/daily.3",
        "https://github.com/example/daily3",
    ):
        assert f'href="{url}"' in html, url
    assert "12 pages, 3 figures" in html
    assert '<aside class="paper-side"' in html
    # An old-style id has no arXiv HTML rendering.
    old = page(client, "/papers/hep-th/9901001")
    assert "https://arxiv.org/abs/hep-th/9901001" in old and "arxiv.org/html" not in old


def test_cards_have_a_vote_button_and_a_code_link(client: TestClient) -> None:
    html = page(client, "/papers/date/2026-03-02")
    block = html.split('id="daily"', 1)[1]
    assert block.count('<form class="vote card-vote" method="post"') == 3
    assert 'action="/papers/2603.00003/upvote"' in block
    assert '<a class="tag code" href="https://github.com/example/daily3"' in block
    assert 'name="next" value="/papers/date/2026-03-02"' in block


def test_author_page_feed_and_category_page_feed(client: TestClient) -> None:
    html = page(client, "/authors/grace%20hopper")  # names match ignoring case
    assert card_ids(html, "people-papers") == ["2603.00005", "2603.00002"]  # newest first
    assert 'href="/feeds/author/grace%20hopper.atom"' in html
    feed = client.get("/feeds/author/Grace%20Hopper.atom")
    assert feed.status_code == 200 and feed.headers["content-type"].startswith(
        "application/atom+xml"
    )
    entries = ET.fromstring(feed.content).findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries][0].startswith("Daily test paper 5")
    html = page(client, "/categories/stat.ML")
    assert card_ids(html, "people-papers") == ["2603.00004"]
    assert 'type="application/atom+xml"' in html
    feed = client.get("/feeds/category/stat.ML.atom")
    assert len(ET.fromstring(feed.content).findall(f"{ATOM}entry")) == 1
    # A name that is a substring of another's, or a LIKE wildcard, matches nobody.
    for url in ("/authors/Hopper", "/authors/%25", "/authors/_race%20Hopper", "/categories/cs"):
        assert "No papers for this" in page(client, url, 404)


def test_a_big_category_pages_without_counting(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papersift.store import daily as daily_store

    small = card_ids(page(client, "/categories/cs.CL"), "people-papers")
    assert len(small) == 7  # the daily papers (4 has cs.CL as its primary), newest first
    monkeypatch.setattr(daily_store, "SMALL_LIST", 2)  # as if cs.CL had 200,000 papers
    first = page(client, "/categories/cs.CL")
    assert "More than 2 papers" in first and card_ids(first, "people-papers") == small
    monkeypatch.setattr("papersift.web.routes.people.PEOPLE_PAGE", 4)
    one, two = (page(client, f"/categories/cs.CL?page={n}") for n in (1, 2))
    assert card_ids(one, "people-papers") + card_ids(two, "people-papers") == small
    assert 'rel="next"' in one and 'rel="next"' not in two
    assert "page must be within range" in page(client, "/categories/cs.CL?page=3", 400)


@pytest.mark.parametrize(
    "url",
    [
        "/authors/Nobody%20At%20All",
        "/authors/%01control",
        "/authors/" + "x" * 300,
        "/categories/none.XX",
        "/feeds/author/Nobody.atom",
        "/feeds/category/none.XX.atom",
        "/feeds/author/%7F.atom",
    ],
)
def test_unknown_authors_and_categories_are_404(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404 and "Traceback" not in response.text


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/papers/date/2026-03-02",
        "/papers/2603.00003",
        "/authors/Ada%20Lovelace",
        "/collections",
        "/search?q=attention",
        "/trending",
        "/papers/date/x",
    ],
)
def test_subscribe_is_in_the_nav_of_every_page(client: TestClient, url: str) -> None:
    html = client.get(url).text
    nav = html.split('<nav class="top-nav"', 1)[1].split("</nav>", 1)[0]
    assert '<a href="/subscribe"' in nav and '<a href="/papers/date">Days</a>' in nav


def test_collections_show_titles_not_hash_names(client: TestClient) -> None:
    names = [c["name"] for c in client.get("/api/v1/collections").json()["results"]]
    assert names
    for url in ("/", "/collections", f"/collections/{names[0]}", "/search?q=attention"):
        html = page(client, url)
        shown = re.findall(r'<a href="/collections/[^"]+">([^<]+)</a>', html)
        shown += re.findall(r'<option value="[^"]*">([^<]+)</option>', html)
        shown += re.findall(r"<h1>([^<]+)</h1>", html) if "/collections/" in url else []
        assert not any(re.search(r"[0-9a-f]{16}", text) for text in shown), (url, shown)


# --- parsers --------------------------------------------------------------------------


@given(st.dates(min_value=date(1900, 1, 1)))
def test_every_day_week_and_month_parses_back(day: date) -> None:
    assert days.parse_day(day.isoformat()) == days.day_period(day)
    week = days.week_period(day)
    assert days.parse_week(week.key) == week and week.start <= day <= week.end
    assert week.start.weekday() == 0 and len(week.days) == 7
    month = days.month_period(day)
    assert days.parse_month(month.key) == month and month.start.day == 1
    assert (month.end + timedelta(days=1)).day == 1


@given(
    st.text(max_size=30)
    | st.from_regex(r"\d{4}-(W\d{2}|\d{2}(-\d{2})?)", fullmatch=True)  # any script's digits
)
def test_any_text_parses_or_is_refused_with_a_message(text: str) -> None:
    for parser in (days.parse_day, days.parse_week, days.parse_month):
        try:
            period = parser(text)
        except days.BadPeriod as exc:
            assert str(exc)
        else:
            assert period.key == text.strip() and text.strip().isascii()


@given(st.integers(1900, 9999), st.integers(0, 99))
def test_iso_weeks_exist_exactly_as_the_calendar_has_them(year: int, week: int) -> None:
    last = date(year, 12, 28).isocalendar()[1]
    key = f"{year}-W{week:02d}"
    if 1 <= week <= last:
        assert days.parse_week(key).start == date.fromisocalendar(year, week, 1)
    else:
        with pytest.raises(days.BadPeriod):
            days.parse_week(key)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(["date", "week", "month"]),
    value=st.text(st.characters(codec="utf-8", exclude_characters="/?#%"), min_size=1, max_size=12)
    | st.from_regex(r"\d{4}-(W\d{2}|\d{2}(-\d{2})?)", fullmatch=True),
)
def test_any_period_path_is_200_or_400(client: TestClient, kind: str, value: str) -> None:
    response = client.get(f"/papers/{kind}/{quote(value, safe='')}")
    assert response.status_code in (200, 400, 404), (value, response.status_code)
    assert "Traceback" not in response.text


# --- the queries on both databases ----------------------------------------------------


def test_day_queries_on_sqlite_and_postgres(db: Database) -> None:
    from papersift.store import daily as daily_store

    add_daily_papers(db)
    with db.session() as s:
        page_ = daily_store.papers_of_days(s, date(2026, 3, 2), date(2026, 3, 8), limit=2)
        assert page_.total == 5 and len(page_.items) == 2
        assert daily_store.next_day(s, date(2026, 3, 2)) == date(2026, 3, 4)
        assert daily_store.previous_day(s, date(2026, 3, 4)) == date(2026, 3, 2)
        assert daily_store.previous_day(s, date(2026, 2, 27)) is None
        assert daily_store.latest_day(s) == date(2026, 3, 9)
        assert daily_store.day_counts(s, date(2026, 3, 1), date(2026, 3, 31)) == {
            date(2026, 3, 2): 3,
            date(2026, 3, 4): 2,
            date(2026, 3, 9): 1,
        }
        assert daily_store.newest_by_day(s, 3) == ["2603.00007", "2603.00005", "2603.00006"]
        by = daily_store.papers_by_author(s, "GRACE HOPPER", limit=10)
        assert by.ids == ["2603.00005", "2603.00002"] and by.total == 2
        assert daily_store.papers_by_author(s, "Grace", limit=10).total == 0
        assert daily_store.papers_by_author(s, "%", limit=10).total == 0
        assert daily_store.papers_in_category(s, "stat.ML", limit=10).ids == ["2603.00004"]
        assert daily_store.papers_in_category(s, "cs.L_", limit=10).total == 0
