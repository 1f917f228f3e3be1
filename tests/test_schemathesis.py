"""Property-based API testing: schemathesis generates requests from the app's own
``/openapi.json`` and checks every answer (no 5xx, status codes, content types and bodies
as documented).

It runs on a private copy of the web test home (seeds + hand-made papers + search index),
so the votes and sign-ups it makes never reach the shared ``live_server`` that other test
modules count votes on; confirmation mails go to a loopback SMTP server. The app is called
in-process over ASGI, which keeps the run short and needs no port; one more pass sends
every operation's cases over HTTP to the same app under a real uvicorn on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import serve_in_thread
from .digest_support import private_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with private_app(web_home, tmp_path_factory.mktemp("schemathesis") / "home") as app:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def fresh_api_schema(web_home: Path, tmp_path: Path) -> Iterator:
    """The schema of an app of its own: for answers that the module's generated sign-ups
    would otherwise turn into 429s once they have used up the sign-up budget."""
    with private_app(web_home, tmp_path / "home") as app:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


# Every operation of /openapi.json; test_every_operation_is_covered fails when one is added
# without being listed here.
OPERATIONS = [
    "GET /api/v1/search",
    "GET /api/v1/papers/{paper_id}",
    "GET /api/v1/papers/{paper_id}/similar",
    "POST /api/v1/papers/{paper_id}/upvote",
    "DELETE /api/v1/papers/{paper_id}/upvote",
    "GET /api/v1/trending",
    "GET /api/v1/daily",
    "GET /api/v1/daily/week",
    "GET /api/v1/daily/month",
    "GET /api/v1/collections",
    "GET /api/v1/collections/{name}",
    "POST /api/v1/subscriptions",
    "GET /api/v1/account",
    "GET /api/v1/account/export",
]
# Generated ids almost never exist; these make the paper endpoints answer 200 as well.
KNOWN = {"paper_id": "hep-th/9901001"}


def test_every_operation_is_covered(api_schema) -> None:
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)


# Their only input is a free-form path string: no request to them can break the schema.
NO_INVALID_INPUT = {
    "GET /api/v1/papers/{paper_id}",
    "DELETE /api/v1/papers/{paper_id}/upvote",
    "GET /api/v1/account",  # no input at all
    "GET /api/v1/account/export",
}


# The library's operations (web/routes/library_api.py): without an account they answer 401.
OPERATIONS += [
    "GET /api/v1/library/tags",
    "GET /api/v1/library",
    "POST /api/v1/library/papers",
    "DELETE /api/v1/library/papers/{paper_id}",
    "GET /api/v1/library/notes/{paper_id}",
    "PUT /api/v1/library/notes/{paper_id}",
    "POST /api/v1/library/import",
    "GET /api/v1/library/export",
    "GET /api/v1/library/searches",
    "POST /api/v1/library/searches",
    "DELETE /api/v1/library/searches/{search_id}",
]
NO_INVALID_INPUT |= {
    "GET /api/v1/library/tags",
    "GET /api/v1/library/searches",
    "GET /api/v1/library/notes/{paper_id}",
}


# Comments and recommendations (web/routes/comments.py, foryou.py): all but reading a
# paper's comments need an account (401 here).
OPERATIONS += [
    "GET /api/v1/comments",
    "POST /api/v1/comments",
    "PATCH /api/v1/comments/{comment_id}",
    "DELETE /api/v1/comments/{comment_id}",
    "GET /api/v1/recommendations",
    "POST /api/v1/recommendations/feedback",
    "DELETE /api/v1/recommendations/feedback",
]


@pytest.mark.parametrize("label", OPERATIONS)
def test_valid_requests(api_schema, label: str) -> None:
    run(api_schema.find_operation_by_label(label).as_strategy(GenerationMode.POSITIVE))


@pytest.mark.parametrize("label", [op for op in OPERATIONS if op not in NO_INVALID_INPUT])
def test_invalid_requests_get_a_documented_4xx(api_schema, label: str) -> None:
    run(api_schema.find_operation_by_label(label).as_strategy(GenerationMode.NEGATIVE))


@pytest.mark.parametrize("label", [op for op in OPERATIONS if "{paper_id}" in op])
def test_paper_operation_on_a_real_paper(api_schema, label: str) -> None:
    operation = api_schema.find_operation_by_label(label)
    statuses = run(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=KNOWN))
    # a vote needs the visitor cookie of an earlier page view, which a fuzzer has not got
    expected = {200, 422} | ({403} if label.endswith("/upvote") else set())
    if "/library/" in label:  # a reader's library: the fuzzer has no account
        expected = {401}
    assert statuses & expected, statuses


def test_collection_operation_on_a_real_collection(api_schema) -> None:
    from starlette.testclient import TestClient

    with TestClient(api_schema.app) as client:
        name = client.get("/api/v1/collections").json()["results"][0]["name"]
    operation = api_schema.find_operation_by_label("GET /api/v1/collections/{name}")
    statuses = run(operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"name": name}))
    assert 200 in statuses, statuses


def test_a_valid_subscription_is_accepted_as_documented(fresh_api_schema) -> None:
    body = {"email": "reader@example.org", "topics": ["graph neural networks"]}
    assert validated(fresh_api_schema, "POST /api/v1/subscriptions", body=body) == 202


@pytest.fixture(scope="module")
def http_schema(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The schema as a client sees it: fetched over HTTP from a real server."""
    with (
        private_app(web_home, tmp_path_factory.mktemp("schemathesis-http") / "home") as app,
        serve_in_thread(app) as url,
    ):
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


