"""Admin pages: ``/admin/outbox`` (the mail outbox, with the links of confirmation mails)
and ``/admin/jobs`` (background jobs: counts, the newest jobs, retry a failed one; for
signed-in administrators, ``AdminDep``).

Until admin accounts exist, an admin page answers only a request made on the server
itself: from 127.0.0.1 or ::1, to a loopback host name (so a web page that rebinds its
own domain to 127.0.0.1 cannot read it through a visitor's browser), without proxy
headers (a reverse proxy on the same host also connects from 127.0.0.1), and only while
the ``admin_loopback`` setting allows it. Anything else is 403.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from papersift.digest import outbox
from papersift.jobs.info import STATUSES as JOB_STATUSES
from papersift.store.db import StoreError
from papersift.web.deps import AdminDep, DbDep, RenderDep, SettingsDep, StateDep
from papersift.web.security import CSRF_FIELD, verify_csrf

router = APIRouter(include_in_schema=False)

LOOPBACK_PEERS = {"127.0.0.1", "::1"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def on_loopback(request: Request) -> bool:
    """True for a direct request from this machine to a loopback host name."""
    peer = request.client.host if request.client else ""
    if peer not in LOOPBACK_PEERS:
        return False
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    return _host_name(request.headers.get("host", "")) in LOOPBACK_HOSTS


def require_admin(request: Request, allow_loopback: bool) -> None:
    """403 unless the request may see admin pages (see the module docstring)."""
    if not (allow_loopback and on_loopback(request)):
        raise HTTPException(
            403, "admin pages answer only requests made on the server itself (admin_loopback)"
        )


@router.get("/admin/outbox")
async def outbox_page(
    request: Request, render: RenderDep, db: DbDep, settings: SettingsDep, status: str | None = None
) -> Response:
    require_admin(request, settings.admin_loopback)
    if status is not None and status not in outbox.STATUSES:
        raise HTTPException(400, f"status must be one of {', '.join(outbox.STATUSES)}")
    mails = await run_in_threadpool(outbox.entries, db, status=status, limit=200)
    counts = await run_in_threadpool(outbox.counts, db)
    context = {
        "mails": mails,
        "counts": counts,
        "status": status,
        "smtp": outbox.smtp_configured(settings),
        "where": outbox.where_mail_goes(settings),
    }
    return render(
        "admin/outbox.html",
        context,
        cache_control="private, no-store",
        headers={"Referrer-Policy": "no-referrer"},
    )


NO_STORE = {"Referrer-Policy": "no-referrer"}


@router.get("/admin/jobs")
async def jobs_page(
    request: Request, render: RenderDep, state: StateDep, admin: AdminDep, status: str | None = None
) -> Response:
    if status is not None and status not in JOB_STATUSES:
        raise HTTPException(400, f"status must be one of {', '.join(JOB_STATUSES)}")
    queue = state.jobs()

    def read() -> tuple[dict, list, dict]:
        return queue.counts(), queue.jobs([status] if status else None, limit=200), queue.check()

    try:
        counts, jobs, check = await run_in_threadpool(read)
    except StoreError as exc:
        raise HTTPException(503, "the job queue cannot be read now") from exc
    context = {"counts": counts, "jobs": jobs, "check": check, "status": status, "kind": queue.kind}
    return render("admin/jobs.html", context, cache_control="private, no-store", headers=NO_STORE)


@router.post("/admin/jobs/{job_id}/retry")
async def retry_job(request: Request, job_id: int, state: StateDep, admin: AdminDep) -> Response:
    form = await request.form(max_files=0, max_fields=4)
    token = form.get(CSRF_FIELD)
    if not verify_csrf(request, token if isinstance(token, str) else None):
        raise HTTPException(403, "This form has expired; reload the page and try again.")
    try:
        await run_in_threadpool(state.jobs().retry, job_id)
    except LookupError as exc:
        raise HTTPException(409, str(exc)) from exc
    return RedirectResponse("/admin/jobs", status_code=303, headers=NO_STORE)
