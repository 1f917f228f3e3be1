"""Digest sections for readers with an account: one per tag (new recommendations for it),
one per saved search in the digest (its new matches), and no paper twice to one reader
whatever section, mail or page it came from. Real index, SQLite, aiosmtpd on loopback."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.run import run_digests
from papersift.digest.validation import clean_preferences
from papersift.library import searches
from papersift.settings import load_settings
from papersift.store import feedback as feedback_store
from papersift.store import library as library_store
from papersift.store import subscriptions as subscriber_store
from papersift.store.db import Database
from papersift.store.schema import PaperRow, PaperViewRow, VoteRow
from papersift.store.schema_feedback import ReaderSentRow

from .accounts_support import make_account
from .digest_support import SmtpCapture, copy_home

pytest.importorskip("papersift.search.service")

TODAY = date.today()
PAPER = re.compile(r"/papers/([^\s\"<>]+)")


@pytest.fixture(scope="module")
def site(web_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """A private copy of the indexed seed corpus: every paper first seen three days ago."""
    home = copy_home(web_home, tmp_path_factory.mktemp("digest-sections") / "home")
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    db = Database(settings.db_url)
    with db.session() as s:
        s.execute(update(PaperRow).values(first_seen=datetime.now(UTC) - timedelta(days=3)))
        # Earlier tests vote on the shared corpus; here nothing trends, so every paper
        # mailed comes from the reader's own sections.
        s.execute(delete(VoteRow))
        s.execute(delete(PaperViewRow))
    from papersift.search.service import get_service

    yield settings, db, get_service(settings, db)
    db.dispose()


def make_new(db: Database, ids: list[str], at: datetime) -> None:
    with db.session() as s:
        s.execute(update(PaperRow).where(PaperRow.id.in_(ids)).values(first_seen=at))


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def ids_in(text: str) -> list[str]:
    return PAPER.findall(text)


def sections_of(text: str) -> dict[str, list[str]]:
    """Paper ids under each heading of a digest's text part (headings are upper case)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.strip() and line == line.upper() and not line.startswith((" ", "*", "-")):
            current = out.setdefault(line, [])
        elif current is not None:
            current.extend(ids_in(line))
    return out


def reader_marks(db: Database, user_id: int) -> dict[str, str]:
    with db.session() as s:
        rows = s.execute(
            select(ReaderSentRow.paper_id, ReaderSentRow.via).where(
                ReaderSentRow.user_id == user_id
            )
        )
        return {pid: via for pid, via in rows}


