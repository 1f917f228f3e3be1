"""Comments: the rules (threads of one level, own edits and deletes, admins hide) on SQLite
and PostgreSQL, the safe Markdown renderer fuzzed with hostile input, and the web forms and
API with real sessions, CSRF and the per-account limit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papersift.accounts.export import export_account
from papersift.comments import service
from papersift.comments.render import ATTRIBUTES, TAGS, render
from papersift.settings import load_settings
from papersift.store import comments as comment_store
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.web.app import create_app

from .accounts_support import api_token, make_account, sign_in

PAPER = "paper-1"


def add_papers(db: Database, *ids: str) -> None:
    now = datetime.now(UTC)
    with db.session() as s:
        paper_store.insert_rows(
            s,
            [
                paper_store.bare_row(p, f"Title of {p}", "An abstract.", source="test", now=now)
                for p in ids
            ],
        )


def test_threads_edits_deletes_and_hiding(db: Database) -> None:
    add_papers(db, PAPER, "paper-2")
    ada = make_account(db, "ada@example.org", name="Ada")
    bob = make_account(db, "bob@example.org")
    admin = make_account(db, "root@example.org", admin=True)
    first = service.post(db, ada, PAPER, "**Nice** result")
    reply = service.post(db, bob, PAPER, "I disagree", reply_to=first)
    # A reply to a reply joins the same thread (one level).
    deeper = service.post(db, ada, PAPER, "Why?", reply_to=reply)
    with pytest.raises(service.CommentError, match="not under this paper"):
        service.post(db, ada, "paper-2", "x", reply_to=first)
    with pytest.raises(service.CommentError, match="empty"):
        service.post(db, ada, PAPER, "   \n ")
    with pytest.raises(service.CommentError, match="at most"):
        service.post(db, ada, PAPER, "x" * 5001)
    with pytest.raises(KeyError):
        service.post(db, ada, "no-such-paper", "hello")
    thread = service.thread(db, PAPER, None)
    assert [c.id for c in thread] == [first]
    assert [r.id for r in thread[0].replies] == [reply, deeper]
    assert thread[0].author == "Ada" and thread[0].replies[0].author == "bob"
    assert "<strong>Nice</strong>" in str(thread[0].html)

    with pytest.raises(service.NotAllowed):
        service.edit(db, bob, first, "vandalized")
    service.edit(db, ada, first, "Nice *result*")
    edited = service.thread(db, PAPER, None)[0]
    assert edited.edited_at is not None and "<em>result</em>" in str(edited.html)

    with pytest.raises(service.NotAllowed):
        service.set_hidden(db, bob, reply, True)
    service.set_hidden(db, admin, reply, True)
    assert [r.id for r in service.thread(db, PAPER, None)[0].replies] == [deeper]
    assert [r.id for r in service.thread(db, PAPER, bob)[0].replies] == [reply, deeper]
    assert service.thread(db, PAPER, admin)[0].replies[0].hidden
    with db.session() as s:
        assert comment_store.counts(s, [PAPER, "paper-2"]) == {PAPER: 2}
    service.set_hidden(db, admin, reply, False)

    # Deleting a comment with replies keeps the thread; without replies the row goes.
    with pytest.raises(service.NotAllowed):
        service.delete(db, bob, first)
    service.delete(db, ada, first)
    kept = service.thread(db, PAPER, None)
    assert kept[0].deleted and kept[0].html == "" and len(kept[0].replies) == 2
    service.delete(db, ada, deeper)
    with db.session() as s:
        assert comment_store.get(s, deeper) is None
        assert comment_store.counts(s, [PAPER]) == {PAPER: 1}

    exported = export_account(db, bob.id)["comments"]
    assert [c["body"] for c in exported] == ["I disagree"]


def test_account_erase_removes_comments_and_replies_to_them(db: Database) -> None:
    from papersift.accounts.export import erase_account

    add_papers(db, PAPER)
    ada = make_account(db, "ada@example.org")
    bob = make_account(db, "bob@example.org")
    top = service.post(db, ada, PAPER, "mine")
    service.post(db, bob, PAPER, "a reply", reply_to=top)
    service.post(db, bob, PAPER, "bob's own")
    with db.session() as s:
        erase_account(s, ada.id)
    assert [c.author for c in service.thread(db, PAPER, None)] == ["bob"]


# -- the renderer under hostile Markdown -------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](data:image/svg+xml,<svg onload=alert(1)>)",
    '[x](https://ok.example "title\\" onmouseover=\\"alert(1))',
    '<a href="javascript:alert(1)">x</a>',
    "<iframe src=https://evil.example></iframe>",
    "<style>body{display:none}</style>",
    "> > > <svg/onload=alert(1)>",
    "`<script>` ```\n<script>\n```",
    '<https://ok.example/a"onclick="x>',
    "[a](vbscript:msgbox) [b](file:///etc/passwd)",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<!-- <script>alert(1)</script> -->",
    "<form action=https://evil.example><input name=x></form>",
    "*<b onclick=1>bold</b>*",
]


class _Audit(HTMLParser):
    """Collects every tag and attribute of the rendered HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((tag, k, v or "") for k, v in attrs)


