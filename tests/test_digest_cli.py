"""The digest CLI: subscribers add/confirm/list/remove, digest send/preview, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from papersift.cli import app
from papersift.config import load_settings
from papersift.digest import tokens
from papersift.store.db import Database

from .digest_support import SmtpCapture, copy_home, free_port


@pytest.fixture
def smtp():
    with SmtpCapture() as server:
        yield server


@pytest.fixture
def home(
    seeded_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp: SmtpCapture
) -> Path:
    path = copy_home(seeded_home, tmp_path / "home")
    monkeypatch.setenv("PAPERSIFT_HOME", str(path))
    monkeypatch.delenv("PAPERSIFT_DB", raising=False)
    monkeypatch.setenv("PAPERSIFT_SMTP_URL", smtp.url)
    monkeypatch.setenv("PAPERSIFT_BASE_URL", "https://papers.example.org")
    return path


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_add_mails_a_link_that_confirm_accepts(home: Path, smtp: SmtpCapture) -> None:
    result = cli(
        "subscribers",
        "add",
        "Ada@Example.org",
        "--topic",
        "LoRA",
        "--topic",
        "diffusion",
        "--collection",
        "000_e3b0215ea9dd5350",
        "--max",
        "5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = last_json(result.stdout)
    assert data["action"] == "created" and data["mailed"] is True
    assert data["subscriber"]["topics"] == ["LoRA", "diffusion"]
    assert data["subscriber"]["status"] == "pending"
    mail = smtp.wait_for(1)[0].message
    text = mail.get_body(("plain",)).get_content()
    assert data["confirm_url"] in text
    assert data["confirm_url"].startswith("https://papers.example.org/subscriptions/confirm?")
    ok = cli("subscribers", "confirm", data["confirm_url"])
    assert ok.exit_code == 0 and "confirmed" in ok.stdout
    again = cli("subscribers", "confirm", data["confirm_url"].split("token=")[1])
    assert again.exit_code == 0 and "already confirmed" in again.stdout
    listed = last_json(cli("subscribers", "list", "--json").stdout)["subscribers"]
    assert [(s["email"], s["status"]) for s in listed] == [("ada@example.org", "confirmed")]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["evil@example.org\r\nBcc: victim@example.org"], "control characters"),
        (["evil@example.org\n"], "control characters"),
        (["evil@example.org", "--topic", "a\r\nBcc: victim@example.org"], "control characters"),
        (["evil@example.org", "--topic", "x" * 300], "longer than"),
        (["no-at-sign"], "exactly one @"),
        (["a@example.org", "--frequency", "hourly"], "frequency"),
        (["a@example.org", "--max", "0"], "max papers"),
        (["a@example.org", "--collection", "nope"], "unknown collection"),
    ],
)
def test_add_rejects_bad_input(
    home: Path, smtp: SmtpCapture, args: list[str], fragment: str
) -> None:
    result = cli("subscribers", "add", *args)
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert last_json(cli("subscribers", "list", "--json").stdout)["subscribers"] == []
    assert smtp.messages == []


def test_confirm_rejects_forged_and_expired(home: Path) -> None:
    result = cli("subscribers", "add", "ada@example.org", "--no-mail", "--json")
    link = last_json(result.stdout)["confirm_url"]
    forged = cli("subscribers", "confirm", link[:-4] + "AAAA")
    assert forged.exit_code == 2 and "not valid" in forged.stderr
    settings = load_settings(home)
    from datetime import UTC, datetime, timedelta

    old = tokens.make_token(
        settings, tokens.CONFIRM, 1, "ada@example.org", now=datetime.now(UTC) - timedelta(days=10)
    )
    expired = cli("subscribers", "confirm", old)
    assert expired.exit_code == 2 and "expired" in expired.stderr
    status = last_json(cli("subscribers", "list", "--json").stdout)["subscribers"][0]["status"]
    assert status == "pending"


def test_add_with_smtp_down_still_records_and_prints_the_link(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERSIFT_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    result = cli("subscribers", "add", "ada@example.org")
    assert result.exit_code == 1
    assert "confirmation link: https://papers.example.org/subscriptions/confirm" in result.stdout
    assert "could not be sent" in result.stderr


def test_send_preview_remove(home: Path, smtp: SmtpCapture, tmp_path: Path) -> None:
    link = last_json(
        cli("subscribers", "add", "ada@example.org", "--max", "3", "--no-mail", "--json").stdout
    )["confirm_url"]
    cli("subscribers", "add", "pending@example.org", "--no-mail")
    cli("subscribers", "confirm", link)

    html = tmp_path / "digest.html"
    preview = cli("digest", "preview", "ada@example.org", "--html", str(html))
    assert preview.exit_code == 0, preview.output
    assert preview.stdout.startswith("Subject: papersift daily:")
    assert preview.stdout.count("https://papers.example.org/papers/") == 3
    assert "color-scheme" in html.read_text()
    pending = cli("digest", "preview", "pending@example.org")
    assert "a real run sends nothing" in pending.stderr
    assert cli("digest", "preview", "nobody@example.org").exit_code == 1

    dry = cli("digest", "send", "--dry-run", "--json")
    assert dry.exit_code == 0 and last_json(dry.stdout)["counts"] == {"would-send": 1}
    assert smtp.messages == []
    sent = cli("digest", "send", "--json", "--quiet")
    assert sent.exit_code == 0, sent.output
    assert last_json(sent.stdout)["counts"] == {"sent": 1}
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.org"]]
    human = cli("digest", "send")
    assert human.exit_code == 0 and "1 done" in human.stdout

    bad_period = cli("digest", "send", "--period", "yesterday")
    assert bad_period.exit_code == 2 and "--period" in bad_period.stderr

    unsub = str(smtp.messages[0].message["List-Unsubscribe"]).split(",")[0].strip("<> ")
    removed = cli("subscribers", "remove", unsub)
    assert removed.exit_code == 0 and "ada@example.org: removed" in removed.stdout
    assert cli("subscribers", "remove", "pending@example.org").exit_code == 0
    assert cli("subscribers", "remove", "pending@example.org").exit_code == 1
    assert last_json(cli("subscribers", "list", "--json").stdout)["subscribers"] == []
    db = Database(load_settings(home).db_url)
    with db.session() as s:
        from sqlalchemy import func, select

        from papersift.store.schema import DigestLedgerRow, SentPaperRow

        assert s.scalar(select(func.count()).select_from(DigestLedgerRow)) == 0
        assert s.scalar(select(func.count()).select_from(SentPaperRow)) == 0
    db.dispose()


def test_send_with_smtp_down_exits_1_and_reports(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = last_json(cli("subscribers", "add", "ada@example.org", "--no-mail", "--json").stdout)[
        "confirm_url"
    ]
    cli("subscribers", "confirm", link)
    monkeypatch.setenv("PAPERSIFT_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    result = cli("digest", "send", "--retries", "1", "--backoff", "0.01")
    assert result.exit_code == 1
    assert "cannot connect" in result.stderr and "1 failed" in result.stdout
    monkeypatch.setenv("PAPERSIFT_SMTP_URL", "http://nope")
    bad = cli("digest", "send")
    assert bad.exit_code == 2 and "smtp://" in bad.stderr


def test_send_help_documents_cron_and_systemd(home: Path) -> None:
    text = CliRunner().invoke(app, ["digest", "send", "--help"], env={"COLUMNS": "120"}).stdout
    assert "0 7 * * *" in text and "OnCalendar=" in text and "--dry-run" in text
