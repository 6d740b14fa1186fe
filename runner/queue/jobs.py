"""Jobs: module-level functions taking ids and plain data. The model lives in the worker process."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from engine.api import Transcriber
from engine.batching import FileDone, FileFailed, FilePlanned, FileTask, LanguageDetected, PartDone, WindowDone
from engine.errors import HelperError, MediaError
from engine.options import TranscribeOptions
from engine.vad_pool import VadWorkerError
from sqlalchemy import exc as sa_exc

from runner.catalog import models as m
from runner.config import Settings
from runner.catalog.db import Catalog
from runner.errors import JobInterrupted, RunnerError, Superseded
from runner.catalog.fingerprint import file_hash
from runner.catalog.outputs import write_media_outputs
from runner.catalog.status import Status

log = logging.getLogger(__name__)
CATALOG_WAIT_S = 300.0  # a job waits this long for an unreachable catalog (restart, long lock) to come back
CATALOG_RESUMES = 10  # and resumes at most this often (an error that is no outage must not loop)


class CatalogUnavailable(RunnerError):
    """The catalog stayed unreachable: not the file's fault, so it is no failed attempt of the file."""


class ContentChanged(MediaError):
    """The file's bytes differ from the scan's sha256 though its size and mtime match (rewritten in place)."""


def not_the_files_fault(exc: BaseException) -> bool:
    """A failure of this worker's own machinery (a voice-activity helper process that died or
    wedged, a window server that failed), not of the file: it costs the file no attempt."""
    return isinstance(exc, (HelperError, VadWorkerError))


def is_catalog_outage(exc: BaseException) -> bool:
    """A lost or refused database connection, or a lock held past the busy timeout."""
    return isinstance(exc, (CatalogUnavailable, sa_exc.OperationalError, sa_exc.InterfaceError)) or \
        (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)


@dataclass
class WorkerContext:
    """What a worker process loads once and every job uses."""

    settings: Settings
    catalog: Catalog
    transcriber: Transcriber
    name: str = "worker"
    server: object | None = None  # engine.window_server.WindowServer when the worker batches files


_context: WorkerContext | None = None
STOP = threading.Event()  # set when the worker is asked to stop: jobs end between windows


def set_context(context: WorkerContext | None) -> None:
    global _context
    _context = context


def has_context() -> bool:
    return _context is not None


def context() -> WorkerContext:
    if _context is None:
        raise RunnerError("no worker context: jobs run inside 'scriptorium worker'")
    return _context


def transcribe_media(media_id: int, options: dict, model: str | None = None) -> dict:
    """Transcribe one catalogued file, committing each window, then write its outputs.

    If the catalog goes away (a database restart, a lock held too long), the job waits for it
    and resumes from the last committed window instead of failing the file.
    """
    ctx = context()
    if STOP.is_set():  # an idle job thread of a stopping batch worker took the job another just gave back
        raise JobInterrupted(f"media {media_id}: worker stopping; not started")
    deadline = time.monotonic() + CATALOG_WAIT_S
    for resume in range(CATALOG_RESUMES + 1):
        try:
            return _transcribe_media(ctx, media_id, options, model)
        except Exception as exc:
            if not is_catalog_outage(exc) or isinstance(exc, CatalogUnavailable):
                raise
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("media %s: catalog unreachable (%s); waiting for it", media_id, first_line)
            if resume == CATALOG_RESUMES or not _wait_for_catalog(ctx.catalog, deadline):
                raise CatalogUnavailable(f"media {media_id}: catalog unusable: {first_line}") from exc
            log.warning("media %s: catalog is back; resuming from the last committed window", media_id)
    raise AssertionError("unreachable")


def _wait_for_catalog(catalog: Catalog, deadline: float) -> bool:
    """True once the catalog answers again; False at the deadline or when the worker is stopping."""
    delay = 0.5
    while time.monotonic() < deadline and not STOP.is_set():
        time.sleep(delay)
        try:
            with catalog.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except sa_exc.DBAPIError:
            delay = min(delay * 2, 5.0)
    return False


def _transcribe_media(ctx: WorkerContext, media_id: int, options: dict, model: str | None) -> dict:
    opts = TranscribeOptions.from_dict(options)
    media = _load_media(ctx.catalog, media_id)
    if model and model != ctx.transcriber.model.name:
        raise RunnerError(f"job wants model {model} but this worker runs {ctx.transcriber.model.name}")
    try:
        _check_unchanged(media, ctx.settings.local_path(media.path))
        if _already_done(ctx, media.id, opts):
            error = _write_outputs(ctx, media.id)
            return {"media_id": media_id, "status": "queued" if error else "done", "reused": True, "error": error}
        return _run(ctx, media, opts)
    except MediaError as exc:
        status = ctx.catalog.record_failure(media_id, exc.reason, exc.permanent, ctx.settings.max_attempts)
        if isinstance(exc, ContentChanged):  # size and mtime match: only a forgotten mtime makes a scan look again
            ctx.catalog.forget_scan(media_id)
        log.warning("media %s: %s (%s)", media_id, exc, status.value)
        return {"media_id": media_id, "status": status.value, "error": exc.reason}


def _write_outputs(ctx: WorkerContext, media_id: int) -> str | None:
    """Write the outputs of a finished transcript, then mark the file done; if the disk refuses
    (full, read-only), say so. The transcript stays done and its outputs pending, the file goes back
    to `queued` with the reason, without counting as a failed attempt: its next job (a later `run`,
    `scan`, `worker` start or `doctor --repair`) only writes the files. Returns the reason, or None."""
    try:
        write_media_outputs(ctx.catalog, ctx.settings, media_id)
    except OSError as exc:
        reason = f"outputs not written: {exc.strerror or exc}; they are written when the file is queued again"
        ctx.catalog.outputs_failed(media_id, reason)
        log.warning("media %s: %s", media_id, reason)
        return reason
    ctx.catalog.outputs_written(media_id)
    return None


