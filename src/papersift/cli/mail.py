"""``papersift mail outbox|send``: the durable mail outbox (sign-up confirmations)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.digest import outbox
from papersift.digest.smtp import SmtpConfigError

mail_app = typer.Typer(
    name="mail", help="The mail outbox: list it, deliver what waits.", no_args_is_help=True
)
app.add_typer(mail_app)


@mail_app.command("outbox")
def mail_outbox(
    status: Annotated[
        str | None,
        typer.Option(help=f"Only this status: {', '.join(outbox.STATUSES)}."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N mails.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the outbox, newest first: to, subject, status, tries, and the link of each
    confirmation mail (to pass on by hand when no SMTP server is configured).

    Example: papersift mail outbox --status pending
    """
    try:
        items = outbox.entries(state.db(), status=status, limit=limit)
    except ValueError as exc:
        fail(str(exc), code=2)
    settings = state.settings
    where = outbox.where_mail_goes(settings) if outbox.smtp_configured(settings) else None
    if json_out:
        print_json(
            {
                "smtp": outbox.smtp_configured(settings),
                "counts": outbox.counts(state.db()),
                "mails": [i.to_dict() for i in items],
            }
        )
        return
    if not outbox.smtp_configured(settings):
        err_console.print(
            "no SMTP configured (smtp_url = none): mail stays here until one is set and "
            "`papersift mail send` runs",
            style="yellow",
            highlight=False,
        )
    elif where:
        err_console.print(f"mail is {where}", style="dim", highlight=False)
    if not items:
        console.print("the outbox is empty", highlight=False)
        return
    for i in items:
        # one block per mail, links unbroken, so an operator can copy them whole
        console.print(
            f"#{i.id} {i.status} tries {i.tries} {i.created_at:%Y-%m-%d %H:%M} UTC "
            f"to {escape(i.to)}: {escape(i.subject)}",
            highlight=False,
            soft_wrap=True,
        )
        if i.link:
            console.print(f"   link: {escape(i.link)}", highlight=False, soft_wrap=True)
        if i.last_error and i.status != outbox.SENT:
            console.print(f"   last error: {escape(i.last_error)}", highlight=False, soft_wrap=True)


@mail_app.command("send")
def mail_send(
    due: Annotated[
        bool,
        typer.Option("--due", help="Only mails whose retry time has come (what timers use)."),
    ] = False,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Retries of a temporary failure per mail.")
    ] = 2,
    backoff: Annotated[
        float, typer.Option("--backoff", min=0.0, help="First retry wait, s; doubles.")
    ] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Deliver the mails waiting in the outbox over SMTP (exit 1 if some were not sent).

    Temporary failures stay in the outbox and are retried later with exponential
    backoff; a permanent refusal is recorded as failed. With no SMTP configured nothing
    is sent.

    Example: PAPERSIFT_SMTP_URL=smtp://127.0.0.1:25 papersift mail send
    """
    settings = state.settings
    try:
        report = outbox.deliver(
            settings, state.db(), due_only=due, retries=retries, backoff=backoff
        )
    except SmtpConfigError as exc:
        fail(str(exc), code=2)
    if json_out:
        print_json({"smtp": outbox.smtp_configured(settings), **report.to_dict()})
    elif report.held:
        console.print(
            f"{report.held} mail(s) kept in the outbox: no SMTP configured (smtp_url = none)",
            highlight=False,
        )
    else:
        console.print(
            f"sent {report.sent}, to retry {report.retry}, failed {report.failed}",
            highlight=False,
        )
        for error in report.errors:
            err_console.print(f"[yellow]warning:[/] {escape(error)}", highlight=False)
    if report.retry or report.failed:
        raise typer.Exit(1)
