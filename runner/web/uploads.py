"""Multipart uploads streamed to a file under DATA/uploads with a running byte count, never held in memory.

A body announced (Content-Length) or found to be over the limit is refused with 413 and its
partial file deleted; so is a body that breaks off or does not parse.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import Request

from runner.web.api_errors import ApiError

FIELDS_LIMIT = 1024 * 1024  # the other fields and the multipart framing together, beside the file
FIELD_LIMIT = 64 * 1024  # one text field (a prompt, a URL)
FILE_FIELD = "file"


@dataclass
class Form:
    """The text fields of a form and, if it had one, its file as received (a temporary file)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file: Path | None = None
    filename: str | None = None
    size: int = 0

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else default

    def getlist(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def discard(self) -> None:
        """Delete the received file, if any (a request that fails after the upload)."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            self.file = None


def remove_stale_partials(folder: Path, older_than: float = 3600.0) -> int:
    """Delete partial uploads left by a serve that was killed mid-upload; returns how many."""
    removed = 0
    for path in folder.glob(".partial-*") if folder.is_dir() else ():
        try:
            if time.time() - path.stat().st_mtime > older_than:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload over the limit of {limit} bytes (serve --max-upload)", "upload_too_large")


class _Sink:
    """python-multipart callbacks: text fields into memory (bounded), the file part onto disk (counted)."""

    def __init__(self, folder: Path, limit: int):
        self.folder, self.limit = folder, limit
        self.form = Form()
        self.fp = None
        self.headers: dict[bytes, bytes] = {}
        self._header, self._value = b"", b""
        self.name: str | None = None
        self.text = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self.headers, self.name, self.text = {}, None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.headers[self._header.strip().lower()] = self._value.strip()
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if self.name == FILE_FIELD and filename is not None:
            if self.form.file is not None:
                raise ApiError(400, "one file per request", param=FILE_FIELD)
            self.folder.mkdir(parents=True, exist_ok=True)
            self.form.file = self.folder / f".partial-{uuid.uuid4().hex}"
            self.form.filename = os.path.basename(filename.decode("utf-8", "replace").replace("\\", "/"))
            self.fp = open(self.form.file, "xb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.fp is not None:
            self.form.size += end - start
            if self.form.size > self.limit:
                raise too_large(self.limit)
            self.fp.write(data[start:end])
            return
        self.text += data[start:end]
        if len(self.text) > FIELD_LIMIT:
            raise ApiError(400, f"form field {self.name!r} is over {FIELD_LIMIT} bytes", param=self.name)

    def _part_end(self) -> None:
        if self.fp is not None:
            self.fp.close()
            self.fp = None
        elif self.name:
            self.form.fields.setdefault(self.name, []).append(self.text.decode("utf-8", "replace"))

    def close(self, keep: bool) -> None:
        if self.fp is not None:
            self.fp.close()
            self.fp = None
        if not keep:
            self.form.discard()


def refuse_announced(request: Request, limit: int) -> None:
    """413 for a body whose Content-Length is already over the limit, before a byte of it is read."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit + FIELDS_LIMIT:
        raise too_large(limit)


async def receive_form(request: Request, folder: Path, limit: int) -> Form:
    """Read a multipart/form-data body: text fields, and the `file` part streamed to folder/.partial-*."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "send multipart/form-data (curl -F file=@talk.mp3)", "unsupported_media_type")
    refuse_announced(request, limit)
    sink = _Sink(folder, limit)
    parser = MultipartParser(params[b"boundary"], sink.callbacks())
    received, ok = 0, False
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + FIELDS_LIMIT:
                raise too_large(limit)
            parser.write(chunk)
        parser.finalize()
        ok = True
    except MultipartParseError as exc:
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    finally:
        sink.close(keep=ok)
    return sink.form