def _load_media(catalog: Catalog, media_id: int) -> m.MediaFile:
    with catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
        if media is None:
            raise RunnerError(f"no media file with id {media_id} in the catalog")
        session.expunge(media)
        return media


def _already_done(ctx: WorkerContext, media_id: int, opts: TranscribeOptions) -> bool:
    """A done transcript by this model with these options exists: the job only rewrites outputs."""
    with ctx.catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
        done = [t for t in media.transcripts if t.status == Status.done]
        # outputs pending: finished, only its files are missing (a rescan of new bytes clears it)
        current = media.status == Status.done or media.outputs_pending is not None
        return current and any(
            t.model_hash == ctx.transcriber.model.sha256 and t.options == opts.to_dict() for t in done)


def _check_unchanged(media: m.MediaFile, local: str | None = None) -> None:
    """The file must still be what the scan saw: deleted or rewritten files are not transcribed.

    `local` is where this host reaches it (--path-map), by default the catalog path. The sha256 is
    compared too (0.1-0.3 s for a 3-hour 128k mp3): bytes replaced under the same size and mtime are caught.
    """
    local = local or media.path
    try:
        st = os.stat(local)
    except FileNotFoundError:
        raise MediaError(local, "file deleted after scan") from None
    if st.st_size != media.size or abs(st.st_mtime - (media.mtime or 0)) > 1e-3:
        raise MediaError(local, "file changed after scan (run 'scriptorium scan' again)")
    if not media.content_hash:  # catalogued without a hash (not media when scanned): nothing to compare
        return
    try:
        digest = file_hash(Path(local))
    except OSError as exc:
        raise MediaError(local, f"cannot read the file: {exc.strerror or exc}", permanent=False) from None
    if digest != media.content_hash:
        raise ContentChanged(local, "file content changed after scan: same size and mtime, other sha256 "
                                    "(run 'scriptorium scan' again)")


def _run(ctx: WorkerContext, media: m.MediaFile, opts: TranscribeOptions) -> dict:
    """Decode the file as a new attempt that owns its transcript; if another attempt takes the
    transcript over meanwhile (this job was released as a dead worker's), stop and leave it."""
    attempt = uuid.uuid4().hex
    try:
        return _decode(ctx, media, opts, attempt)
    except Superseded as exc:
        log.warning("media %s (%s): %s", media.id, media.path, exc)
        return {"media_id": media.id, "status": "superseded", "error": str(exc)}


def _decode(ctx: WorkerContext, media: m.MediaFile, opts: TranscribeOptions, attempt: str) -> dict:
    tr, started = ctx.transcriber, time.perf_counter()
    local = ctx.settings.local_path(media.path)  # decoded where this host mounts it
    ctx.catalog.set_media_status(media.id, Status.running)
    start = ctx.catalog.start_transcript(
        media.id, tr.model.name, tr.model.sha256, tr.backend.name, tr.backend.compute, opts.to_dict(),
        tr.info(local, 0.0, opts).engine_version, attempt=attempt, owner=ctx.name)
    tid = start.transcript_id
    task = FileTask(media.id, local, start.next_seek, start.next_window, tuple(start.prompt),
                    duration=media.duration, prompt_reset=start.prompt_reset, language=start.language,
                    language_probability=start.language_probability or 1.0)
    task = _resume_task(ctx.catalog, tid, task)
    in_parts = task.parts is not None
    events = ctx.server.stream(task, options=opts) if ctx.server is not None else tr.stream([task], opts)
    try:
        for event in events:
            if isinstance(event, LanguageDetected):  # once per file, before anything else: a resume reuses it
                ctx.catalog.set_language(tid, event.language, event.probability, attempt=attempt)
            elif isinstance(event, FilePlanned):  # a long file: stored before any of its parts' windows
                ctx.catalog.plan_parts(tid, event.spans, attempt=attempt)
                in_parts = True
            elif isinstance(event, PartDone):
                ctx.catalog.part_done(tid, event.part, attempt=attempt)
            elif isinstance(event, WindowDone):
                ctx.catalog.add_window(tid, event.window, event.next_seek, event.segments,
                                       event.part if in_parts else None, attempt=attempt,
                                       prompt=(event.previous_tokens, event.prompt_reset))
                if STOP.is_set():
                    raise JobInterrupted(f"{media.path}: worker stopping; resumes at window {event.next_window}")
            elif isinstance(event, FileFailed):
                raise event.error
            elif isinstance(event, FileDone):
                wall = time.perf_counter() - started
                ctx.catalog.finish_transcript(tid, event.language, event.language_probability, event.timings,
                                              wall, event.duration, attempt=attempt, outputs=ctx.settings.outputs)
                error = _write_outputs(ctx, media.id)
                return {"media_id": media.id, "status": "queued" if error else "done",
                        "audio_seconds": event.duration, "wall": wall, "error": error}
    finally:
        close = getattr(events, "close", None)
        if close is not None:  # a job left mid-file (stop, catalog outage) frees its decoder and batch slot now
            close()
    raise RunnerError(f"{media.path}: transcription ended without a result")


def _resume_task(catalog: Catalog, transcript_id: int, task: FileTask) -> FileTask:
    """The task of a transcript decoded in parts: its unfinished parts, each from its own resume point."""
    parts = catalog.resume_parts(transcript_id)
    if parts is None:
        return task
    return replace(task, parts=tuple(
        replace(task, start_seek=p.next_seek, start_window=p.next_window, previous_tokens=tuple(p.prompt),
                prompt_reset=p.prompt_reset, span=(p.start, p.stop), part=p.part) for p in parts))