def assert_inert(html: str) -> None:
    audit = _Audit()
    audit.feed(html)
    audit.close()
    assert set(audit.tags) <= TAGS, audit.tags
    for tag, name, value in audit.attrs:
        assert name in ATTRIBUTES.get(tag, set()) | {"rel"}, (tag, name)
        assert not name.startswith("on")
        if name == "href":
            scheme = re.match(r"\s*([a-zA-Z][a-zA-Z0-9+.\-]*):", value)
            assert scheme is None or scheme.group(1).lower() in {"http", "https", "mailto"}, value
        if name == "rel":
            assert value.split() == ["nofollow", "ugc", "noopener"]
    assert audit.tags.count("a") == sum(1 for t, n, _ in audit.attrs if t == "a" and n == "rel")
    lowered = html.lower()
    assert "<script" not in lowered and "<iframe" not in lowered and "<style" not in lowered


@pytest.mark.parametrize("markdown", HOSTILE)
def test_hostile_markdown_renders_inert(markdown: str) -> None:
    assert_inert(str(render(markdown)))


def test_markdown_keeps_what_readers_write() -> None:
    html = str(render("# Title\n\n**b** _i_ ~~s~~ `c` [link](https://arxiv.org/abs/1)\n\n> q"))
    assert "<h3>Title</h3>" in html and "<strong>b</strong>" in html and "<s>s</s>" in html
    assert '<a href="https://arxiv.org/abs/1" rel="nofollow ugc noopener">link</a>' in html
    assert "<blockquote>" in html and "<code>c</code>" in html
    assert "&lt;script&gt;" in str(render("<script>x</script>"))  # shown as text


_pieces = st.sampled_from(
    [
        "<",
        ">",
        '"',
        "'",
        "`",
        "[",
        "](",
        ")",
        "!",
        "*",
        "_",
        "~~",
        "> ",
        "\n",
        "\n\n",
        "&#",
        "javascript:",
        "JAVASCRIPT:",
        "data:",
        "vbscript:",
        "\x00",
        "\t",
        " ",
        "onerror=",
        "onload=",
        "<script>",
        "</script>",
        "<img src=x ",
        "<a href=",
        "<svg ",
        "style=",
        "https://ok.example/",
        "alert(1)",
        "&quot;",
        "%0a",
        "\\",
        "<!--",
        "-->",
        "```",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_pieces, st.text(max_size=6)), max_size=40).map("".join))
def test_fuzzed_markdown_never_renders_executable_content(markdown: str) -> None:
    assert_inert(str(render(markdown)))


# -- the web forms and the API -----------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Database]]:
    home = tmp_path / "home"
    settings_ = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    db = Database(settings_.db_url)
    add_papers(db, PAPER)
    with TestClient(create_app(settings_, db=db, warm_search=False)) as c:
        yield c, db
    db.dispose()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no form on the page"
    return found.group(1)


