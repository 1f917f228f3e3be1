"""The digest CLI: subscribers add/confirm/list/remove, digest send/preview, bad input."""

from __future__ import annotations

import itertools
import json
import time
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from papersift.cli import app
from papersift.digest import tokens
from papersift.settings import load_settings
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


def test_add_mails_a_link_that_confirm_accepts(
    home: Path, smtp: SmtpCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every token is made a second after the last (tokens carry their second), so a
    # printed link that was made apart from the mailed one shows up as a different link
    seconds = itertools.count(int(time.time()) - 600)
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(time=lambda: float(next(seconds))))
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


def test_remove_by_manage_link_and_refusing_other_links(home: Path) -> None:
    sub = last_json(cli("subscribers", "add", "ada@example.org", "--no-mail", "--json").stdout)
    confirm = sub["confirm_url"]
    settings = load_settings(home)
    manage = tokens.manage_url(settings, sub["subscriber"]["id"], "ada@example.org")
    for wrong in (confirm, manage[:-4] + "AAAA", "https://papers.example.org/unsubscribe?token="):
        refused = cli("subscribers", "remove", wrong)
        assert refused.exit_code == 2 and "link" in refused.stderr, refused.output
    assert len(last_json(cli("subscribers", "list", "--json").stdout)["subscribers"]) == 1
    removed = cli("subscribers", "remove", manage)
    assert removed.exit_code == 0 and "ada@example.org: removed" in removed.stdout
    assert last_json(cli("subscribers", "list", "--json").stdout)["subscribers"] == []


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


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rate", "-1"], "rate must be >= 0"),
        (["--pause-after", "0"], "pause after must be >= 1"),
        (["--only", "not-an-address"], "exactly one @"),
    ],
    ids=["rate", "pause-after", "only"],
)
def test_send_refuses_bad_options_with_exit_2(
    home: Path, smtp: SmtpCapture, args: list[str], says: str
) -> None:
    link = last_json(cli("subscribers", "add", "ada@example.org", "--no-mail", "--json").stdout)[
        "confirm_url"
    ]
    cli("subscribers", "confirm", link)
    result = CliRunner().invoke(app, ["digest", "send", *args])
    assert result.exit_code == 2 and says in result.stderr, result.output
    assert "Traceback" not in result.output and smtp.messages == []
    assert "1 sent" in cli("digest", "send").stdout  # nothing was claimed by the refused run


def test_send_help_documents_cron_and_systemd(home: Path) -> None:
    text = CliRunner().invoke(app, ["digest", "send", "--help"], env={"COLUMNS": "120"}).stdout
    assert "0 7 * * *" in text and "OnCalendar=" in text and "--dry-run" in text


# -- unsubscribe by mail -------------------------------------------------------------------------


def _subscribed_and_mailed(smtp: SmtpCapture) -> tuple[str, str]:
    """Ada confirmed and sent one digest; (its https unsubscribe link, its mailto)."""
    link = last_json(
        cli("subscribers", "add", "ada@example.org", "--max", "3", "--no-mail", "--json").stdout
    )["confirm_url"]
    assert cli("subscribers", "confirm", link).exit_code == 0
    sent = cli("digest", "send", "--quiet")
    assert sent.exit_code == 0, sent.output
    header = str(smtp.messages[-1].message["List-Unsubscribe"])
    targets = [t.strip().strip("<>") for t in header.split(",")]
    https = next(t for t in targets if t.startswith("https:"))
    mailto = next((t for t in targets if t.startswith("mailto:")), "")
    return https, mailto


def _request_for(mailto: str, sender: str = "ada@example.org") -> bytes:
    """The message a mail client composes from a mailto: URL (RFC 6068)."""
    from email.message import EmailMessage
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(mailto)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = unquote(parts.path)
    msg["Subject"] = parse_qs(parts.query)["subject"][0]
    msg.set_content("")
    return bytes(msg)


def _status(email: str) -> str:
    listed = last_json(cli("subscribers", "list", "--json").stdout)["subscribers"]
    return next(s["status"] for s in listed if s["email"] == email)


def unsubscribe_mail(raw: bytes, *extra: str):
    return CliRunner().invoke(app, ["subscribers", "unsubscribe-mail", *extra], input=raw)


