"""OpenAI's audio API on the queue: POST /v1/audio/transcriptions and /v1/audio/translations.

The upload is catalogued and queued like any file; the request waits (polling the catalog, at most
ApiConfig.wait_timeout) for the workers' transcript and answers in OpenAI's shapes, so the official
`openai` client works with base_url pointing here. Outputs come from engine.writers.
"""

from __future__ import annotations

import asyncio
import io
import math
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.writers import write_srt, write_txt, write_vtt
from runner.catalog import models as m
from runner.web.api_errors import ApiError
from runner.web.api_store import media_of
from runner.web.api_submit import options_from, require_workers, submit_upload
from runner.web.uploads import receive_form, refuse_announced

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


def _granularities(form) -> set[str]:
    asked = set(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")) or {"segment"}
    if not asked <= set(GRANULARITIES):
        raise ApiError(400, "timestamp_granularities[] takes segment and word", param="timestamp_granularities")
    return asked


async def wait_for(request: Request, job_id: str) -> tuple[int, str]:
    """(media id, done or failed) once the job ends; 504 naming the job after the configured wait."""
    config, catalog = request.app.state.api, request.app.state.catalog
    deadline = time.monotonic() + config.wait_timeout
    while True:
        found = await run_in_threadpool(media_of, catalog, job_id)
        if found is None:
            raise ApiError(404, "the job's file left the catalog", "job_not_found", job_id=job_id)
        media_id, status = found
        if status in ("done", "failed"):
            return media_id, status
        if await request.is_disconnected():
            raise ApiError(499, "the client left; the job goes on", "client_closed", job_id=job_id)
        if time.monotonic() >= deadline:
            raise ApiError(504, f"no transcript after {config.wait_timeout:g} s; the job goes on: "
                                f"GET /v1/jobs/{job_id}", "job_pending", job_id=job_id)
        await asyncio.sleep(config.poll)


def _failure(catalog, media_id: int) -> ApiError:
    """A permanent failure (the file cannot be decoded) is the request's fault: 400; any other 500."""
    with catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
        last = (media.errors_log or [{}])[-1]
        reason = media.error or "transcription failed"
    return ApiError(400 if last.get("permanent") else 500, reason, "transcription_failed")


def _text(segments) -> str:
    return " ".join(t for t in (" ".join(s.text.split()) for s in segments) if t)


def _segment(s) -> dict:
    return {"id": s.id, "seek": s.seek, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
            "tokens": list(s.tokens), "temperature": s.temperature, "avg_logprob": round(s.avg_logprob, 4),
            "compression_ratio": round(s.compression_ratio, 4), "no_speech_prob": round(s.no_speech_prob, 4)}


def render(catalog, media_id: int, fmt: str, granularities: set[str], task: str) -> Response:
    """The finished transcript in OpenAI's response format."""
    segments, info = catalog.transcript_segments(media_id), catalog.transcript_info(media_id)
    usage = {"type": "duration", "seconds": math.ceil(info.duration)}
    if fmt == "json":
        return JSONResponse({"text": _text(segments), "usage": usage})
    if fmt == "verbose_json":
        body = {"task": task, "language": info.language, "duration": round(info.duration, 3),
                "text": _text(segments), "usage": usage}
        if "segment" in granularities:
            body["segments"] = [_segment(s) for s in segments]
        if "word" in granularities:
            body["words"] = [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                             for s in segments for w in s.words]
        return JSONResponse(body)
    buf = io.StringIO()
    {"text": write_txt, "srt": write_srt, "vtt": write_vtt}[fmt](segments, buf)
    return PlainTextResponse(buf.getvalue(), media_type=MEDIA_TYPES[fmt])


async def _audio(request: Request, task: str, kind: str) -> Response:
    """Check for a worker, receive the upload, queue it, wait for it, answer in the asked format."""
    config, catalog = request.app.state.api, request.app.state.catalog
    refuse_announced(request, config.max_upload)
    await run_in_threadpool(require_workers, catalog, config)
    form = await receive_form(request, config.uploads_dir, config.max_upload)
    try:
        fmt = form.get("response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                           param="response_format")
        if (form.get("stream") or "false").lower() == "true":
            raise ApiError(400, "streaming is not supported; use POST /v1/jobs for long files", param="stream")
        granularities = _granularities(form)
        options = options_from(form, task)
        job_id, _ = await run_in_threadpool(submit_upload, catalog, request.app.state.queue, config, form, kind,
                                            options)
    finally:
        form.discard()
    media_id, status = await wait_for(request, job_id)
    if status == "failed":
        raise await run_in_threadpool(_failure, catalog, media_id)
    return await run_in_threadpool(render, catalog, media_id, fmt, granularities, task)


async def transcriptions(request: Request) -> Response:
    return await _audio(request, "transcribe", "transcription")


async def translations(request: Request) -> Response:
    """English text of the speech (task=translate; an English-only model transcribes English as it is)."""
    return await _audio(request, "translate", "translation")


def routes() -> list[Route]:
    return [Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/audio/translations", translations, methods=["POST"])]