def test_comment_forms_need_sign_in_csrf_and_respect_the_limit(
    client: tuple[TestClient, Database],
) -> None:
    c, db = client
    page = c.get(f"/papers/{PAPER}")
    assert page.status_code == 200 and "Sign in</a> to comment" in page.text
    anonymous = c.post("/comments", data={"paper_id": PAPER, "body": "hi"}, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/signin")

    ada = make_account(db, "ada@example.org", name="Ada")
    sign_in(c, db, ada)
    token = _csrf(c.get(f"/papers/{PAPER}").text)
    forged = c.post("/comments", data={"paper_id": PAPER, "body": "hi"}, follow_redirects=False)
    assert forged.status_code == 403
    posted = c.post(
        "/comments",
        data={"csrf_token": token, "paper_id": PAPER, "body": "See [this](javascript:x) <b>x</b>"},
        follow_redirects=False,
    )
    assert posted.status_code == 303 and "#comment-" in posted.headers["location"]
    shown = c.get(f"/papers/{PAPER}").text
    assert 'Comments <span class="muted">(1)</span>' in shown and "&lt;b&gt;x&lt;/b&gt;" in shown
    assert 'href="javascript' not in shown
    cid = int(posted.headers["location"].rsplit("-", 1)[1])
    count = 'class="quiet comment-count" href="/papers/paper-1#comments">1 comment<'
    assert count in c.get("/").text
    c.post(f"/comments/{cid}/edit", data={"csrf_token": token, "body": "Better **now**"})
    assert "<strong>now</strong>" in c.get(f"/papers/{PAPER}").text
    empty = c.post("/comments", data={"csrf_token": token, "paper_id": PAPER, "body": " "})
    assert empty.status_code == 400 and "empty" in empty.text

    # Five at once, then the account waits (the bucket is per account, not per browser).
    codes = [
        c.post(
            "/comments",
            data={"csrf_token": token, "paper_id": PAPER, "body": f"n{i}"},
            follow_redirects=False,
        ).status_code
        for i in range(6)
    ]
    assert codes[:3] == [303, 303, 303] and codes[-1] == 429

    # Another reader cannot edit or delete it; an admin hides it.
    bob = make_account(db, "bob@example.org")
    sign_in(c, db, bob)
    bob_token = _csrf(c.get(f"/papers/{PAPER}").text)
    assert c.post(f"/comments/{cid}/delete", data={"csrf_token": bob_token}).status_code == 403
    root = make_account(db, "root@example.org", admin=True)
    sign_in(c, db, root)
    root_token = _csrf(c.get(f"/papers/{PAPER}").text)
    c.post(f"/comments/{cid}/hide", data={"csrf_token": root_token})
    c.cookies.clear()
    assert "<strong>now</strong>" not in c.get(f"/papers/{PAPER}").text


def test_comments_api_with_a_token(client: tuple[TestClient, Database]) -> None:
    c, db = client
    ada = make_account(db, "ada@example.org")
    auth = {"Authorization": f"Bearer {api_token(db, ada)}"}
    assert c.post("/api/v1/comments", json={"paper_id": PAPER, "body": "x"}).status_code == 401
    made = c.post("/api/v1/comments", json={"paper_id": PAPER, "body": "Hi *there*"}, headers=auth)
    assert made.status_code == 201
    cid = made.json()["id"]
    reply = c.post(
        "/api/v1/comments",
        json={"paper_id": PAPER, "body": "me too", "reply_to": cid},
        headers=auth,
    )
    assert reply.status_code == 201
    listed = c.get("/api/v1/comments", params={"paper": PAPER}).json()["comments"]
    assert listed[0]["html"].startswith("<p>Hi <em>there</em>") and len(listed[0]["replies"]) == 1
    missing = c.post("/api/v1/comments", json={"paper_id": "nope", "body": "x"}, headers=auth)
    assert missing.status_code == 404
    patched = c.patch(f"/api/v1/comments/{cid}", json={"body": "changed"}, headers=auth)
    assert patched.status_code == 200
    bob = {"Authorization": f"Bearer {api_token(db, make_account(db, 'bob@example.org'))}"}
    assert c.delete(f"/api/v1/comments/{cid}", headers=bob).status_code == 403
    assert c.delete(f"/api/v1/comments/{cid}", headers=auth).status_code == 204


def test_the_posting_limit_is_the_deployments(tmp_path: Path) -> None:
    """A lab that wants tighter limits sets `comment_burst` / `comments_per_hour`."""
    home = tmp_path / "home"
    settings_ = load_settings(home, f"sqlite:///{home / 'papersift.db'}", comment_burst=2)
    db = Database(settings_.db_url)
    add_papers(db, PAPER)
    with TestClient(create_app(settings_, db=db, warm_search=False)) as c:
        sign_in(c, db, make_account(db, "ada@example.org"))
        token = _csrf(c.get(f"/papers/{PAPER}").text)
        codes = [
            c.post(
                "/comments",
                data={"csrf_token": token, "paper_id": PAPER, "body": f"n{i}"},
                follow_redirects=False,
            )
            for i in range(3)
        ]
        assert [r.status_code for r in codes] == [303, 303, 429]
        assert int(codes[-1].headers["Retry-After"]) > 60  # 30 an hour: one every 2 minutes
    db.dispose()
