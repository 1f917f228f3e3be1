"""Digest commands: ``papersift subscribers add|confirm|list|remove`` and
``papersift digest send|preview``."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.digest import inbound, outbox, tokens
from papersift.digest import subscriptions as subs
from papersift.digest.run import DigestRun, Outcome, preview
from papersift.digest.smtp import SmtpConfigError, SmtpError
from papersift.digest.tokens import TokenError
from papersift.digest.validation import ValidationError, clean_preferences, normalize_email

EX_TEMPFAIL = 75  # sysexits.h: mail systems retry the delivery later

subscribers_app = typer.Typer(
    name="subscribers", help="Manage digest subscribers (double opt-in).", no_args_is_help=True
)
digest_app = typer.Typer(
    name="digest", help="Compose and send the email digests.", no_args_is_help=True
)
app.add_typer(subscribers_app)
app.add_typer(digest_app)


def _invalid(exc: ValidationError) -> None:
    for message in exc.errors:
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(2)


# -- subscribers -------------------------------------------------------------------------------
@subscribers_app.command("add")
def subscribers_add(
    email: Annotated[str, typer.Argument(help="Address to subscribe.")],
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="A topic to match new papers against (repeatable)."),
    ] = None,
    collection: Annotated[
        list[str] | None,
        typer.Option(
            "--collection", "-c", help="Follow new papers in this collection (repeatable)."
        ),
    ] = None,
    frequency: Annotated[str, typer.Option(help="daily or weekly.")] = "daily",
    max_papers: Annotated[int, typer.Option("--max", help="At most N papers per mail.")] = 20,
    send_empty: Annotated[
        bool, typer.Option("--send-empty", help="Also mail a short note when nothing is new.")
    ] = False,
    mail: Annotated[
        bool,
        typer.Option(
            "--mail/--no-mail", help="Send the confirmation mail (else only print the link)."
        ),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Subscribe an address: it gets a confirmation link and no digest until confirmed.

    The confirmation link is also printed, for `papersift subscribers confirm LINK`.

    Example: papersift subscribers add ada@example.org --topic "sparse attention" --max 10
    """
    try:
        prefs = clean_preferences(
            topics=topic or [],
            collections=collection or [],
            frequency=frequency,
            max_papers=max_papers,
            send_empty=send_empty,
        )
        normalize_email(email)
        queued = outbox.SignupMail(state.settings, interval=0) if mail else None
        result = subs.subscribe(state.db(), email, prefs, on_signup=queued)
    except ValidationError as exc:
        _invalid(exc)
    settings = state.settings
    sub = result.subscriber
    link = None  # the mailed link when there is one: a second token could differ by its second
    if result.action != "already":
        link = (queued and queued.link) or tokens.confirm_url(settings, sub.id, sub.email)
    mailed, mail_error = False, None
    if queued is not None and queued.id is not None and outbox.smtp_configured(settings):
        try:  # written to the outbox with the sign-up; a failure leaves it there
            report = outbox.deliver(settings, state.db(), ids=[queued.id], due_only=False)
            mailed = report.sent == 1
            mail_error = "; ".join(report.errors) or None
        except (SmtpError, SmtpConfigError, OSError, ValueError) as exc:
            mail_error = str(exc)
    if json_out:
        print_json(
            {
                "subscriber": sub.to_dict(),
                "action": result.action,
                "confirm_url": link,
                "mailed": mailed,
                "mail_error": mail_error,
            }
        )
    else:
        verb = {
            "created": "added",
            "pending": "updated (still pending)",
            "restarted": "re-subscribed (pending)",
            "already": "already confirmed; preferences unchanged (use the manage link)",
        }[result.action]
        console.print(f"{sub.email}: {verb}", highlight=False)
        if link:
            console.print(f"confirmation link: {link}", highlight=False, soft_wrap=True)
        if mailed:
            console.print("confirmation mail sent", style="dim")
        elif queued is not None and queued.id is not None and not mail_error:
            console.print(f"mail {outbox.where_mail_goes(settings)}", style="dim")
    if mail_error:
        err_console.print(
            f"[yellow]warning:[/] the mail could not be sent now (kept in the outbox, "
            f"`papersift mail send` retries it): {mail_error}",
            highlight=False,
        )
        raise typer.Exit(1)


@subscribers_app.command("confirm")
def subscribers_confirm(
    link: Annotated[
        str, typer.Argument(metavar="LINK_OR_TOKEN", help="The confirmation link (or its token).")
    ],
) -> None:
    """Confirm a subscription, exactly as opening the mailed link does.

    Example: papersift subscribers confirm 'http://127.0.0.1:8000/subscriptions/confirm?token=...'
    """
    try:
        sub, changed = subs.confirm(state.db(), state.settings, tokens.token_from_link(link))
    except TokenError as exc:
        fail(str(exc), code=2)
    console.print(
        f"{sub.email}: {'confirmed' if changed else 'was already confirmed'}", highlight=False
    )


