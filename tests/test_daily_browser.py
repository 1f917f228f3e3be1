"""The daily pages in headless Chromium (Debian's build, driven by Playwright): step through
days with previous/next and the date picker, the week and month pages, a card's upvote
without a reload, the paper page's sidebar, an author page; desktop and phone. The
screenshots go to test-artifacts/daily/ (printed) for a person to look at."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import serve_in_thread
from .test_daily_web import app_for, make_home
from .test_e2e_browser import ARGS, ARTIFACTS, CHROMIUM, new_page

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "daily"
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is required in CI (make browser-deps installs it)")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def daily_server(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = make_home(web_home, tmp_path_factory.mktemp("daily-browser") / "home")
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\ndaily page screenshots: {SHOTS}")
    with serve_in_thread(app_for(home)) as url:
        yield url


def shot(page, name: str, full: bool = True) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


def no_sideways_scroll(page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_step_through_days_weeks_and_months_on_desktop(chromium_browser, daily_server: str) -> None:
    context, page, console = new_page(chromium_browser, daily_server, **DESKTOP)
    page.goto("/papers/date/2026-03-04")
    expect(page.locator("#period-title")).to_have_text("Wednesday, 4 March 2026")
    assert page.locator("#daily .card").count() == 2
    shot(page, "day-desktop")

    page.click("#prev-period")  # 3 March has no papers: straight to the 2nd
    page.wait_for_url(re.compile(r"/papers/date/2026-03-02$"))
    assert page.locator("#daily .card").count() == 3
    page.click("#prev-period")
    page.wait_for_url(re.compile(r"/papers/date/2026-02-27$"))
    page.click("#next-period")
    page.click("#next-period")
    page.wait_for_url(re.compile(r"/papers/date/2026-03-04$"))
    page.click("#next-period")
    page.wait_for_url(re.compile(r"/papers/date/2026-03-09$"))

    # The date picker is a plain GET form.
    page.fill("#pick-date", "2026-03-02")
    page.click(".date-pick button")
    page.wait_for_url(re.compile(r"/papers/date/2026-03-02$"))

    # A card's upvote counts in place (the page's script posts the same form).
    card = page.locator("#daily .card").first
    card.locator(".vote-btn").click()
    expect(card.locator(".vote-count")).to_have_text("1")
    assert card.locator(".vote-btn").get_attribute("aria-pressed") == "true"
    page.reload()
    expect(page.locator("#daily .card").first.locator(".vote-count")).to_have_text("1")

    page.click(".tabs >> text=Week")
    page.wait_for_url(re.compile(r"/papers/week/2026-W10$"))
    assert page.locator("#daily .card").count() == 5
    shot(page, "week-desktop")
    page.click("#next-period")
    page.wait_for_url(re.compile(r"/papers/week/2026-W11$"))
    page.goto("/papers/month/2026-03")
    page.click('.calendar a[href="/papers/date/2026-03-04"]')
    page.wait_for_url(re.compile(r"/papers/date/2026-03-04$"))
    page.goto("/papers/month/2026-03")
    shot(page, "month-desktop")

    page.goto("/papers/2603.00003")
    side = page.locator(".paper-side")
    assert side.is_visible()
    box, body = side.bounding_box(), page.locator(".paper-body").bounding_box()
    assert box and body and box["x"] > body["x"] + body["width"]  # the right third
    for label in ("arXiv page", "PDF", "HTML", "DOI", "Code"):
        assert side.locator(f"a.btn >> text={label}").count() == 1, label
    shot(page, "paper-desktop")
    page.click(".authors >> text=Ada Lovelace")
    page.wait_for_url(re.compile(r"/authors/Ada%20Lovelace$"))
    assert page.locator("#people-papers .card").count() >= 6
    shot(page, "author-desktop", full=False)
    page.goto("/papers/date/2026-03-33")
    assert "not a date in the calendar" in page.inner_text("main")
    shot(page, "bad-date-desktop", full=False)
    assert console.errors == [] or all("400" in e for e in console.errors), console.errors
    context.close()


def test_days_on_a_phone(chromium_browser, daily_server: str) -> None:
    context, page, console = new_page(chromium_browser, daily_server, **PHONE)
    page.goto("/papers/date/2026-03-02")
    no_sideways_scroll(page, 390)
    assert page.locator(".top-nav >> text=Subscribe").is_visible()
    shot(page, "day-phone", full=False)
    page.click("#next-period")
    page.wait_for_url(re.compile(r"/papers/date/2026-03-04$"))
    no_sideways_scroll(page, 390)
    page.goto("/papers/month/2026-03")
    no_sideways_scroll(page, 390)
    shot(page, "month-phone")
    page.goto("/papers/2603.00003")
    no_sideways_scroll(page, 390)
    # On a phone the links and actions come right after the title, before the abstract.
    side = page.locator(".paper-side").bounding_box()
    abstract = page.locator(".abstract").bounding_box()
    assert side and abstract and side["y"] < abstract["y"]
    shot(page, "paper-phone", full=False)
    page.goto("/")
    no_sideways_scroll(page, 390)
    shot(page, "home-phone", full=False)
    page.click(".top-nav >> text=Subscribe")
    page.wait_for_url(re.compile(r"/subscribe$"))
    assert console.errors == []
    context.close()
    context, page, console = new_page(chromium_browser, daily_server, **PHONE, color_scheme="dark")
    page.goto("/papers/week/2026-W10")
    no_sideways_scroll(page, 390)
    shot(page, "week-phone-dark", full=False)
    assert console.errors == []
    context.close()
