"""A reader's whole journey in headless Chromium against a real server and a real SMTP
inbox: sign up by the mailed link, import a BibTeX file, see recommendations with their
reasons, dismiss one and see it gone and the list change, save a search, comment, and sign
out everywhere (a second, phone-sized browser is signed out too). Desktop and phone
screenshots go to test-artifacts/ for a person to look at."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from papersift.search import get_service
from papersift.store import papers as paper_store

from .accounts_support import AccountsServer, accounts_server
from .digest_support import copy_home, links_in
from .test_e2e_browser import ARTIFACTS, Console, chromium, new_page  # noqa: F401

pytestmark = pytest.mark.browser

EMAIL = "reader@lab.example.org"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


Live = AccountsServer  # the journey's server: accounts, open sign-up, mail to aiosmtpd


@pytest.fixture(scope="module")
def live(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with accounts_server(copy_home(web_home, tmp_path_factory.mktemp("journey") / "home")) as on:
        yield on


def bibtex_of(live: Live, query: str, n: int) -> tuple[str, list[str]]:
    """A BibTeX export of ``n`` corpus papers (by arXiv id or title) and one paper the corpus
    lacks, as a reference manager writes it."""
    hits = get_service(live.settings, live.db).search(query, k=n).hits
    with live.db.session() as s:
        papers = paper_store.get_papers(s, [h.paper_id for h in hits])
    entries = []
    for i, hit in enumerate(hits):
        p = papers[hit.paper_id]
        ident = (
            f"  eprint = {{{p.arxiv_id}}},\n  archivePrefix = {{arXiv}},\n" if p.arxiv_id else ""
        )
        entries.append(f"@article{{ref{i},\n  title = {{{p.title}}},\n{ident}  year = {{2024}}\n}}")
    entries.append(
        "@inproceedings{mine,\n  title = {A Workshop Paper Nobody Indexed About Sparse Codes},\n"
        "  abstract = {We study sparse codes for attention.},\n  year = {2023}\n}"
    )
    return "\n\n".join(entries) + "\n", [h.paper_id for h in hits]


def sign_in_by_mail(live: Live, page, email: str) -> None:
    before = len(live.smtp.to(email))
    page.goto("/signin?next=/for-you")
    page.fill("#signin-email", email)
    page.click("form[action='/signin'] button[type=submit]")
    deadline = time.monotonic() + 20
    while len(live.smtp.to(email)) <= before:
        assert time.monotonic() < deadline, "no sign-in mail arrived"
        time.sleep(0.05)
    [link] = [u for u in links_in(live.smtp.to(email)[-1].message) if "/signin/link" in u]
    page.goto(link)
    expect(page.locator("a.nav-account")).to_be_visible()


def rec_ids(page) -> list[str]:
    return page.eval_on_selector_all(
        "#recommendations .rec", "els => els.map(e => e.getAttribute('data-paper'))"
    )


def test_reader_journey(chromium, live: Live, tmp_path: Path) -> None:  # noqa: F811
    desk, page, console = new_page(chromium, live.url, **DESKTOP)
    sign_in_by_mail(live, page, EMAIL)
    page.screenshot(path=str(ARTIFACTS / "journey-signed-in.png"), full_page=True)

    # Import a BibTeX file into a tag.
    bib, corpus_ids = bibtex_of(live, "neural network learning", 5)
    path = tmp_path / "my-library.bib"
    path.write_text(bib, encoding="utf-8")
    page.goto("/library/import")
    page.set_input_files("input[name=file]", str(path))
    page.fill("input[name=tag]", "ML")
    page.click("form.import-form button[type=submit]")
    report = page.locator(".import-report h2")
    expect(report).to_contain_text("matched")
    assert re.search(r"\b5 matched, 1 added, 0 failed", report.inner_text()), report.inner_text()
    page.screenshot(path=str(ARTIFACTS / "journey-import.png"), full_page=True)

    # Recommendations with their reasons.
    page.goto("/for-you/ML")
    first = rec_ids(page)
    assert len(first) >= 5 and not set(first) & set(corpus_ids)
    why = page.locator("#recommendations .rec .why").first
    expect(why).to_contain_text("in your tag ML")
    assert page.locator("#foryou-side .weights li").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "journey-foryou.png"), full_page=True)

    # Not interested: the card goes at once (no reload) and the list is recomputed.
    page.evaluate("window.__noReload = true")
    page.locator("#recommendations .rec").first.locator(
        "[data-rec-feedback=dismiss] button"
    ).click()
    expect(page.locator(f'#recommendations .rec[data-paper="{first[0]}"]')).to_have_count(0)
    deadline = time.monotonic() + 15
    while rec_ids(page)[: len(first) - 1] == first[1:] and len(rec_ids(page)) < len(first):
        assert time.monotonic() < deadline, "the list was not recomputed"
        time.sleep(0.1)
    after = rec_ids(page)
    assert first[0] not in after and after != first and len(after) == len(first)
    assert page.evaluate("window.__noReload") is True
    page.reload()
    assert first[0] not in rec_ids(page)
    page.screenshot(path=str(ARTIFACTS / "journey-dismissed.png"), full_page=True)

    # Save a search.
    page.goto("/search?q=graph+neural+network")
    page.fill("form.save-search input[name=name]", "GNN watch")
    page.click("form.save-search button[type=submit]")
    page.wait_for_url(re.compile(r"/library/searches"))
    expect(page.locator("main")).to_contain_text("GNN watch")

    # Comment on a recommended paper (Markdown, rendered safely).
    page.goto(f"/papers/{after[0]}")
    page.fill("#comment-body", "Worth reading: **section 3** <script>alert(1)</script>")
    page.click("form.comment-form button[type=submit]")
    comment = page.locator(".comments .comment").last
    expect(comment.locator(".comment-body strong")).to_have_text("section 3")
    expect(comment.locator(".comment-body")).to_contain_text("<script>alert(1)</script>")
    assert page.locator(".comment-body script").count() == 0
    page.screenshot(path=str(ARTIFACTS / "journey-comment.png"), full_page=True)

    # The phone: signed in separately, same recommendations page.
    phone, mobile, phone_console = new_page(chromium, live.url, **PHONE)
    sign_in_by_mail(live, mobile, EMAIL)
    mobile.goto("/for-you/ML")
    assert first[0] not in rec_ids(mobile) and len(rec_ids(mobile)) >= 5
    mobile.screenshot(path=str(ARTIFACTS / "journey-foryou-phone.png"), full_page=True)
    mobile.goto(f"/papers/{after[0]}#comments")
    mobile.screenshot(path=str(ARTIFACTS / "journey-comment-phone.png"), full_page=True)

    # Sign out everywhere (from the desktop): the phone is signed out too.
    page.goto("/account")
    page.click("#signout-everywhere")
    page.goto("/for-you")
    expect(page.locator("#signin-email")).to_be_visible()
    mobile.goto("/for-you")
    expect(mobile.locator("#signin-email")).to_be_visible()
    mobile.screenshot(path=str(ARTIFACTS / "journey-signed-out-phone.png"), full_page=True)
    assert console.errors == [] and phone_console.errors == []
    desk.close()
    phone.close()