@subscribers_app.command("list")
def subscribers_list(
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: pending, confirmed, unsubscribed or paused."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List subscribers with their status and preferences.

    Example: papersift subscribers list --status paused
    """
    try:
        rows = subs.list_subscribers(state.db(), status)
    except ValidationError as exc:
        _invalid(exc)
    if json_out:
        print_json({"subscribers": [r.to_dict() for r in rows]})
        return
    table = Table(
        "id",
        "email",
        "status",
        "freq",
        "max",
        "topics",
        "collections",
        "last digest",
        "failures",
        title=f"{len(rows)} subscribers",
        title_justify="left",
    )
    for r in rows:
        table.add_row(
            str(r.id),
            r.email,
            r.status,
            r.frequency,
            str(r.max_papers),
            "; ".join(r.topics),
            "; ".join(r.collections),
            r.last_digest_at.strftime("%Y-%m-%d %H:%M") if r.last_digest_at else "-",
            str(r.failure_count) + (f" ({r.last_error[:40]})" if r.last_error else ""),
        )
    console.print(table)


@subscribers_app.command("remove")
def subscribers_remove(
    who: Annotated[
        str,
        typer.Argument(
            metavar="EMAIL_OR_LINK", help="Address, or an unsubscribe/manage link or token."
        ),
    ],
) -> None:
    """Delete a subscriber and their digest history (for an unsubscribe that keeps the
    record, use the link in any digest).

    Example: papersift subscribers remove ada@example.org
    """
    db = state.db()
    if "@" in who and "token=" not in who:
        try:
            sub = subs.get_by_email(db, who)
        except ValidationError as exc:
            _invalid(exc)
    else:
        try:
            sub = subs.subscriber_for_link(db, state.settings, who)
        except TokenError as exc:
            fail(str(exc), code=2)
    if sub is None:
        fail(f"no subscriber with address {who!r}")
    subs.remove(db, sub.id)
    console.print(f"{sub.email}: removed", highlight=False)


@subscribers_app.command("unsubscribe-mail")
def subscribers_unsubscribe_mail(
    message: Annotated[
        Path | None,
        typer.Argument(help="The mail as a file (RFC 5322); default: standard input."),
    ] = None,
) -> None:
    """Act on an unsubscribe request sent by mail (the mailto in a digest's List-Unsubscribe
    header, offered when PAPERSIFT_UNSUBSCRIBE_MAILTO is set): route that address here.
    Exit status 1 (so the mail system bounces the request, saying why) when the message
    holds no valid unsubscribe token, nothing changed; 75 (EX_TEMPFAIL) when the database
    cannot be reached, so the mail system keeps the request and retries.

    \b
    /etc/aliases (then run newaliases):
      unsubscribe: "|papersift --home /srv/papersift subscribers unsubscribe-mail"

    Example: papersift subscribers unsubscribe-mail request.eml
    """
    try:
        if message is None:
            raw = sys.stdin.buffer.read(inbound.MAX_MESSAGE + 1)
        else:
            with message.open("rb") as fh:
                raw = fh.read(inbound.MAX_MESSAGE + 1)
    except OSError as exc:
        fail(f"cannot read {message}: {exc.strerror or exc}")
    try:
        db = state.db(exit_code=EX_TEMPFAIL)
        sub, changed = inbound.unsubscribe_by_mail(db, state.settings, raw)
    except inbound.InboundError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:  # the request must not be lost: let the mail system retry
        fail(f"database unavailable, try again later ({exc.__class__.__name__})", code=EX_TEMPFAIL)
    note = "unsubscribed" if changed else "already unsubscribed"
    console.print(f"{sub.email}: {note}", highlight=False)


# -- digest ------------------------------------------------------------------------------------
_SEND_INTRO = (
    "Every (subscriber, period) is sent at most once however often this runs, so run it from "
    "cron or a systemd timer and rerun freely after a crash. Daily subscribers' period is the "
    "day; weekly subscribers get theirs on the first run of each ISO week. Exit status 1 when "
    "something needs a look: failures left to retry, SMTP unusable, or digests whose delivery "
    "is uncertain (a run killed while sending; see --retry-uncertain)."
)

SEND_HELP = """Compose and send the digests due for a day (default: today).

{intro}

\b
cron, every day at 07:00 (crontab -e):
  PAPERSIFT_HOME=/srv/papersift
  PAPERSIFT_SMTP_URL=smtp://127.0.0.1:25
  0 7 * * *  papersift digest send --quiet

\b
systemd, /etc/systemd/system/papersift-digest.service:
  [Service]
  Type=oneshot
  Environment=PAPERSIFT_HOME=/srv/papersift
  Environment=PAPERSIFT_SMTP_URL=smtp://127.0.0.1:25
  ExecStart=/usr/local/bin/papersift digest send --quiet
and /etc/systemd/system/papersift-digest.timer:
  [Timer]
  OnCalendar=*-*-* 07:00
  Persistent=true
  [Install]
  WantedBy=timers.target
then: systemctl enable --now papersift-digest.timer

Example: papersift digest send --period 2024-05-01 --dry-run
""".replace("{intro}", _SEND_INTRO)


def _parse_day(value: str | None) -> date:
    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--period must be a date like 2024-05-01, got {value!r}", code=2)


@digest_app.command("send", help=SEND_HELP)
def digest_send(
    period: Annotated[
        str | None,
        typer.Option(
            "--period", metavar="DATE", help="The day to send for (YYYY-MM-DD); default today."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compose only: no mail, nothing recorded.")
    ] = False,
    rate: Annotated[
        float | None,
        typer.Option(
            help="At most this many messages per second (0 = no limit); "
            "default $PAPERSIFT_SMTP_RATE or 10."
        ),
    ] = None,
    retries: Annotated[
        int, typer.Option(help="Retries of a temporary SMTP failure, with exponential backoff.")
    ] = 3,
    backoff: Annotated[float, typer.Option(help="First backoff delay in seconds.")] = 1.0,
    pause_after: Annotated[
        int, typer.Option(help="Pause an address after this many permanent failures in a row.")
    ] = 3,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="EMAIL", help="Only these subscribers (repeatable)."),
    ] = None,
    retry_uncertain: Annotated[
        bool,
        typer.Option(
            "--retry-uncertain",
            help="Also resend digests whose delivery is uncertain (only "
            "after checking the mail log: they may have arrived).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    day = _parse_day(period)
    settings = state.settings
    if rate is None:
        rate = settings.smtp_rate

    def show(o: Outcome) -> None:
        if quiet or json_out or o.status in ("done", "busy"):
            return
        style = {"sent": "green", "failed": "red", "bounced": "red", "uncertain": "yellow"}
        extra = f" ({o.error})" if o.error else ""
        err_console.print(
            f"[{style.get(o.status, 'dim')}]{o.status:>10}[/] {o.email} "
            f"{o.period} {o.papers} papers{extra}",
            highlight=False,
        )

    try:
        digest_run = DigestRun(
            settings,
            state.db(),
            day=day,
            dry_run=dry_run,
            rate=rate,
            retries=retries,
            backoff=backoff,
            pause_after=pause_after,
            emails=only or None,
            retry_uncertain=retry_uncertain,
            progress=show,
        )
    except ValidationError as exc:
        _invalid(exc)
    except ValueError as exc:  # an option, PAPERSIFT_MAIL_FROM or PAPERSIFT_SMTP_URL
        fail(str(exc), code=2)
    report = digest_run.run()
    if json_out:
        data = report.to_dict()
        if quiet:
            data.pop("outcomes")
        print_json(data)
    else:
        counts = report.counts()
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no subscribers"
        console.print(
            f"digest {day.isoformat()}{' (dry run)' if dry_run else ''}: {summary} "
            f"in {report.seconds:.1f}s",
            highlight=False,
        )
        for w in report.warnings:
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
        for email in report.paused:
            err_console.print(
                f"[yellow]paused:[/] {email} after repeated permanent failures", highlight=False
            )
        if counts.get("uncertain"):
            err_console.print(
                "[yellow]uncertain:[/] a run died while handing these digests to the SMTP "
                "server; they were probably delivered and are not resent. Check the mail log "
                "for their Message-ID, then use --retry-uncertain if they did not arrive.",
                highlight=False,
            )
        if report.aborted:
            err_console.print(f"[bold red]error:[/] {report.aborted}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@digest_app.command("preview")
def digest_preview(
    email: Annotated[str, typer.Argument(help="A subscriber's address (any status).")],
    html: Annotated[
        Path | None,
        typer.Option("--html", metavar="FILE", help="Also write the HTML part to FILE."),
    ] = None,
    period: Annotated[
        str | None,
        typer.Option("--period", metavar="DATE", help="As if sending on this day (default today)."),
    ] = None,
) -> None:
    """Print the digest a subscriber would get now (text part); nothing is sent or recorded.

    Example: papersift digest preview ada@example.org --html /tmp/digest.html
    """
    day = _parse_day(period)
    try:
        digest, msg = preview(state.settings, state.db(), email, day)
    except ValidationError as exc:
        _invalid(exc)
    except ValueError as exc:  # PAPERSIFT_MAIL_FROM or PAPERSIFT_UNSUBSCRIBE_MAILTO
        fail(str(exc), code=2)
    except LookupError as exc:
        fail(str(exc))
    sub = digest.subscriber
    if sub.status != subs.CONFIRMED:
        err_console.print(
            f"[yellow]note:[/] {sub.email} is {sub.status}: a real run sends nothing to it",
            highlight=False,
        )
    if digest.empty and not sub.send_empty:
        err_console.print("[yellow]note:[/] nothing new: a real run sends no mail", highlight=False)
    text_part = msg.get_body(("plain",))
    console.print(f"Subject: {msg['Subject']}", highlight=False, markup=False)
    console.print(text_part.get_content() if text_part else "", highlight=False, markup=False)
    if html is not None:
        part = msg.get_body(("html",))
        try:
            html.write_text(part.get_content() if part else "", encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {html}: {exc.strerror or exc}")
        err_console.print(f"HTML written to {html}", highlight=False)
