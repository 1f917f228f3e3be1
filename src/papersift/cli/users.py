"""``papersift users add|invite|list|remove|export``: reader accounts, for operators."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from papersift.accounts import manage
from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.digest import outbox

users_app = typer.Typer(
    name="users",
    help="Reader accounts: add, invite, list, remove, export.",
    no_args_is_help=True,
)
app.add_typer(users_app)


def _deliver(mail_id: int) -> str:
    """Send a mail just written to the outbox; where it went, in words."""
    settings = state.settings
    if not outbox.smtp_configured(settings):
        return "kept in the outbox (no SMTP configured): papersift mail outbox"
    report = outbox.deliver(settings, state.db(), ids=[mail_id], due_only=False)
    if report.sent:
        return "mailed"
    return "kept in the outbox, retried later: " + "; ".join(report.errors or ["not sent yet"])


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="The reader's address.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the account an admin.")] = False,
    name: Annotated[str, typer.Option(help="A display name.")] = "",
) -> None:
    """Create an account (no mail; the reader signs in with a link from /signin). The
    first account of a deployment is an admin.

    Example: papersift users add ada@lab.example.org --admin
    """
    db = state.db()
    found = manage.find_account(db, email)
    if found is not None:
        if admin and not found.is_admin:
            manage.make_admin(db, found.id)
            console.print(f"{found.email} is now an admin", highlight=False)
            return
        fail(f"an account for {found.email} exists already")
    try:
        account = manage.add_account(db, email, admin=admin, name=name)
    except ValueError as exc:
        fail(str(exc), code=2)
    role = "admin" if account.is_admin else "reader"
    console.print(f"added {account.email} ({role}, id {account.id})", highlight=False)


@users_app.command("invite")
def users_invite(email: Annotated[str, typer.Argument(help="The address to invite.")]) -> None:
    """Allow an address to sign up (signup_policy = invite) and mail it an invitation.

    Example: papersift users invite grace@example.org
    """
    settings = state.settings
    try:
        mail_id = manage.invite(state.db(), settings, email)
    except ValueError as exc:
        fail(str(exc), code=2)
    if mail_id is None:
        console.print(f"{email.strip().lower()} has an account or an invitation already")
        return
    if settings.signup_policy not in ("invite", "open"):
        err_console.print(
            f"note: signup_policy is {settings.signup_policy!r}; invitations let addresses "
            "sign up only when it is 'invite'",
            style="yellow",
            highlight=False,
        )
    console.print(f"invited {email.strip().lower()}: {_deliver(mail_id)}", highlight=False)


@users_app.command("list")
def users_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Accounts (oldest first) and open invitations.

    Example: papersift users list --json
    """
    db = state.db()
    accounts = manage.list_accounts(db)
    invites = [i for i in manage.list_invites(db) if i["used_at"] is None]
    if json_out:
        print_json({"users": accounts, "invites": invites})
        return
    if not accounts:
        console.print("no accounts yet", highlight=False)
    for a in accounts:
        seen = a["last_seen_at"].strftime("%Y-%m-%d %H:%M") if a["last_seen_at"] else "never"
        role = "admin " if a["is_admin"] else "reader"
        console.print(f"{a['id']:>5}  {role}  {a['email']}  last seen {seen}", highlight=False)
    for i in invites:
        console.print(f"    -  invited {i['email']}", highlight=False)


@users_app.command("remove")
def users_remove(
    email: Annotated[str, typer.Argument(help="The account's address.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete an account and everything held about it (votes, library, comments, tokens,
    sessions, the digest subscription of its address).

    Example: papersift users remove ada@lab.example.org --yes
    """
    db = state.db()
    account = manage.find_account(db, email)
    if account is None:
        fail(f"no account for {email.strip().lower()}")
    if not yes:
        typer.confirm(f"delete {account.email} and all of its data?", abort=True)
    manage.delete_account(db, account.id)
    console.print(f"removed {account.email}", highlight=False)


@users_app.command("export")
def users_export(email: Annotated[str, typer.Argument(help="The account's address.")]) -> None:
    """Print everything papersift holds about an account, as JSON (what /account/export
    gives the reader).

    Example: papersift users export ada@lab.example.org > ada.json
    """
    db = state.db()
    account = manage.find_account(db, email)
    if account is None:
        fail(f"no account for {email.strip().lower()}")
    typer.echo(json.dumps(manage.export(db, account.id), indent=2, ensure_ascii=False, default=str))
