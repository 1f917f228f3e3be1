"""``papersift users`` (the real typer app, in process) on a private home, with a real
SMTP server on loopback for invitations, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from papersift.cli import app
from papersift.store import users as user_store
from papersift.store.db import Database

from .digest_support import SmtpCapture, links_in


def test_users_add_invite_list_export_remove(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERSIFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PAPERSIFT_SIGNUP_POLICY", "invite")
    monkeypatch.setenv("PAPERSIFT_BASE_URL", "http://127.0.0.1:8000")

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(app, ["--db", db.url, "users", *args], input=input)

    with SmtpCapture() as smtp:
        monkeypatch.setenv("PAPERSIFT_SMTP_URL", smtp.url)
        first = run("add", "Ada@Example.org")
        assert first.exit_code == 0 and "admin" in first.output  # the first account
        second = run("add", "bob@example.org")
        assert second.exit_code == 0 and "reader" in second.output
        assert run("add", "bob@example.org").exit_code == 1  # exists
        assert "is now an admin" in run("add", "bob@example.org", "--admin").output
        bad = run("add", "not an address")
        assert bad.exit_code == 2 and "error" in bad.output
        invited = run("invite", "grace@example.org")
        assert invited.exit_code == 0 and "mailed" in invited.output, invited.output
        [mail] = smtp.wait_for(1)
        assert mail.rcpt_tos == ["grace@example.org"]
        assert any("/signin?email=grace%40example.org" in u for u in links_in(mail.message))
        again = run("invite", "grace@example.org")
        assert "already" in again.output and len(smtp.messages) == 1
        assert run("invite", "ada@example.org").output.count("already") == 1
    listed = json.loads(run("list", "--json").output.strip().splitlines()[-1])
    assert [u["email"] for u in listed["users"]] == ["ada@example.org", "bob@example.org"]
    assert [u["is_admin"] for u in listed["users"]] == [True, True]
    assert [i["email"] for i in listed["invites"]] == ["grace@example.org"]
    exported = json.loads(run("export", "ada@example.org").output)
    assert exported["account"]["email"] == "ada@example.org"
    assert run("export", "nobody@example.org").exit_code == 1
    assert run("remove", "bob@example.org", input="n\n").exit_code != 0
    with db.session() as s:
        assert user_store.user_by_email(s, "bob@example.org") is not None
    assert run("remove", "bob@example.org", "--yes").exit_code == 0
    assert "bob@example.org" not in run("list").output
    with db.session() as s:
        assert user_store.user_by_email(s, "bob@example.org") is None
        assert user_store.invite_for(s, "grace@example.org") is not None
