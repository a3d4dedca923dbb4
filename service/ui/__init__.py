"""The web console at ``/ui``: one HTML shell per page plus static assets.

The pages hold no data: the browser script (``static/console.js``) reads the same
``/api/v1`` endpoints as any client, with the same bearer token (entered once and kept in
the browser's local storage), so the console never sees more than the API allows.
Everything it needs ships in this package (uPlot is vendored): no CDN, no network.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
_SHELL = (Path(__file__).parent / "page.html").read_text()


def _assets_digest() -> str:
    """A digest of every static file: asset URLs carry it, so browsers may cache them for
    good and still fetch new ones after an upgrade."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STATIC).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


ASSETS_VERSION = _assets_digest()


class _VersionedStaticFiles(StaticFiles):
    """Static files; a request naming the current asset version may be cached for a year."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result,
                      scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if f"v={ASSETS_VERSION}".encode() in scope.get("query_string", b""):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response

router = APIRouter(prefix="/ui", include_in_schema=False)


def _page(request: Request, page: str, title: str, **params: str | int) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    body = (_SHELL.replace("{{title}}", html.escape(title))
            .replace("{{root}}", html.escape(root + "/ui"))
            .replace("{{api}}", html.escape(root + "/api/v1"))
            .replace("{{page}}", page)
            .replace("{{v}}", ASSETS_VERSION)
            .replace("{{params}}", html.escape(json.dumps(params))))
    return HTMLResponse(body, headers={"Cache-Control": "no-cache"})


@router.get("")
def console_root(request: Request) -> RedirectResponse:
    return RedirectResponse(request.scope.get("root_path", "") + "/ui/")


@router.get("/", response_class=HTMLResponse)
def datasets_page(request: Request) -> HTMLResponse:
    return _page(request, "datasets", "Datasets")


@router.get("/datasets/{name}", response_class=HTMLResponse)
def dataset_page(request: Request, name: str) -> HTMLResponse:
    return _page(request, "dataset", name, name=name)


@router.get("/incidents", response_class=HTMLResponse)
def incidents_page(request: Request) -> HTMLResponse:
    return _page(request, "incidents", "Incidents")


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
def incident_page(request: Request, incident_id: int) -> HTMLResponse:
    return _page(request, "incident", f"Incident {incident_id}", id=incident_id)


def install(app: FastAPI) -> None:
    """Serve the console pages and their static assets."""
    app.include_router(router)
    app.mount("/ui/static", _VersionedStaticFiles(directory=STATIC), name="ui-static")
