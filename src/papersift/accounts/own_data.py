"""What the accounts area itself holds about a reader, for the account export: the
account, its sessions and token names (never secrets), its votes and its subscription."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from papersift.accounts import voter_key
from papersift.accounts.export import register_exporter
from papersift.store import credentials
from papersift.store import subscriptions as subscriber_store
from papersift.store import users as user_store
from papersift.store import votes as vote_store


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def export_own(session: Session, user_id: int) -> dict[str, Any]:
    user = user_store.user_by_id(session, user_id)
    if user is None:
        return {}
    sub = subscriber_store.by_email(session, user.email)
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "is_admin": user.is_admin,
        "created_at": _iso(user.created_at),
        "last_seen_at": _iso(user.last_seen_at),
        "sessions": [
            {
                "created_at": _iso(s.created_at),
                "last_seen_at": _iso(s.last_seen_at),
                "expires_at": _iso(s.expires_at),
                "user_agent": s.user_agent,
            }
            for s in credentials.sessions_of(session, user_id)
        ],
        "api_tokens": [
            {
                "name": t.name,
                "prefix": t.prefix,
                "created_at": _iso(t.created_at),
                "last_used_at": _iso(t.last_used_at),
            }
            for t in credentials.tokens_of(session, user_id)
        ],
        "votes": [
            {"paper_id": pid, "at": _iso(at)}
            for pid, at in vote_store.votes_of(session, voter_key(user_id))
        ],
        "subscription": None
        if sub is None
        else {
            "email": sub.email,
            "status": sub.status,
            "topics": list(sub.topics or []),
            "collections": list(sub.collections or []),
            "frequency": sub.frequency,
            "max_papers": sub.max_papers,
            "created_at": _iso(sub.created_at),
        },
    }


register_exporter("account", export_own)
