"""For you: recommendation feedback and sent marks in the store (SQLite and PostgreSQL),
the service over a real home (real MiniLM vectors in the real index), and the pages and API
with real sessions and CSRF."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from papersift.accounts.export import erase_account, export_account
from papersift.model import paper_day
from papersift.rank.foryou import ForYou, UnknownTag
from papersift.search import get_service
from papersift.settings import Settings, load_settings
from papersift.store import feedback as fb
from papersift.store import library as library_store
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.web.app import create_app

from .accounts_support import api_token, make_account, sign_in
from .digest_support import copy_home

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _papers(db: Database, *ids: str) -> None:
    with db.session() as s:
        paper_store.insert_rows(
            s, [paper_store.bare_row(p, f"T {p}", "", source="test", now=NOW) for p in ids]
        )


def test_feedback_and_sent_marks(db: Database) -> None:
    _papers(db, "a", "b", "c")
    ada = make_account(db, "ada@example.org")
    bob = make_account(db, "bob@example.org")
    with db.session() as s:
        rl = library_store.ensure_tag(s, ada.id, "RL").id
        assert fb.dismiss(s, ada.id, "a", rl, NOW)
        assert not fb.dismiss(s, ada.id, "a", rl, NOW)  # already so
        assert not fb.dismiss(s, ada.id, "missing", rl, NOW)  # no such paper
        assert fb.more_like_this(s, ada.id, "b", rl, NOW)
        assert fb.dismiss(s, ada.id, "c", None, NOW)
    with db.session() as s:
        assert fb.dismissed_ids(s, ada.id, rl) == ["a"]
        assert fb.dismissed_ids(s, ada.id) == ["c"]
        assert fb.all_dismissed_ids(s, ada.id) == {"a", "c"}
        assert fb.positives(s, ada.id, rl) == ["b"] and fb.positives(s, ada.id) == []
        assert fb.all_dismissed_ids(s, bob.id) == set()
        # "more like this" after "not interested" replaces the verdict
        assert fb.more_like_this(s, ada.id, "a", rl, NOW)
        assert fb.dismissed_ids(s, ada.id, rl) == []
        assert fb.undo(s, ada.id, "a", rl) and not fb.undo(s, ada.id, "a", rl)
    with db.session() as s:
        assert fb.mark_sent(s, ada.id, ["a", "b", "a", "missing"], NOW, via="digest:tag:RL") == 2
        assert fb.mark_sent(s, ada.id, ["b", "c"], NOW) == 1
        assert fb.sent_ids(s, ada.id) == {"a", "b", "c"}
        assert fb.sent_ids(s, ada.id, ["c", "zzz"]) == {"c"}
        assert fb.sent_ids(s, bob.id) == set()
    exported = export_account(db, ada.id)["recommendation_feedback"]
    assert {f["paper_id"] for f in exported["feedback"]} == {"b", "c"}
    assert [s["via"] for s in exported["sent"]].count("digest:tag:RL") == 2
    with db.session() as s:
        assert fb.reset(s, ada.id, rl) == 1 and fb.positives(s, ada.id, rl) == []
        fb.dismiss(s, ada.id, "a", rl, NOW)
        library_store.delete_tag(s, ada.id, rl)  # a tag's feedback goes with the tag
    with db.session() as s:
        assert fb.all_dismissed_ids(s, ada.id) == {"c"}
        erase_account(s, ada.id)
    with db.session() as s:
        assert fb.all_dismissed_ids(s, ada.id) == set() and fb.sent_ids(s, ada.id) == set()


# -- the service over a real home ------------------------------------------------------------


@dataclass
class Home:
    settings: Settings
    db: Database
    foryou: ForYou


@pytest.fixture(scope="module")
def home(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    path = copy_home(web_home, tmp_path_factory.mktemp("foryou") / "home")
    settings = load_settings(path, f"sqlite:///{path / 'papersift.db'}")
    db = Database(settings.db_url)
    yield Home(settings, db, ForYou(db, get_service(settings, db)))
    db.dispose()


def _library(home: Home, email: str, query: str, tag: str, n: int = 4) -> tuple[int, list[str]]:
    """A reader who saved the top ``n`` search results for ``query`` into ``tag``."""
    account = make_account(home.db, email)
    hits = get_service(home.settings, home.db).search(query, k=n).hits
    ids = [h.paper_id for h in hits]
    assert len(ids) == n, query
    with home.db.session() as s:
        for pid in ids:
            library_store.add(s, account.id, pid, tag)
    return account.id, ids


def test_recommendations_explain_themselves_and_learn(home: Home) -> None:
    uid, saved = _library(home, "reader@example.org", "neural network training", "ML")
    first = home.foryou.recommendations(uid, "ML", k=10)
    assert len(first.picks) == 10 and first.library_size == 4 and not first.message
    ids = [p.paper_id for p in first.picks]
    assert not set(ids) & set(saved)
    for pick in first.picks:
        assert 1 <= len(pick.nearest) <= 3
        assert {s.paper_id for s, _ in pick.nearest} <= set(saved)
        assert all(s.tag == "ML" for s, _ in pick.nearest)
        assert all(isinstance(t, str) and t for t in pick.terms)
    assert first.weights and sum(n for _, n in first.weights) >= 10

    # Not interested: gone at once, and the rest of the list moves.
    assert home.foryou.feedback(uid, ids[0], "dismiss", "ML")
    second = [p.paper_id for p in home.foryou.recommendations(uid, "ML", k=10).picks]
    assert ids[0] not in second and second != ids[1:]
    # Also gone from the whole-library page (dismissed anywhere: never shown again).
    overall = home.foryou.recommendations(uid, None, k=30)
    assert ids[0] not in [p.paper_id for p in overall.picks]
    assert all(s.tag == "ML" for p in overall.picks for s, _ in p.nearest)

    # More like this: a positive that weighs like a saved paper, and is not itself shown.
    home.foryou.feedback(uid, ids[1], "more", "ML")
    third = home.foryou.recommendations(uid, "ML", k=10)
    assert third.library_size == 5 and ids[1] not in [p.paper_id for p in third.picks]
    assert any(s.positive for p in third.picks for s, _ in p.nearest) or any(
        s.positive for s, _ in third.weights
    )

    # Sent by a digest: never again. Reset brings the dismissed one back as a candidate.
    with home.db.session() as s:
        fb.mark_sent(s, uid, [ids[2]], datetime.now(UTC))
    assert ids[2] not in [p.paper_id for p in home.foryou.recommendations(uid, "ML", k=50).picks]
    assert home.foryou.reset(uid, "ML") == 2
    after = [p.paper_id for p in home.foryou.recommendations(uid, "ML", k=50).picks]
    assert ids[0] in after and ids[2] not in after

    with pytest.raises(UnknownTag):
        home.foryou.recommendations(uid, "No such tag")
    with pytest.raises(UnknownTag):
        home.foryou.feedback(uid, ids[0], "dismiss", "No such tag")


def test_papers_other_readers_saved_alongside_join_with_their_reason(home: Home) -> None:
    """Three readers saved two deep-learning papers and one quantum paper; a fourth who saved
    the two gets the quantum paper (far in meaning) with the co-saved reason, and not when
    the signal is off (fewer readers than ``co_saved_readers``)."""
    from papersift.rank.foryou import CoSavedCache

    search = get_service(home.settings, home.db)
    pair = [h.paper_id for h in search.search("deep reinforcement learning agents", k=2).hits]
    far = search.search("quantum error correction codes", k=1).hits[0].paper_id
    for n in range(3):
        account = make_account(home.db, f"cosaver{n}@example.org")
        with home.db.session() as s:
            for pid in (*pair, far):
                library_store.add(s, account.id, pid, "Reading")
    uid = make_account(home.db, "newcomer@example.org").id
    with home.db.session() as s:
        for pid in pair:
            library_store.add(s, uid, pid, "RL")

    on = home.foryou.recommendations(uid, "RL", k=20)
    picked = {p.paper_id: p for p in on.picks}
    assert far in picked and picked[far].co_saved
    assert sum(p.co_saved for p in on.picks) <= 3  # the others come from meaning alone
    off = ForYou(home.db, search)
    off.cosaved = CoSavedCache(min_readers=10_000)
    assert far not in [p.paper_id for p in off.recommendations(uid, "RL", k=20).picks]
    # Saving more anywhere is seen at once (the signal is rebuilt when a library changes).
    other = make_account(home.db, "late@example.org")
    with home.db.session() as s:
        library_store.add(s, other.id, far, "Q")
    assert far in [p.paper_id for p in home.foryou.recommendations(uid, "RL", k=20).picks]
    week = home.foryou.recommendations(uid, "RL", k=20, window="week")
    assert not any(p.co_saved for p in week.picks)


def test_new_this_week_and_empty_libraries(home: Home) -> None:
    uid, _ = _library(home, "weekly@example.org", "quantum", "Q", n=3)
    week = home.foryou.recommendations(uid, "Q", window="week", k=50)
    with home.db.session() as s:
        from papersift.store.daily import latest_day

        latest = latest_day(s)
        assert latest is not None
        days = {
            paper_day(p)
            for p in paper_store.get_papers(s, [p.paper_id for p in week.picks]).values()
        }
    assert week.window == "week" and (week.picks or week.message)
    assert all(d is not None and latest - timedelta(days=6) <= d <= latest for d in days)
    empty = make_account(home.db, "new@example.org")
    none = home.foryou.recommendations(empty.id)
    assert none.picks == [] and "Save a paper" in none.message


# -- the pages and the API -----------------------------------------------------------------


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def test_pages_and_api(home: Home) -> None:
    uid, saved = _library(home, "web@example.org", "galaxy dark matter", "Astro")
    with TestClient(create_app(home.settings, db=home.db, warm_search=False)) as c:
        anonymous = c.get("/for-you", follow_redirects=False)
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/signin")
        from papersift.accounts import Account

        sign_in(c, home.db, Account(uid, "web@example.org", "", False))
        page = c.get("/for-you/Astro")
        assert page.status_code == 200
        shown = re.findall(r'data-paper="([^"]+)"', page.text)
        assert len(shown) >= 5 and not set(shown) & set(saved)
        assert "in your tag <em>Astro</em>" in page.text and "Weighs most" in page.text
        assert c.get("/for-you/Nope").status_code == 404
        forged = c.post(
            "/for-you/feedback",
            data={"paper_id": shown[0], "action": "dismiss", "tag": "Astro"},
            follow_redirects=False,
        )
        assert forged.status_code == 403
        done = c.post(
            "/for-you/feedback",
            data={
                "csrf_token": _csrf(page.text),
                "paper_id": shown[0],
                "action": "dismiss",
                "tag": "Astro",
                "next": "/for-you/Astro",
            },
            follow_redirects=False,
        )
        assert done.status_code == 303 and done.headers["location"] == "/for-you/Astro"
        again = re.findall(r'data-paper="([^"]+)"', c.get("/for-you/Astro").text)
        assert shown[0] not in again and again != shown

        c.cookies.clear()
        auth = {"Authorization": f"Bearer {api_token(home.db, Account(uid, '', '', False))}"}
        got = c.get("/api/v1/recommendations", params={"tag": "Astro", "k": 5}, headers=auth)
        assert got.status_code == 200
        body = got.json()
        assert len(body["recommendations"]) == 5 and shown[0] not in {
            r["paper_id"] for r in body["recommendations"]
        }
        reasons = body["recommendations"][0]["reasons"]
        assert reasons["nearest_saved"][0]["tag"] == "Astro"
        assert reasons["nearest_saved"][0]["paper_id"] in saved
        more = c.post(
            "/api/v1/recommendations/feedback",
            json={"paper_id": again[0], "action": "more", "tag": "Astro"},
            headers=auth,
        )
        assert more.status_code == 200 and more.json()["changed"]
        bad = c.post(
            "/api/v1/recommendations/feedback",
            json={"paper_id": again[0], "action": "explode"},
            headers=auth,
        )
        assert bad.status_code == 422
        reset = c.delete("/api/v1/recommendations/feedback", params={"tag": "Astro"}, headers=auth)
        assert reset.json() == {"forgotten": 2}
        assert c.get("/api/v1/recommendations").status_code == 401
