"""Models of the JSON API: handlers return them, FastAPI serializes them, and they
document /openapi.json (schemathesis checks real responses against it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from papersift.digest.validation import MAX_PAPERS_LIMIT
from papersift.model import Paper
from papersift.web.templating import paper_url


class PaperOut(BaseModel):
    id: str
    title: str
    abstract: str
    authors: list[str]
    published: str | None = Field(None, description="ISO date")
    updated: str | None = None
    announced: str | None = Field(None, description="ISO date arXiv listed it")
    categories: list[str]
    primary_category: str | None = None
    doi: str | None = None
    arxiv_id: str | None = None
    abs_url: str | None = None
    pdf_url: str | None = None
    code_url: str | None = Field(None, description="first code link, if any")
    code_urls: list[str]
    comment: str | None = None
    first_seen: str | None = None
    url: str = Field(description="the paper's page on this server")
    votes: int


def paper_fields(paper: Paper, votes: int) -> dict[str, Any]:
    """The fields of :class:`PaperOut` for a paper: its JSON form without the internal
    ``sources``, plus its page on this server and its vote count."""
    data = paper.to_dict()
    data.pop("sources", None)
    data["url"] = paper_url(paper.id)
    data["votes"] = votes
    return data


class ScoredPaper(PaperOut):
    score: float


class RankedPaper(PaperOut):
    rank: int


class CollectionRef(BaseModel):
    name: str
    rank: int
    url: str


class PaperDetail(PaperOut):
    collections: list[CollectionRef]
    bibtex: str


class SearchOut(BaseModel):
    query: str
    mode: str
    sort: str
    total: int
    total_is_lower_bound: bool = Field(
        False,
        description="true when a broad keyword query was not counted in full: at least "
        "`total` papers match (the page shows it as 'N+'), and `next` pages through them",
    )
    offset: int
    k: int
    message: str | None = None
    results: list[ScoredPaper]
    next: str | None = Field(None, description="URL of the next page, if any")


class SimilarOut(BaseModel):
    id: str
    message: str | None = None
    results: list[ScoredPaper]


class TrendingOut(BaseModel):
    window: str
    signal: str = Field(
        "votes",
        description="what ranked the list: votes (upvotes and views), views (no votes in "
        "the window yet) or newest (no activity at all: the newest days' papers)",
    )
    offset: int
    k: int
    results: list[ScoredPaper]


class CollectionFields(BaseModel):
    """What a collection says of itself, in its summary and on its own page."""

    name: str
    origin: str
    title: str = Field(description="readable title (never a hash)")
    description: str = ""
    size: int


class CollectionSummary(CollectionFields):
    url: str


class CollectionsOut(BaseModel):
    total: int
    offset: int
    k: int
    results: list[CollectionSummary]


class CollectionOut(CollectionFields):
    offset: int
    k: int
    results: list[RankedPaper]


class VoteOut(BaseModel):
    id: str
    votes: int
    voted: bool


class SubscriptionIn(BaseModel):
    """A sign-up; the address gets a confirmation link before any digest is sent."""

    email: str = Field(max_length=320, examples=["you@example.org"])
    topics: list[str] = Field(
        default_factory=list, max_length=50, examples=[["sparse attention", "quantization"]]
    )
    collections: list[str] = Field(default_factory=list, max_length=50)
    frequency: str = Field("daily", examples=["daily"], description="daily or weekly")
    max_papers: int = Field(20, ge=1, le=MAX_PAPERS_LIMIT)
    send_empty: bool = Field(False, description="also mail when there is nothing new")


class SubscriptionAccepted(BaseModel):
    status: str = Field(examples=["pending"])
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any] | str] | None = Field(
        None, description="what was wrong: field errors as objects, or plain messages"
    )


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, all application/problem+json."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        code: {
            "description": "problem details",
            "content": {"application/problem+json": {"schema": schema}},
        }
        for code in codes
    }
