"""/docs: Swagger UI served from the local ``swagger-ui-bundle-v2`` package, so the API
docs work offline and under the strict CSP (its start-up script is a file in /static, not
inline; only /docs additionally allows data: images, which Swagger UI uses for icons)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response

from papersift.web.deps import RenderDep, StateDep

router = APIRouter(include_in_schema=False)


def swagger_dir() -> Path | None:
    """Where the Swagger UI assets are, or None when the package is not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(swagger_ui_path)
    return path if (path / "swagger-ui-bundle.js").is_file() else None


@router.get("/docs")
def docs(render: RenderDep, state: StateDep) -> Response:
    return render("docs.html", {"swagger": state.swagger_available})
