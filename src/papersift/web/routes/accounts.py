"""Reader accounts on the web: sign-in by mailed link, sign-out, the account settings
page (sessions, API tokens, subscription, export, delete) and ``/api/v1/account``."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from papersift.web.deps import SignedInDep

router = APIRouter()
api_router = APIRouter(prefix="/api/v1", tags=["api"])


class AccountOut(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool


@api_router.get("/account", response_model=AccountOut)
async def api_account(account: SignedInDep) -> AccountOut:
    """The account of the session cookie or of ``Authorization: Bearer <token>``."""
    return AccountOut(
        id=account.id, email=account.email, name=account.name, is_admin=account.is_admin
    )
