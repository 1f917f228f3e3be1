"""Trending and votes on both databases: formula, windows, tie-breaks, one vote per visitor."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from papersift.rank import trending as tr
from papersift.rank import votes
from papersift.rank.listing import newest
from papersift.store.db import Database
from papersift.store.schema import PaperRow, PaperViewRow

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def _add(db: Database, pid: str, *, seen: datetime, published: date | None = None) -> None:
    with db.session() as s:
        s.add(
            PaperRow(
                id=pid,
                title=f"Paper {pid}",
                title_key=pid,
                abstract="",
                authors=[],
                categories=[],
                code_urls=[],
                sources=[],
                has_code=False,
                published=published,
                first_seen=seen,
                modified_at=seen,
                content_hash="0" * 40,
            )
        )


@pytest.fixture
def four(db: Database) -> Database:
    for i, pid in enumerate(["a", "b", "c", "hep-th/9901001"]):
        _add(db, pid, seen=NOW - timedelta(days=3, hours=i))
    return db


def test_empty_database_has_empty_trending(db: Database) -> None:
    with db.session() as s:
        assert tr.trending(s, "day", now=NOW) == []


def test_no_activity_orders_newest_first_seen(four: Database) -> None:
    with four.session() as s:
        ranked = tr.trending(s, "week", limit=10, now=NOW)
    assert [pid for pid, _ in ranked] == ["a", "b", "c", "hep-th/9901001"]
    assert all(score == 0.0 for _, score in ranked)


def test_votes_lift_a_paper_and_undo_drops_it(four: Database) -> None:
    with four.session() as s:
        assert votes.upvote(s, "c", "visitor-1", now=NOW - timedelta(hours=1))
    with four.session() as s:
        ranked = tr.trending(s, "day", limit=2, now=NOW)
    assert ranked[0][0] == "c" and ranked[0][1] > 0
    assert ranked[1] == ("a", 0.0)
    with four.session() as s:
        assert votes.remove_vote(s, "c", "visitor-1")
        assert not votes.remove_vote(s, "c", "visitor-1")
    with four.session() as s:
        assert tr.trending(s, "day", limit=1, now=NOW)[0][0] == "a"


def test_one_vote_per_visitor(four: Database) -> None:
    with four.session() as s:
        assert votes.upvote(s, "b", "v1")
        assert not votes.upvote(s, "b", "v1")
        assert votes.upvote(s, "b", "v2")
    with four.session() as s:
        assert votes.vote_count(s, "b") == 2
        assert votes.vote_counts(s, ["a", "b"]) == {"a": 0, "b": 2}
        assert votes.voted_by(s, "v1", ["a", "b", "c"]) == {"b"}
        assert votes.voted_by(s, None, ["b"]) == set()


def test_vote_on_unknown_paper_or_bad_visitor_changes_nothing(four: Database) -> None:
    with pytest.raises(votes.UnknownPaper), four.session() as s:
        votes.upvote(s, "nope", "v1")
    with pytest.raises(ValueError), four.session() as s:
        votes.upvote(s, "a", "x" * 65)
    with four.session() as s:
        assert votes.vote_counts(s, ["a", "nope"]) == {"a": 0, "nope": 0}


def test_slash_ids_vote_and_rank(four: Database) -> None:
    with four.session() as s:
        votes.upvote(s, "hep-th/9901001", "v1", now=NOW)
    with four.session() as s:
        assert tr.trending(s, "month", limit=1, now=NOW)[0][0] == "hep-th/9901001"


def test_windows_only_count_recent_activity(four: Database) -> None:
    with four.session() as s:
        votes.upvote(s, "c", "old-voter", now=NOW - timedelta(days=3))
        votes.upvote(s, "b", "new-voter", now=NOW - timedelta(hours=2))
    with four.session() as s:
        day = dict(tr.trending(s, "day", limit=10, now=NOW))
        week = dict(tr.trending(s, "week", limit=10, now=NOW))
    assert day["c"] == 0.0 and day["b"] > 0
    assert week["c"] > 0 and week["b"] > 0


def test_views_count_a_tenth_of_a_vote(four: Database) -> None:
    with four.session() as s:
        for _ in range(25):
            tr.record_view(s, "a", NOW.date())
        votes.upvote(s, "b", "v1", now=NOW)
        votes.upvote(s, "c", "v1", now=NOW)
        votes.upvote(s, "c", "v2", now=NOW)
    with four.session() as s:
        assert s.get(PaperViewRow, ("a", NOW.date())).count == 25
        ranked = [pid for pid, _ in tr.trending(s, "day", limit=3, now=NOW)]
    # c: 2 votes; a: 2.5 points from views; b: 1 vote. Ages are equal (capped at a day).
    assert ranked == ["a", "c", "b"]


def test_gravity_favours_newer_papers_but_caps_age_at_the_window(db: Database) -> None:
    _add(db, "old", seen=NOW - timedelta(days=20))
    _add(db, "new", seen=NOW - timedelta(hours=5))
    with db.session() as s:
        for i in range(10):
            votes.upvote(s, "old", f"v{i}", now=NOW)
        votes.upvote(s, "new", "v1", now=NOW)
    with db.session() as s:
        month = tr.trending(s, "month", now=NOW)
        day = tr.trending(s, "day", now=NOW)
    # month: 1/(5+2)^1.5 = 0.054 beats 10/(480+2)^1.5 = 0.0009
    assert [pid for pid, _ in month] == ["new", "old"]
    # day: the old paper's age is capped at 24 h, so 10/(24+2)^1.5 = 0.075 wins
    assert [pid for pid, _ in day] == ["old", "new"]
    assert dict(day)["old"] == pytest.approx(tr.decayed_score(10, 480, tr.WINDOWS["day"]))
    assert dict(day)["old"] == pytest.approx(10 / 26**1.5)


def test_published_date_sets_the_age(db: Database) -> None:
    # Seen today but published long ago: an old paper, not a new one.
    _add(db, "classic", seen=NOW - timedelta(hours=1), published=date(2017, 6, 12))
    _add(db, "fresh", seen=NOW - timedelta(hours=1))
    with db.session() as s:
        votes.upvote(s, "classic", "v1", now=NOW)
        votes.upvote(s, "fresh", "v1", now=NOW)
    with db.session() as s:
        ranked = tr.trending(s, "week", now=NOW)
    assert [pid for pid, _ in ranked] == ["fresh", "classic"]
    assert ranked[1][1] == pytest.approx(1 / (7 * 24 + 2) ** 1.5)


def test_limit_and_unknown_window(four: Database) -> None:
    with four.session() as s:
        assert len(tr.trending(s, "day", limit=2, now=NOW)) == 2
        assert tr.trending(s, "day", limit=0, now=NOW) == []
        with pytest.raises(ValueError, match="unknown window"):
            tr.trending(s, "year", now=NOW)


def test_newest_orders_by_the_papers_day(db: Database) -> None:
    # The day is the listing day, else the submission date, else the day first seen.
    _add(db, "undated", seen=NOW - timedelta(days=800))
    _add(db, "dated-old", seen=NOW - timedelta(days=9), published=date(2020, 1, 1))
    _add(db, "dated-new", seen=NOW - timedelta(days=9), published=date(2024, 1, 1))
    with db.session() as s:
        assert newest(s, limit=3) == ["dated-new", "undated", "dated-old"]
        assert newest(s, limit=1, offset=2) == ["dated-old"]
        s.get(PaperRow, "dated-old").announced = date(2025, 1, 2)  # listed much later
    with db.session() as s:
        assert newest(s, limit=3) == ["dated-old", "dated-new", "undated"]
        assert newest(s, limit=0) == []


def test_no_activity_falls_back_to_listings_code_then_newest(db: Database) -> None:
    from papersift.store import collections as collection_store

    _add(db, "plain-new", seen=NOW, published=date(2025, 3, 10))
    _add(db, "listed", seen=NOW, published=date(2025, 3, 9))
    _add(db, "coded", seen=NOW, published=date(2025, 3, 8))
    _add(db, "old", seen=NOW, published=date(2024, 1, 1))
    _add(db, "future", seen=NOW, published=date(2025, 4, 1))  # after "now": not in the window
    with db.session() as s:
        s.get(PaperRow, "coded").has_code = True
        collection_store.upsert_collection(s, "page", "page.txt", ["listed"])
    with db.session() as s:
        week = tr.ranking(s, "week", limit=10, now=NOW)
        day = tr.ranking(s, "day", limit=10, now=NOW)
        newest_ids = newest(s, limit=10)
    assert week.signal == "newest" and day.signal == "newest"
    assert [pid for pid, _ in week.items] == ["listed", "coded", "plain-new", "future", "old"]
    assert [pid for pid, _ in day.items][:1] == ["plain-new"]  # the window is one day
    assert newest_ids == ["future", "plain-new", "listed", "coded", "old"]
    assert [pid for pid, _ in week.items] != newest_ids
    with db.session() as s:
        tr.record_view(s, "old", NOW.date())
    with db.session() as s:
        views = tr.ranking(s, "week", limit=2, now=NOW)
        assert views.signal == "views" and views.items[0][0] == "old"
        votes.upvote(s, "coded", "v1", now=NOW)
    with db.session() as s:
        voted = tr.ranking(s, "week", limit=1, now=NOW)
    assert voted.signal == "votes" and voted.items[0][0] == "coded"
