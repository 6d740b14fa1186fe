"""Asynchronous jobs: POST /v1/jobs answers {id, status} at once; GET /v1/jobs/{id} shows status, progress
and output links; GET /v1/jobs?status=... lists them; a callback_url gets a signed POST at the end."""

from __future__ import annotations

import json
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.web.api_errors import ApiError
from runner.web.api_store import FORMATS, JOB_STATUSES, job_view, list_jobs, media_of, new_job_id
from runner.web.api_submit import catalogue, options_from, resolve_path, submit, submit_upload
from runner.web.routes_media import DOWNLOADS, render_transcript
from runner.web.uploads import FIELD_LIMIT, Form, receive_form
from runner.web.webhooks import check_callback_url

TASKS = ("transcribe", "translate")
MAX_LIST = 1000


async def _json_fields(request: Request) -> dict:
    """A small JSON object body (a path job), its values as strings like a form's."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FIELD_LIMIT:
            raise ApiError(413, f"JSON body over {FIELD_LIMIT} bytes")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return {k: v if isinstance(v, str) or v is None else json.dumps(v) for k, v in data.items()}


def _submit_path(request: Request, fields: dict, task: str, callback: str | None) -> str:
    config, catalog = request.app.state.api, request.app.state.catalog
    real, root = resolve_path(config, fields["path"])
    media_id = catalogue(catalog, real, root)
    options = options_from(fields, task)
    return submit(catalog, request.app.state.queue, config, media_id, new_job_id(), "job", "path", str(real),
                  options, callback)


async def create(request: Request) -> Response:
    """An upload (multipart `file`) or a `path` under a --root folder; optional callback_url, task,
    language, prompt, temperature."""
    config, catalog = request.app.state.api, request.app.state.catalog
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        form = Form(fields={k: [v] for k, v in (await _json_fields(request)).items() if v is not None})
    else:
        form = await receive_form(request, config.uploads_dir, config.max_upload)
    try:
        task = form.get("task") or "transcribe"
        if task not in TASKS:
            raise ApiError(400, "task must be transcribe or translate", param="task")
        callback = check_callback_url(form.get("callback_url"), config.webhook_secret)
        if form.file is not None:
            job_id, _ = await run_in_threadpool(submit_upload, catalog, request.app.state.queue, config, form,
                                                "job", options_from(form, task), callback)
        elif form.get("path"):
            job_id = await run_in_threadpool(_submit_path, request, {k: form.get(k) for k in form.fields}, task,
                                             callback)
        else:
            raise ApiError(400, "send a file (multipart field 'file') or a 'path' under a --root folder")
    finally:
        form.discard()
    view = await run_in_threadpool(job_view, catalog, job_id)
    return JSONResponse({"id": job_id, "object": "job", "status": view["status"]}, status_code=202,
                        headers={"location": f"/v1/jobs/{job_id}"})


async def show(request: Request) -> Response:
    view = await run_in_threadpool(job_view, request.app.state.catalog, request.path_params["job_id"])
    if view is None:
        raise ApiError(404, "no such job", "job_not_found")
    return JSONResponse(view)


async def index(request: Request) -> Response:
    status = request.query_params.get("status") or None
    if status is not None and status not in JOB_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(JOB_STATUSES)}", param="status")
    limit = request.query_params.get("limit", "100")
    if not limit.isdigit() or not 0 < int(limit) <= MAX_LIST:
        raise ApiError(400, f"limit must be 1 to {MAX_LIST}", param="limit")
    jobs = await run_in_threadpool(list_jobs, request.app.state.catalog, status, int(limit))
    return JSONResponse({"object": "list", "data": jobs})


async def transcript(request: Request) -> Response:
    """A done job's transcript as srt, vtt, json or txt, rendered from the catalog."""
    fmt, catalog = request.path_params["fmt"], request.app.state.catalog
    found = await run_in_threadpool(media_of, catalog, request.path_params["job_id"])
    if found is None or fmt not in FORMATS:
        raise ApiError(404, "no such job or format", "not_found")
    if found[1] != "done":
        raise ApiError(409, f"the job is {found[1]}, not done", "job_not_done")
    rendered = await run_in_threadpool(render_transcript, catalog, found[0], fmt)
    if rendered is None:
        raise ApiError(404, "the transcript is gone (the file was transcribed again since)", "not_found")
    text, name = rendered
    return Response(text, media_type=f"{DOWNLOADS[fmt]}; charset=utf-8",
                    headers={"content-disposition": f"attachment; filename*=utf-8''{quote(name, safe='')}"})


def routes() -> list[Route]:
    return [Route("/v1/jobs", create, methods=["POST"]), Route("/v1/jobs", index, methods=["GET"]),
            Route("/v1/jobs/{job_id}", show, methods=["GET"]),
            Route("/v1/jobs/{job_id}/transcript.{fmt}", transcript, methods=["GET"])]