# uvicorn's HTTP parser refuses a request line of more than about 64 KB with a plain-text
# 400 before any application code runs (nginx's default is 8 KB). The schema allows a
# 10,000-character query, which percent-encodes to up to 120 KB: such cases must get that
# 400, not a crash or a hang; shorter ones must be answered as documented.
TRANSPORT_LIMIT_FROM = 60_000  # bytes of path and query string


def _target_bytes(case) -> int:
    return len(case.formatted_path) + len(urlencode(case.query or {}, doseq=True))


@pytest.mark.parametrize("label", OPERATIONS)
def test_over_http_valid_and_invalid_requests(http_schema, label: str) -> None:
    operation = http_schema.find_operation_by_label(label)
    run(operation.as_strategy(GenerationMode.POSITIVE), examples=10, over_http=True)
    if label not in NO_INVALID_INPUT:
        run(operation.as_strategy(GenerationMode.NEGATIVE), examples=10, over_http=True)


def run(strategy, examples: int = 25, over_http: bool = False) -> set[int]:
    """Run one operation's cases; the statuses seen."""

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are shown as found
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case) -> None:
        response = case.call()
        refused = (
            over_http
            and _target_bytes(case) > TRANSPORT_LIMIT_FROM
            and response.status_code == 400
            and response.headers.get("content-type", [""])[0].startswith("text/plain")
        )
        if not refused:  # (a refused request never reached the app: nothing to validate)
            case.validate_response(response, checks=CHECKS)
        assert response.status_code < 500, response.text[:500]  # explicitly, whatever the config
        statuses.add(response.status_code)

    statuses: set[int] = set()
    check()
    assert statuses, "no request was made"
    return statuses


# --- regressions: answers the run found outside the documented schema -------------------


def validated(api_schema, label: str, **request) -> int:
    case = api_schema.find_operation_by_label(label).Case(**request)
    response = case.call_and_validate(checks=CHECKS)
    return response.status_code


def test_trending_past_its_end_is_a_documented_400(api_schema) -> None:
    query = {"window": "day", "k": 100, "page": 493}
    assert validated(api_schema, "GET /api/v1/trending", query=query) == 400


def test_subscription_problem_with_plain_messages_matches_the_schema(fresh_api_schema) -> None:
    body = {"email": "0.1.0"}
    assert validated(fresh_api_schema, "POST /api/v1/subscriptions", body=body) == 422


def test_unparsable_subscription_body_is_a_documented_400(api_schema) -> None:
    """schemathesis always sends valid JSON for this case, so the broken body goes by hand
    and only the answer is checked against the schema."""
    from starlette.testclient import TestClient

    case = api_schema.find_operation_by_label("POST /api/v1/subscriptions").Case()
    with TestClient(api_schema.app) as client:
        response = client.post(
            "/api/v1/subscriptions",
            content=b"\xff\xfe{",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    case.validate_response(response, checks=CHECKS)
