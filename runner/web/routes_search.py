"""Home page and search: hits grouped by file, each linking to its moment on the transcript page."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runner.errors import SearchError
from runner.catalog.search import search as run_search
from runner.web.queries import filter_choices, group_hits, marked_html, recent_files

LIMIT = 100


def _day(value: str | None) -> dt.date | None:
    """A YYYY-MM-DD query value as a date; anything else is ignored."""
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.timezone.utc)


def search_page(request: Request) -> Response:
    catalog, templates = request.app.state.catalog, request.app.state.templates
    params = request.query_params
    q = params.get("q", "").strip()
    folder = params.get("folder", "").strip()
    model = params.get("model", "").strip()
    scanned_from, scanned_to = _day(params.get("from")), _day(params.get("to"))
    groups, error, n_hits = [], None, 0
    if q:
        try:
            hits = run_search(catalog, q, limit=LIMIT, folder=folder or None, model=model or None,
                              scanned_from=_midnight(scanned_from) if scanned_from else None,
                              scanned_before=_midnight(scanned_to + dt.timedelta(days=1)) if scanned_to else None)
        except SearchError as exc:
            hits, error = [], str(exc)
        n_hits = len(hits)
        groups = group_hits(hits)
    context = {
        "nav": "search", "q": q, "folder": folder, "model": model,
        "from": scanned_from.isoformat() if scanned_from else "", "to": scanned_to.isoformat() if scanned_to else "",
        "groups": groups, "n_hits": n_hits, "limit": LIMIT, "error": error, "marked": marked_html,
        "choices": filter_choices(catalog), "recent": [] if q else recent_files(catalog),
    }
    return templates.TemplateResponse(request, "search.html", context)


def routes() -> list[Route]:
    return [Route("/", search_page, name="home"), Route("/search", search_page, name="search")]