def test_digests_offer_a_mailto_only_to_an_address_that_is_read(
    home: Path, smtp: SmtpCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _https, mailto = _subscribed_and_mailed(smtp)
    assert mailto == ""  # no PAPERSIFT_UNSUBSCRIBE_MAILTO: a mailto would go unread
    monkeypatch.setenv("PAPERSIFT_UNSUBSCRIBE_MAILTO", "Unsubscribe <leave@papers.example.org>")
    assert cli("digest", "preview", "ada@example.org").exit_code == 0
    monkeypatch.setenv("PAPERSIFT_UNSUBSCRIBE_MAILTO", "not an address\r\nBcc: x@y")
    for command in (("digest", "send"), ("digest", "preview", "ada@example.org")):
        bad = CliRunner().invoke(app, list(command))
        assert bad.exit_code == 2 and "PAPERSIFT_UNSUBSCRIBE_MAILTO" in bad.stderr, bad.output
        assert bad.exception is None or isinstance(bad.exception, SystemExit)
    monkeypatch.setenv("PAPERSIFT_UNSUBSCRIBE_MAILTO", "leave@papers.example.org")
    monkeypatch.setenv("PAPERSIFT_MAIL_FROM", "bad")
    bad_from = CliRunner().invoke(app, ["digest", "preview", "ada@example.org"])
    assert bad_from.exit_code == 2 and "PAPERSIFT_MAIL_FROM" in bad_from.stderr


def test_the_mailto_of_a_digest_unsubscribes_when_piped_in(
    home: Path, smtp: SmtpCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERSIFT_UNSUBSCRIBE_MAILTO", "leave@papers.example.org")
    _https, mailto = _subscribed_and_mailed(smtp)
    assert mailto.startswith("mailto:leave@papers.example.org?subject=unsubscribe%20")
    request = _request_for(mailto)
    done = unsubscribe_mail(request)
    assert done.exit_code == 0, done.output
    assert "ada@example.org: unsubscribed" in done.stdout
    assert _status("ada@example.org") == "unsubscribed"
    again = unsubscribe_mail(request)
    assert again.exit_code == 0 and "already unsubscribed" in again.stdout


def test_a_forwarded_digest_with_the_link_in_its_body_unsubscribes(
    home: Path, smtp: SmtpCapture, tmp_path: Path
) -> None:
    https, _ = _subscribed_and_mailed(smtp)
    forwarded = (
        "From: someone@example.net\r\nTo: leave@papers.example.org\r\n"
        "Subject: Fwd: papersift daily\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"please stop these\r\n> Unsubscribe: {https}\r\n"
    ).encode()
    path = tmp_path / "request.eml"
    path.write_bytes(forwarded)
    done = unsubscribe_mail(b"", str(path))
    assert done.exit_code == 0, done.output
    assert _status("ada@example.org") == "unsubscribed"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "empty message"),
        (b"\x00\xff\xfe garbage \x80" * 50, "no unsubscribe token"),
        (b"Subject: unsubscribe please\r\n\r\njust stop", "no unsubscribe token"),
        (b"Subject: unsubscribe aaaaaaaaaaaa.bbbbbb.cccccccccccccccccccccc\r\n\r\n", "no valid"),
        (b"Subject: x\r\n\r\n" + b"a" * 1_000_001, "over 1,000,000 bytes"),
        (
            b"Subject: =?x-unknown?B?////?=\r\n"
            b"Content-Type: text/plain; charset=x-nope\r\n\r\n\xff",
            "no unsubscribe token",
        ),
    ],
    ids=["empty", "binary", "no-token", "forged", "oversize", "bad-charset"],
)
def test_unsubscribe_mail_refuses_what_it_cannot_act_on(
    home: Path, smtp: SmtpCapture, raw: bytes, says: str
) -> None:
    _subscribed_and_mailed(smtp)
    result = unsubscribe_mail(raw)
    assert result.exit_code == 1 and says in result.stderr, result.output
    assert "Traceback" not in result.output
    assert _status("ada@example.org") == "confirmed"


def test_unsubscribe_mail_asks_the_mail_system_to_retry_when_the_database_is_down(
    home: Path, tmp_path: Path
) -> None:
    """Exit 75 (EX_TEMPFAIL): the mail system keeps the request and tries again later."""
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    result = CliRunner().invoke(
        app, ["--db", url, "subscribers", "unsubscribe-mail"], input=b"Subject: x\r\n\r\n"
    )
    assert result.exit_code == 75, result.output
    missing = unsubscribe_mail(b"", str(tmp_path / "nope.eml"))
    assert missing.exit_code == 1 and "cannot read" in missing.stderr


def test_unsubscribe_mail_reads_a_real_pipe(home: Path, smtp: SmtpCapture, monkeypatch) -> None:
    """As an /etc/aliases pipe runs it: a separate process reading standard input."""
    import subprocess
    import sys

    monkeypatch.setenv("PAPERSIFT_UNSUBSCRIBE_MAILTO", "leave@papers.example.org")
    _https, mailto = _subscribed_and_mailed(smtp)
    exe = str(Path(sys.executable).with_name("papersift"))
    done = subprocess.run(
        [exe, "subscribers", "unsubscribe-mail"],
        input=_request_for(mailto),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert _status("ada@example.org") == "unsubscribed"
