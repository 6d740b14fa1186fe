"""The transcript page, the media bytes (range requests, scan roots only) and transcript downloads."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from engine.writers import safe_stem, write_json, write_srt, write_txt, write_vtt
from runner.web.queries import media_kind, media_page, media_row, servable_path

MAX_ID = 2**31 - 1  # media_files.id is a 32-bit integer on PostgreSQL; larger ids cannot exist
DOWNLOADS = {"srt": "application/x-subrip", "vtt": "text/vtt", "json": "application/json", "txt": "text/plain"}


def _media_id(request: Request) -> int:
    """The id in the URL; 404 for one no row can have (also keeps the database from overflowing)."""
    media_id = request.path_params["media_id"]
    if not 0 < media_id <= MAX_ID:
        raise HTTPException(404)
    return media_id


def transcript_page(request: Request) -> Response:
    page = media_page(request.app.state.catalog, _media_id(request))
    if page is None:
        raise HTTPException(404)
    return request.app.state.templates.TemplateResponse(request, "media.html", {"nav": "", "m": page,
                                                                                "formats": list(DOWNLOADS)})


def media_file(request: Request) -> Response:
    """The media's bytes, only when its real path lies inside its real scan root; Range requests honoured."""
    row = media_row(request.app.state.catalog, _media_id(request))
    path = servable_path(row.path, row.scan_root) if row is not None else None
    if path is None:
        raise HTTPException(404)
    return FileResponse(path, media_type=media_kind(row.path)[1], headers={"cache-control": "no-cache"})


def render_transcript(catalog, media_id: int, fmt: str) -> tuple[str, str] | None:
    """(text of the finished transcript in `fmt`: srt, vtt, json or txt; a download file name), or None."""
    info = catalog.transcript_info(media_id)
    if info is None:
        return None
    segments = catalog.transcript_segments(media_id)
    buf = io.StringIO()
    if fmt == "srt":
        write_srt(segments, buf)
    elif fmt == "vtt":
        write_vtt(segments, buf)
    elif fmt == "json":
        write_json(segments, info, buf)
    else:
        write_txt(segments, buf)
    return buf.getvalue(), f"{safe_stem(Path(info.path).stem)}.{fmt}"


def _render(request: Request, fmt: str) -> tuple[str, str]:
    """(text of the transcript in `fmt`, download file name); 404 without a finished transcript."""
    rendered = render_transcript(request.app.state.catalog, _media_id(request), fmt)
    if rendered is None:
        raise HTTPException(404)
    return rendered


def subtitles(request: Request) -> Response:
    text, _ = _render(request, "vtt")
    return Response(text, media_type="text/vtt; charset=utf-8")


def download(request: Request) -> Response:
    fmt = request.path_params["fmt"]
    if fmt not in DOWNLOADS:
        raise HTTPException(404)
    text, name = _render(request, fmt)
    disposition = f"attachment; filename*=utf-8''{quote(name, safe='')}"
    return Response(text, media_type=f"{DOWNLOADS[fmt]}; charset=utf-8", headers={"content-disposition": disposition})


def routes() -> list[Route]:
    return [
        Route("/media/{media_id:int}", transcript_page, name="media"),
        Route("/media/{media_id:int}/file", media_file, name="media_file"),
        Route("/media/{media_id:int}/subtitles.vtt", subtitles, name="subtitles"),
        Route("/media/{media_id:int}/transcript.{fmt}", download, name="download"),
    ]
