"""The web console at ``/ui``: one HTML shell per page plus static assets.

The pages hold no data: the browser script (``static/console.js``) reads the same
``/api/v1`` endpoints as any client, with the same bearer token (entered once and kept in
the browser's local storage), so the console never sees more than the API allows.
Everything it needs ships in this package (uPlot is vendored): no CDN, no network.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
_SHELL = (Path(__file__).parent / "page.html").read_text()

router = APIRouter(prefix="/ui", include_in_schema=False)


def _page(request: Request, page: str, title: str, **params: str | int) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    body = (_SHELL.replace("{{title}}", html.escape(title))
            .replace("{{root}}", html.escape(root + "/ui"))
            .replace("{{api}}", html.escape(root + "/api/v1"))
            .replace("{{page}}", page)
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
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
