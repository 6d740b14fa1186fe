"""The backlog: counts, hours, throughput and ETA, a throughput chart, workers, failures and retry."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from runner.catalog import models as m
from runner.catalog.export import failed_to_queued
from runner.catalog.report import build_report
from runner.web.queries import chart, failed_files, throughput_series


def backlog_page(request: Request) -> Response:
    catalog = request.app.state.catalog
    report = build_report(catalog, with_files=False)
    retried = request.query_params.get("retried")
    context = {
        "nav": "backlog", "r": report, "failed": failed_files(catalog),
        "chart": chart(throughput_series(catalog, now=m.utcnow())),
        "retried": int(retried) if retried and retried.isdigit() else None,
        "enqueued": request.query_params.get("enqueued"), "queue_error": request.query_params.get("queue_error"),
        "has_queue": request.app.state.config.redis_url is not None,
    }
    return request.app.state.templates.TemplateResponse(request, "backlog.html", context)


def _same_origin(request: Request) -> bool:
    """A form post from this page, not from another site (Origin, else Sec-Fetch-Site, must agree)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.headers.get("host")
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def retry(request: Request) -> Response:
    """Failed files become queued; with a Redis queue they are enqueued too, else `run` picks them up."""
    if not _same_origin(request):
        raise HTTPException(403, "Cross-site request refused.")
    catalog, config = request.app.state.catalog, request.app.state.config
    ids = failed_to_queued(catalog)
    enqueued, error = "0", ""
    if ids and config.redis_url:
        try:
            _enqueue(catalog, config, ids)
            enqueued = "1"
        except Exception as exc:  # noqa: BLE001 - Redis down: the files stay queued in the catalog
            error = type(exc).__name__
    query = f"retried={len(ids)}&enqueued={enqueued}" + (f"&queue_error={error}" if error else "")
    return RedirectResponse(f"/backlog?{query}", status_code=303)


def _enqueue(catalog, config, ids) -> None:
    from runner.queue.jobqueue import connect, job_queue
    from runner.queue.submit import resubmit

    resubmit(catalog, job_queue(connect(config.redis_url), config.queue_name), [i for i, _ in ids])


def routes() -> list[Route]:
    return [Route("/backlog", backlog_page, name="backlog"),
            Route("/backlog/retry", retry, methods=["POST"], name="retry")]
