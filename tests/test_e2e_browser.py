"""End to end in headless Chromium (Debian's build, driven by Playwright): search from the
home page, open a paper, upvote without a reload, see trending change, copy BibTeX; phone
and dark-mode renderings. Screenshots go to test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is required in CI (make browser-deps installs it)")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Console:
    """Console errors and CSP violations seen by a page: a clean page has none."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


def new_page(chromium, live_server: str, **options):
    context = chromium.new_context(base_url=live_server, **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    return context, page, Console(page)


def trending_rank(page, paper_href: str) -> int | None:
    page.goto("/trending?window=day")
    hrefs = page.eval_on_selector_all(
        "#trending .card-title a", "els => els.map(e => e.getAttribute('href'))"
    )
    return hrefs.index(paper_href) + 1 if paper_href in hrefs else None


def test_search_open_upvote_trending(chromium, live_server: str) -> None:
    context, page, console = new_page(
        chromium, live_server, viewport={"width": 1280, "height": 900}
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    page.goto("/")
    assert page.title().startswith("Find the right paper")
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

    page.fill("#q", "ternary binary transformer")
    page.press("#q", "Enter")
    page.wait_for_url(re.compile(r"/search\?q=ternary"))
    assert page.input_value("#q") == "ternary binary transformer"
    assert page.locator("#results .card").count() >= 1
    assert page.locator("#results mark").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)

    first = page.locator("#results .card-title a").nth(1)  # not the top one: less likely voted
    href = first.get_attribute("href")
    rank_before = trending_rank(page, href)
    page.goto("/search?q=ternary+binary+transformer")
    page.locator(f'#results .card-title a[href="{href}"]').click()
    page.wait_for_url(re.compile(re.escape(href) + "$"))
    count = page.locator(".paper-side .vote-count")
    before = int(count.inner_text())
    page.evaluate("window.__noReload = true")
    page.click(".paper-side .vote-btn")
    # Locator assertions poll from Playwright's own world; a string predicate would be
    # eval'ed in the page and (rightly) refused by our CSP.
    expect(page.locator(".paper-side .vote-count")).to_have_text(str(before + 1))
    assert page.evaluate("window.__noReload") is True  # updated in place, no navigation
    assert page.get_attribute(".paper-side .vote-btn", "aria-pressed") == "true"

    page.click("[data-copy]")
    expect(page.locator("[data-copy]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()").startswith("@")
    page.screenshot(path=str(ARTIFACTS / "paper.png"), full_page=True)

    rank_after = trending_rank(page, href)
    assert rank_after is not None and (rank_before is None or rank_after < rank_before)
    page.screenshot(path=str(ARTIFACTS / "trending.png"), full_page=True)

    # Undo from the paper page, again without a reload.
    page.goto(href)
    page.click(".paper-side .vote-btn")
    expect(page.locator(".paper-side .vote-count")).to_have_text(str(before))
    assert console.errors == []
    context.close()


def test_phone_and_dark_mode(chromium, live_server: str) -> None:
    context, page, console = new_page(
        chromium,
        live_server,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
    )
    page.goto("/")
    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "home-phone-dark.png"))
    page.goto("/papers/phostile00001")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("script:not([src])").count() == 0
    assert "<script>alert('title')</script>" in page.inner_text("h1")  # shown as text
    page.screenshot(path=str(ARTIFACTS / "paper-phone-dark.png"), full_page=True)
    page.goto("/search?q=flash+attention&mode=lexical")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "search-phone-dark.png"))
    assert console.errors == []
    context.close()


def test_api_docs_render_offline(chromium, live_server: str) -> None:
    context, page, console = new_page(
        chromium, live_server, viewport={"width": 1280, "height": 900}
    )
    outside: list[str] = []
    page.on(
        "request", lambda r: outside.append(r.url) if not r.url.startswith(live_server) else None
    )
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert page.locator(".swagger-ui .opblock").count() >= 7
    page.screenshot(path=str(ARTIFACTS / "docs.png"))
    assert outside == [] and console.errors == []
    context.close()
