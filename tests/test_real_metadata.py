"""The real-metadata fields of a paper: its day, primary category and comment."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from papersift.model import PAPER_FIELDS, Paper, paper_day


def test_paper_day_prefers_announced_then_published_then_first_seen_utc() -> None:
    seen = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 04:30 UTC next day
    paper = Paper(id="x", title="t", first_seen=seen)
    assert paper_day(paper) == date(2026, 3, 2)
    paper.published = date(2026, 2, 27)
    assert paper_day(paper) == date(2026, 2, 27)
    paper.announced = date(2026, 2, 28)
    assert paper_day(paper) == date(2026, 2, 28)
    assert paper_day(Paper(id="y", title="t")) is None
    assert paper_day(Paper(id="z", title="t", first_seen=datetime(2026, 1, 1, tzinfo=UTC))) == (
        date(2026, 1, 1)
    )


def test_new_fields_are_paper_fields_and_serialize() -> None:
    assert {"announced", "primary_category", "comment"} <= set(PAPER_FIELDS)
    paper = Paper(
        id="2401.00001",
        title="t",
        announced=date(2024, 1, 2),
        primary_category="cs.CL",
        comment="9 pages",
    )
    data = paper.to_dict()
    assert data["announced"] == "2024-01-02"
    assert data["primary_category"] == "cs.CL"
    assert data["comment"] == "9 pages"
