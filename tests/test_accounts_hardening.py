"""The vote-stuffing attacks of the hardening issue, replayed against `papersift serve
--workers 2` on a deployment with accounts (open sign-up, real aiosmtpd): cookieless and
fresh-cookie votes, spoofed X-Forwarded-For, one account voting from many browsers, a
forged API token, and a farm of throw-away accounts made through the sign-in form. None
moves trending."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from sqlalchemy import func, select

from papersift.store.db import Database
from papersift.store.schema import VoteRow

from .accounts_support import api_token, make_account
from .digest_support import SmtpCapture, links_in
from .test_hardening_web import copy_of, from_address, seed_votes, served, trending_ids


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[html.find("<main") :][:600]
    return match.group(1)


def votes_on(db: Database, paper: str) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).where(VoteRow.paper_id == paper)) or 0


def test_vote_stuffing_cannot_move_trending_with_accounts(web_home: Path, tmp_path: Path) -> None:
    home = copy_of(web_home, tmp_path / "home")
    db = Database(f"sqlite:///{home / 'papersift.db'}")
    supported, target = seed_votes(db)
    honest = make_account(db, "honest@example.org")
    token = api_token(db, honest)
    no_reuse = httpx.Limits(max_keepalive_connections=0)  # spread over both workers
    with SmtpCapture() as smtp:
        env = {
            "PAPERSIFT_SIGNUP_POLICY": "open",
            "PAPERSIFT_SMTP_URL": smtp.url,
            "PAPERSIFT_SIGNUP_MAILS_PER_HOUR": "20",  # a domain gets a quarter: 5
        }
        with served(home, workers=2, **env) as base:
            before = trending_ids(base)
            assert before == supported

            # 1. cookieless votes, and 2. fresh cookies with spoofed forwarding headers:
            # anonymous votes are off once sign-up is open.
            with httpx.Client(base_url=base, timeout=30, limits=no_reuse) as bot:
                cookieless = [
                    bot.post(f"/api/v1/papers/{target}/upvote").status_code for _ in range(60)
                ]
            assert set(cookieless) <= {401, 403}, cookieless
            for n in range(30):
                with httpx.Client(base_url=base, timeout=30, limits=no_reuse) as voter:
                    page = voter.get(f"/papers/{target}")
                    spoof = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
                    api = voter.post(f"/api/v1/papers/{target}/upvote", headers=spoof)
                    form = voter.post(
                        f"/papers/{target}/upvote", data={"csrf_token": csrf_from(page.text)}
                    )
                    assert api.status_code == 401 and form.status_code == 401, (api, form)
            assert votes_on(db, target) == 0

            # 3. a forged token is refused; one real account from many browsers is one vote.
            forged = httpx.post(
                f"{base}/api/v1/papers/{target}/upvote",
                headers={"Authorization": "Bearer pst_forged"},
                timeout=30,
            )
            assert forged.status_code == 401
            for n in range(20):
                with from_address(f"127.0.0.{n + 2}", base_url=base, limits=no_reuse) as c:
                    r = c.post(
                        f"/api/v1/papers/{target}/upvote",
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert r.status_code in (200, 429), r.text
            assert votes_on(db, target) == 1

            # 4. a farm of accounts at one domain, each from its own address: the domain's
            # share of sign-in mail caps it.
            made = 0
            for n in range(12):
                with from_address(f"127.0.1.{n + 2}", base_url=base) as farm:
                    page = farm.get("/signin")
                    r = farm.post(
                        "/signin",
                        data={"csrf_token": csrf_from(page.text), "email": f"bot{n}@evil.example"},
                    )
                    assert r.status_code in (200, 429)
                    if r.status_code != 200:
                        continue
                    mails = [m for m in smtp.messages if f"bot{n}@evil.example" in m.rcpt_tos]
                    if not mails:
                        smtp.wait_for(len(smtp.messages) + 1, timeout=10)
                        mails = [m for m in smtp.messages if f"bot{n}@evil.example" in m.rcpt_tos]
                    [link] = [u for u in links_in(mails[0].message) if "/signin/link" in u]
                    # the link names base_url (not this test's port): follow its path
                    path = link[link.index("/signin/link") :]
                    assert farm.get(path).status_code == 303
                    made += 1
                    page = farm.get(f"/papers/{target}")
                    farm.post(f"/papers/{target}/upvote", data={"csrf_token": csrf_from(page.text)})
            assert 1 <= made <= 5, made
            assert votes_on(db, target) <= 1 + made
            assert trending_ids(base) == before
    db.dispose()
