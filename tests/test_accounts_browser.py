"""Sign-in in headless Chromium (Playwright): ask for a link, open it from the aiosmtpd
inbox, vote as the account, create an API token, sign out everywhere; desktop and phone
screenshots of the sign-in and account pages go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .accounts_support import AccountsServer, accounts_server, mailed_link
from .digest_support import copy_home
from .test_e2e_browser import ARTIFACTS, chromium, new_page  # noqa: F401  (the fixture)

pytestmark = pytest.mark.browser
PAPER = "hep-th/9901001"


@pytest.fixture(scope="module")
def server(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountsServer]:
    home = copy_home(web_home, tmp_path_factory.mktemp("accounts-browser") / "home")
    with accounts_server(home) as live:
        yield live


def sign_in(page, server: AccountsServer, email: str, count: int = 1) -> None:
    page.goto("/signin")
    page.fill("#signin-email", email)
    page.click("form.subscribe-form button[type=submit]")
    page.wait_for_selector("#signin-sent")
    page.goto(mailed_link(server.smtp, email, count))
    page.wait_for_selector("a.nav-account")


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_sign_in_vote_token_sign_out_everywhere(chromium, server, device: str) -> None:  # noqa: F811
    options: dict = {"viewport": {"width": 1280, "height": 900}}
    if device == "phone":
        options = {
            "viewport": {"width": 390, "height": 844},
            "device_scale_factor": 2,
            "is_mobile": True,
            "has_touch": True,
        }
    email = f"{device}@example.org"
    context, page, console = new_page(chromium, server.url, **options)
    page.goto("/signin")
    page.screenshot(path=str(ARTIFACTS / f"signin-{device}.png"))
    sign_in(page, server, email)
    assert page.locator("a.nav-signin").count() == 0
    page.goto(f"/papers/{PAPER}")
    before = int(page.inner_text(".vote-count"))
    page.click(".vote-btn")
    # expect() polls from Playwright's own world: the site's CSP forbids eval in the page
    expect(page.locator(".vote-count").first).to_have_text(str(before + 1))
    page.goto("/account")
    assert email in page.inner_text("#account-email")
    page.fill("#token-name", "laptop script")
    page.click("text=Create token")
    token = page.inner_text("#new-token")
    assert token.startswith("pst_")
    page.screenshot(path=str(ARTIFACTS / f"account-{device}.png"), full_page=True)
    if device == "phone":
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # a second browser of the same reader, then sign out everywhere from the first
    other, other_page, _ = new_page(chromium, server.url)
    sign_in(other_page, server, email, count=2)
    page.goto("/account")
    page.click("#signout-everywhere")
    page.wait_for_selector("a.nav-signin")
    other_page.goto("/")
    assert other_page.locator("a.nav-signin").count() == 1
    assert console.errors == []
    other.close()
    context.close()


def test_an_anonymous_vote_leads_to_sign_in_and_back(chromium, server) -> None:  # noqa: F811
    """Sign-up is open, so anonymous votes are off: the vote button sends the visitor to
    sign in, and the link brings them back to the paper, where the vote then counts."""
    context, page, console = new_page(chromium, server.url)
    page.goto(f"/papers/{PAPER}")
    page.click(".vote-btn")
    page.wait_for_url("**/signin?next=*")
    email = "anon@example.org"
    page.fill("#signin-email", email)
    page.click("form.subscribe-form button[type=submit]")
    page.wait_for_selector("#signin-sent")
    page.goto(mailed_link(server.smtp, email))
    page.wait_for_url(f"**/papers/{PAPER}")
    before = int(page.inner_text(".vote-count"))
    page.click(".vote-btn")
    # expect() polls from Playwright's own world: the site's CSP forbids eval in the page
    expect(page.locator(".vote-count").first).to_have_text(str(before + 1))
    assert [e for e in console.errors if "401" not in e] == []
    context.close()
