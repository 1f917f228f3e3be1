"""Digest building blocks: validation, signed tokens, SMTP URLs, selection, message format."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st

from papersift.digest import inbound, tokens
from papersift.digest.compose import Composer, Digest, Section, period_key
from papersift.digest.ledger import claimer_dead, new_claimer
from papersift.digest.mail import build_message, new_message
from papersift.digest.smtp import SmtpConfig, SmtpConfigError, wire_bytes
from papersift.digest.subscriptions import Subscriber
from papersift.digest.validation import (
    MAX_TOPICS,
    ValidationError,
    clean_preferences,
    clean_topics,
    normalize_email,
)
from papersift.model import Paper
from papersift.settings import load_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PAPERSIFT_SECRET", raising=False)
    monkeypatch.setenv("PAPERSIFT_BASE_URL", "https://papers.example.org")
    monkeypatch.setenv("PAPERSIFT_MAIL_FROM", "papersift <digest@papers.example.org>")
    return load_settings(tmp_path / "home")


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Ada@Example.ORG", "ada@example.org"),
        ("  ada.lovelace+digest@mail.example.co.uk ", "ada.lovelace+digest@mail.example.co.uk"),
        ("test@localhost", "test@localhost"),
    ],
)
def test_good_addresses_are_normalized(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("ada@example.org\r\nBcc: victim@example.org", "control characters"),
        ("ada@example.org\n", "control characters"),
        ("ada\r@example.org", "control characters"),
        ("ada@exa\x00mple.org", "control characters"),
        ("ada@example.org\u2028", "control characters"),
        ("ada@exam\u200bple.org", "control characters"),
        ("", "required"),
        ("   ", "required"),
        ("ada", "exactly one @"),
        ("ada@@example.org", "exactly one @"),
        ("a@b@example.org", "exactly one @"),
        ("ada@example", "bad domain"),
        ("ada@-example.org", "bad domain"),
        ("ada@example..org", "bad domain"),
        ("ada@1.2.3.4", "number"),
        (".ada@example.org", "before @"),
        ("ada..l@example.org", "before @"),
        ("ada l@example.org", "spaces"),
        ("Ada <ada@example.org>", "spaces"),
        ("ada@example.org,eve@example.org", "exactly one @"),
        ("ada@example.org,x", "bad domain"),
        ("x" * 65 + "@example.org", "before @"),
        ("a@" + "b" * 250 + ".org", "longer than"),
        ("adä@example.org", "ASCII"),
    ],
)
def test_bad_addresses_are_rejected_with_a_reason(raw: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        normalize_email(raw)
    assert fragment in str(err.value)


def test_non_string_address_is_rejected() -> None:
    with pytest.raises(ValidationError):
        normalize_email(None)
    with pytest.raises(ValidationError):
        normalize_email(["a@b.org"])


def test_topics_are_cleaned_and_deduplicated() -> None:
    assert clean_topics(["  sparse   attention ", "Sparse Attention", "", "LoRA"]) == [
        "sparse attention",
        "LoRA",
    ]


@pytest.mark.parametrize(
    "topics, fragment",
    [
        (["ok", "bad\r\nBcc: x@y.org"], "control characters"),
        (["bad\ttab"], "control characters"),
        (["x" * 201], "longer than 200"),
        ([f"t{i}" for i in range(MAX_TOPICS + 1)], f"at most {MAX_TOPICS}"),
        ([42], "must be a string"),
    ],
)
def test_bad_topics_are_rejected(topics: list, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        clean_topics(topics)
    assert fragment in str(err.value)


def test_preferences_report_every_problem_at_once() -> None:
    with pytest.raises(ValidationError) as err:
        clean_preferences(topics=["a\nb"], frequency="hourly", max_papers=0)
    assert len(err.value.errors) == 3
    prefs = clean_preferences(topics=["x"], frequency="Weekly", max_papers="7", send_empty=True)
    assert (prefs.frequency, prefs.max_papers, prefs.send_empty) == ("weekly", 7, True)
    for bad in ("7.5", "lots", True, None, 101):
        with pytest.raises(ValidationError):
            clean_preferences(max_papers=bad)


# -- tokens ------------------------------------------------------------------------------------
def test_tokens_round_trip_per_purpose(settings) -> None:
    for purpose in (tokens.CONFIRM, tokens.UNSUBSCRIBE, tokens.MANAGE):
        token = tokens.make_token(settings, purpose, 7, "ada@example.org")
        assert tokens.read_token(settings, purpose, token) == (7, "ada@example.org")


def test_token_of_one_purpose_does_not_work_for_another(settings) -> None:
    token = tokens.make_token(settings, tokens.MANAGE, 7, "ada@example.org")
    with pytest.raises(tokens.TokenError, match="not valid"):
        tokens.read_token(settings, tokens.UNSUBSCRIBE, token)


def test_forged_and_damaged_tokens_are_rejected(settings, tmp_path: Path) -> None:
    token = tokens.make_token(settings, tokens.UNSUBSCRIBE, 7, "ada@example.org")
    payload, ts, sig = token.split(".")
    other = load_settings(tmp_path / "other-home")  # another secret key
    forged_key = tokens.make_token(other, tokens.UNSUBSCRIBE, 7, "ada@example.org")
    import base64
    import json

    evil = base64.urlsafe_b64encode(json.dumps({"s": 8, "e": "eve@example.org"}).encode())
    swapped = f"{evil.decode().rstrip('=')}.{ts}.{sig}"
    for bad in (
        forged_key,
        swapped,
        token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
        "garbage",
        "",
        "   ",
        None,
        "a." * 600,
    ):
        with pytest.raises(tokens.TokenError):
            tokens.read_token(settings, tokens.UNSUBSCRIBE, bad)


def test_confirm_token_expires_after_seven_days(settings) -> None:
    old = tokens.make_token(
        settings, tokens.CONFIRM, 1, "ada@example.org", now=datetime.now(UTC) - timedelta(days=8)
    )
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.read_token(settings, tokens.CONFIRM, old)
    fresh = tokens.make_token(
        settings, tokens.CONFIRM, 1, "ada@example.org", now=datetime.now(UTC) - timedelta(days=6)
    )
    assert tokens.read_token(settings, tokens.CONFIRM, fresh) == (1, "ada@example.org")
    # unsubscribe links stay valid for good
    ancient = tokens.make_token(
        settings,
        tokens.UNSUBSCRIBE,
        1,
        "ada@example.org",
        now=datetime.now(UTC) - timedelta(days=3000),
    )
    assert tokens.read_token(settings, tokens.UNSUBSCRIBE, ancient)[0] == 1


def test_token_from_pasted_link(settings) -> None:
    url = tokens.confirm_url(settings, 3, "ada@example.org")
    assert url.startswith("https://papers.example.org/subscriptions/confirm?token=")
    assert tokens.token_from_link(f"  {url} ") == url.split("token=")[1]
    assert tokens.token_from_link("abc.def.ghi") == "abc.def.ghi"


# -- SMTP URLs ----------------------------------------------------------------------------------
def test_smtp_urls() -> None:
    cfg = SmtpConfig.from_url("smtp://127.0.0.1:2525")
    assert (cfg.host, cfg.port, cfg.ssl, cfg.starttls, cfg.user) == (
        "127.0.0.1",
        2525,
        False,
        False,
        None,
    )
    cfg = SmtpConfig.from_url("smtp://me%40x.org:p%3Ass@mail.x.org:587?starttls=1&timeout=5")
    assert (cfg.user, cfg.password, cfg.starttls, cfg.timeout) == ("me@x.org", "p:ss", True, 5.0)
    assert "p:ss" not in cfg.describe()
    cfg = SmtpConfig.from_url("smtps://u:p@mail.x.org")
    assert (cfg.ssl, cfg.port) == (True, 465)
    for bad in (
        "http://x.org",
        "smtp://",
        "smtp://x.org?tls=1",
        "smtp://x.org:99999",
        "smtp://x.org?timeout=soon",
    ):
        with pytest.raises(SmtpConfigError):
            SmtpConfig.from_url(bad)


# -- composing ------------------------------------------------------------------------------------
def test_selection_quotas_and_no_duplicates() -> None:
    trend = [f"t{i}" for i in range(10)]
    lists = [("a", ["t0", "a1", "a2", "a3"]), ("b", ["a1", "b1", "b2"])]
    picked_trend, picked = Composer._select(6, trend, lists)
    assert picked_trend == ["t0", "t1"]  # a third of the room
    flat = picked_trend + [p for _, ids in picked for p in ids]
    assert len(flat) == 6 and len(set(flat)) == 6
    assert picked == [("a", ["a1", "a2"]), ("b", ["b1", "b2"])]
    # matches leave room: trending fills it
    picked_trend, picked = Composer._select(8, trend, [("a", ["a1"])])
    assert picked_trend == ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]
    # no topics: all trending
    assert Composer._select(3, trend, [])[0] == ["t0", "t1", "t2"]


def test_period_keys() -> None:
    assert period_key("daily", date(2024, 5, 1)) == "2024-05-01"
    assert period_key("weekly", date(2024, 5, 1)) == "2024-W18"
    assert period_key("weekly", date(2024, 12, 30)) == "2025-W01"


def _digest(email: str = "ada@example.org") -> Digest:
    sub = Subscriber(id=42, email=email, topics=["attention"], status="confirmed")
    papers = [
        Paper(
            id="2401.00001",
            title="Flash <b>attention</b> & friends",
            abstract="We make attention fast. " * 30,
            authors=["A", "B", "C", "D"],
            published=date(2024, 1, 2),
            categories=["cs.LG"],
            pdf_url="https://arxiv.org/pdf/2401.00001",
            code_urls=["javascript:alert(1)"],
        ),
        Paper(id="hep-th/9901001", title="Old style id", abstract="Strings."),
    ]
    return Digest(
        sub,
        date(2024, 5, 1),
        "2024-05-01",
        [Section("Trending today", papers[:1]), Section("New on attention", papers[1:])],
    )


def test_digest_message_headers_and_parts(settings) -> None:
    msg = build_message(settings, _digest())
    assert msg["To"] == "ada@example.org"
    assert msg["From"].addresses[0].addr_spec == "digest@papers.example.org"
    assert msg["Message-ID"].startswith("<digest.2024-05-01.42.")
    assert msg["Date"]
    assert "Flash <b>attention</b>" in msg["Subject"] and "(+1 more)" in msg["Subject"]
    [https] = [p.strip().strip("<>") for p in str(msg["List-Unsubscribe"]).split(",")]
    assert https.startswith("https://papers.example.org/unsubscribe?token=")
    token = https.split("token=")[1]
    read_by = settings.replace(unsubscribe_mailto="leave@papers.example.org")
    with_mailto = build_message(read_by, _digest())
    https2, mailto = [
        p.strip().strip("<>") for p in str(with_mailto["List-Unsubscribe"]).split(",")
    ]
    token2 = https2.split("token=")[1]  # signed again: its timestamp may be a second later
    assert https2.split("token=")[0] == https.split("token=")[0]
    assert tokens.read_token(settings, tokens.UNSUBSCRIBE, token2) == (42, "ada@example.org")
    assert mailto == f"mailto:leave@papers.example.org?subject=unsubscribe%20{token2}"
    assert tokens.read_token(settings, tokens.UNSUBSCRIBE, token) == (42, "ada@example.org")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "https://papers.example.org/papers/2401.00001" in text
    assert "https://papers.example.org/papers/hep-th/9901001" in text
    assert "A, B, C et al." in text
    assert 'name="color-scheme" content="light dark"' in html
    assert "prefers-color-scheme: dark" in html
    assert "Flash &lt;b&gt;attention&lt;/b&gt; &amp; friends" in html  # escaped
    assert "javascript:" not in html  # only http(s) links from paper data
    assert 'href="https://arxiv.org/pdf/2401.00001"' in html
    assert "/subscriptions/manage?token=" in html and "/unsubscribe?token=" in html
    raw = wire_bytes(msg)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"=?utf-8?" not in raw.split(b"\r\n\r\n")[0].split(b"List-Unsubscribe:")[1][:300]


def test_message_id_is_stable_per_subscriber_and_period(settings) -> None:
    a = build_message(settings, _digest())["Message-ID"]
    b = build_message(settings, _digest())["Message-ID"]
    c = build_message(settings, _digest("other@example.org"))["Message-ID"]
    assert a == b != c


def test_header_injection_cannot_pass_the_email_package(settings) -> None:
    with pytest.raises(ValueError):
        new_message(settings, "ada@example.org\r\nBcc: eve@example.org", "s", "t")
    with pytest.raises(ValueError):
        new_message(settings, "ada@example.org", "subject\r\nBcc: eve@example.org", "t")


# -- claims ------------------------------------------------------------------------------------
def test_claims_of_dead_processes_are_recognised() -> None:
    now = datetime.now(UTC)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host, pid, _tok = new_claimer().split(":")
    dead = f"{host}:{proc.pid}:deadbeef"
    assert claimer_dead(dead, now, now)
    alive_other = f"{host}:1:abc"  # pid 1 exists (and may not be signalled by us)
    assert not claimer_dead(alive_other, now, now)
    assert claimer_dead(alive_other, now - timedelta(hours=1), now)  # lease expired
    assert not claimer_dead("otherhost:123:abc", now, now)  # another machine: wait the lease
    assert claimer_dead(None, None, now)


@settings_h(max_examples=300, deadline=None, database=None)
@given(
    raw=st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(lambda t: f"Subject: {t}\r\n\r\n{t}".encode("utf-8", "replace")),
        st.lists(
            st.sampled_from(
                [
                    b"Subject: ",
                    b"=?utf-8?B?",
                    b"?=",
                    b"\r\n",
                    b"Content-Type: ",
                    b"multipart/mixed; boundary=x",
                    b"--x\r\n",
                    b"text/plain; charset=",
                    b"x-nope",
                    b"\xff",
                    b"Content-Transfer-Encoding: base64\r\n",
                    b"a" * 30 + b"." + b"b" * 6,
                ]
            ),
            max_size=40,
        ).map(b"".join),
    )
)
def test_inbound_messages_give_tokens_or_a_clear_error(raw: bytes) -> None:
    """Whatever arrives at the unsubscribe address, reading it gives candidate tokens or
    an InboundError, never another exception."""
    try:
        found = inbound.candidate_tokens(raw)
    except inbound.InboundError as exc:
        assert str(exc)
    else:
        assert len(found) <= inbound.MAX_CANDIDATES
        assert all(inbound._TOKEN.fullmatch(t) for t in found)


def test_inbound_finds_compressed_and_plain_tokens(settings) -> None:
    """itsdangerous compresses a long payload and marks it with a leading dot: both kinds
    are found, also right after a sentence's full stop."""
    long_addr = "a" * 300 + "@example.org"
    compressed = tokens.make_token(settings, tokens.UNSUBSCRIBE, 7, long_addr)
    plain = tokens.make_token(settings, tokens.UNSUBSCRIBE, 8, "ada@example.org")
    assert compressed.startswith(".") and not plain.startswith(".")
    raw = f"Subject: unsubscribe {compressed}\r\n\r\nStop.{plain}\r\n".encode()
    found = inbound.candidate_tokens(raw)
    assert found[0] == compressed and plain in found
    for token in (compressed, plain):
        assert tokens.read_token(settings, tokens.UNSUBSCRIBE, token)[0] in (7, 8)