def test_tag_and_saved_search_sections_and_exactly_once_per_reader(site) -> None:
    settings, db, service = site
    now = datetime.now(UTC)
    reader = make_account(db, "reader@example.org")
    rl = [h.paper_id for h in service.search("reinforcement learning policy", k=80).hits]
    diffusion = [h.paper_id for h in service.search("diffusion models", k=40).hits]
    diffusion = [p for p in diffusion if p not in rl][:12]
    saved, new_rl = rl[:5], rl[5:45]
    with db.session() as s:
        for pid in saved:
            library_store.add(s, reader.id, pid, "RL")
        # one new paper the For-you page already showed as sent, one the reader dismissed
        feedback_store.mark_sent(s, reader.id, [new_rl[0]], now, "foryou")
        feedback_store.dismiss(s, reader.id, new_rl[1], None, now)
    saved_search = searches.save_search(
        db, reader.id, "diffusion models", {}, name="Diffusion", in_digest=True
    )
    searches.save_search(db, reader.id, "graph neural networks", {}, name="GNN")  # not in it
    make_new(db, new_rl + diffusion, now - timedelta(hours=1))
    made = subs.subscribe(
        db, "reader@example.org", clean_preferences(topics=["diffusion"], max_papers=40)
    )
    sub, _ = subs.confirm(
        db,
        settings,
        tokens.make_token(settings, tokens.CONFIRM, made.subscriber.id, made.subscriber.email),
    )
    with db.session() as s:
        subscriber_store.set_values(s, sub.id, last_digest_at=now - timedelta(days=1))

    with SmtpCapture() as smtp:
        report = run_digests(settings.replace(smtp_url=smtp.url), db, day=TODAY, backoff=0.01)
        assert report.counts() == {"sent": 1}, report.to_dict()
        text, html = parts(smtp.wait_for(1)[0].message)
    mailed = ids_in(text)
    assert len(mailed) == len(set(mailed))  # one paper, one section, once
    assert set(ids_in(html)) == set(mailed)
    assert new_rl[0] not in mailed and new_rl[1] not in mailed  # sent before / dismissed
    assert not set(saved) & set(mailed)  # the reader has those
    assert not set(mailed) - set(new_rl + diffusion)  # only what is new since the last mail
    # The tag's section: new papers near the saved ones, with why, and its page.
    assert 'NEW FOR YOUR TAG "RL"' in text and "New for your tag &#34;RL&#34;" in html
    assert f"{settings.base_url}/for-you/RL" in text and "/for-you/RL" in html
    assert "Why: near" in text and "Why: near" in html
    by_section = sections_of(text)
    tag_ids = by_section['NEW FOR YOUR TAG "RL"']
    assert tag_ids and set(tag_ids) <= set(new_rl)
    # The saved search in the digest, through the search page's own floor; not the other one.
    assert 'SAVED SEARCH "DIFFUSION"' in text or not set(diffusion) - set(mailed)
    link = f"/library/searches/{saved_search.id}"
    assert "GNN" not in text
    # The topic and the saved search overlap: each diffusion paper is in one section only.
    assert set(diffusion) & set(mailed)
    # Everything mailed is marked sent to the reader, under the section it came in.
    marks = reader_marks(db, reader.id)
    assert set(mailed) <= set(marks)
    assert {marks[p] for p in tag_ids} == {"digest:tag:RL"}
    if link in text:
        found = by_section['SAVED SEARCH "DIFFUSION"']
        assert found and {marks[p] for p in found} == {f"digest:search:{saved_search.id}"}

    # Next day: more new papers, and some of yesterday's are seen again (a re-harvest).
    # Nothing the reader got comes back, whatever section would now carry it.
    later = datetime.now(UTC) + timedelta(seconds=1)
    fresh_rl = [p for p in rl[45:] if p not in mailed][:20]
    make_new(db, fresh_rl + mailed, later)
    with SmtpCapture() as smtp:
        report = run_digests(
            settings.replace(smtp_url=smtp.url), db, day=TODAY + timedelta(days=1), backoff=0.01
        )
        again = [ids_in(parts(m.message)[0]) for m in smtp.messages]
    assert report.count("sent") == 1 and len(again) == 1 and again[0], report.to_dict()
    assert not set(again[0]) & set(mailed)
    assert not set(again[0]) & {new_rl[0], new_rl[1]}
    assert set(again[0]) <= set(fresh_rl)


def test_a_subscriber_without_an_account_gets_no_reader_sections(site) -> None:
    settings, db, _service = site
    made = subs.subscribe(db, "plain@example.org", clean_preferences(topics=["diffusion"]))
    subs.confirm(
        db,
        settings,
        tokens.make_token(settings, tokens.CONFIRM, made.subscriber.id, made.subscriber.email),
    )
    from papersift.digest.compose import Composer

    sub = subs.get_by_email(db, "plain@example.org")
    assert sub is not None
    digest = Composer(settings, db).compose(sub, TODAY)
    assert digest.reader_id is None
    assert not [s for s in digest.sections if s.via.startswith(("digest:tag", "digest:search"))]


def test_an_uncertain_delivery_counts_as_sent_for_the_reader(site) -> None:
    from papersift.digest.ledger import CLAIMED, Ledger, alive, new_claimer
    from papersift.store import papers as paper_store

    settings, db, _service = site
    reader = make_account(db, "unsure@example.org")
    made = subs.subscribe(db, "unsure@example.org", clean_preferences(topics=["diffusion"]))
    subs.confirm(
        db,
        settings,
        tokens.make_token(settings, tokens.CONFIRM, made.subscriber.id, made.subscriber.email),
    )
    with db.session() as s:
        ids = paper_store.newest_ids(s, 2)
    ledger = Ledger(db, new_claimer())
    with alive(ledger.claimer):
        assert ledger.claim(made.subscriber.id, "2099-01-01", None, CLAIMED, ids, "<m@x.org>")
        ledger.sending(made.subscriber.id, "2099-01-01")
        assert ledger.uncertain(
            made.subscriber.id, "2099-01-01", ledger.claimer, ids, "crash", reader_id=reader.id
        )
    assert set(ids) <= set(reader_marks(db, reader.id))
