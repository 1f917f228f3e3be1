"""Response models of the JSON API: they document /openapi.json (and schemathesis checks
real responses against them); handlers build plain dicts that match."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PaperOut(BaseModel):
    id: str
    title: str
    abstract: str
    authors: list[str]
    published: str | None = Field(None, description="ISO date")
    updated: str | None = None
    categories: list[str]
    doi: str | None = None
    arxiv_id: str | None = None
    abs_url: str | None = None
    pdf_url: str | None = None
    code_url: str | None = Field(None, description="first code link, if any")
    code_urls: list[str]
    first_seen: str | None = None
    url: str = Field(description="the paper's page on this server")
    votes: int


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
    offset: int
    k: int
    results: list[ScoredPaper]


class CollectionSummary(BaseModel):
    name: str
    origin: str
    size: int
    url: str


class CollectionsOut(BaseModel):
    total: int
    offset: int
    k: int
    results: list[CollectionSummary]


class CollectionOut(BaseModel):
    name: str
    origin: str
    size: int
    offset: int
    k: int
    results: list[RankedPaper]


class VoteOut(BaseModel):
    id: str
    votes: int
    voted: bool


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict | str] | None = Field(
        None, description="what was wrong: field errors as objects, or plain messages"
    )


def problem_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for error statuses, all application/problem+json."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        code: {
            "description": "problem details",
            "content": {"application/problem+json": {"schema": schema}},
        }
        for code in codes
    }
