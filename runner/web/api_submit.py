"""From a request to a queued job: options from the form, the file catalogued (an upload moved under
DATA/uploads, or a path under a configured root), and the job enqueued for the workers."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import delete, select, update

from engine.options import DEFAULT_TEMPERATURES, TranscribeOptions
from engine.writers import safe_stem
from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.queue.jobqueue import is_pending, job_id as queue_job_id
from runner.catalog.reconcile import worker_dead
from runner.queue.scanner import SETTLE_SECONDS, Scanner
from runner.catalog.status import Status
from runner.queue.submit import submit as queue_files
from runner.web.api_config import ApiConfig
from runner.web.api_errors import ApiError
from runner.web.api_store import create_job, new_job_id
from runner.web.uploads import Form


def require_workers(catalog: Catalog, config: ApiConfig) -> None:
    """503 unless a worker has beaten its heart lately and (on this host) still runs."""
    if not any(not worker_dead(catalog, w.name) for w in catalog.alive_workers(config.worker_max_age)):
        raise ApiError(503, "no worker is running: start `scriptorium worker` with this catalog and queue, "
                            "or `scriptorium serve --workers N`", "no_workers")


def options_from(form: Form | dict, task: str) -> TranscribeOptions:
    """OpenAI's fields as the engine's options: temperature 0 (or none) keeps Whisper's fallback ladder,
    any other value samples at that one temperature."""
    get = form.get
    try:
        temperature = float(get("temperature") or 0)
    except (TypeError, ValueError):
        raise ApiError(400, "temperature must be a number", param="temperature") from None
    if not 0 <= temperature <= 1:
        raise ApiError(400, "temperature must be between 0 and 1", param="temperature")
    try:
        return TranscribeOptions(language=(get("language") or None), task=task, initial_prompt=(get("prompt") or None),
                                 temperatures=DEFAULT_TEMPERATURES if temperature == 0 else (temperature,))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def place_upload(form: Form, uploads: Path, job_id: str) -> Path:
    """Move the received file to uploads/<job id>-<name>: unique, so its outputs never meet another's."""
    name = Path(form.filename or "upload")
    suffix = name.suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", name.suffix) else ""
    final = uploads / f"{job_id}-{safe_stem(name.stem)}{suffix}"
    os.replace(form.file, final)
    form.file = None
    settled = time.time() - SETTLE_SECONDS - 1  # complete: the scanner need not wait for more writes
    os.utime(final, (settled, settled))
    return final


def resolve_path(config: ApiConfig, path: str) -> tuple[Path, Path]:
    """(real file, its configured root) for a `path` job; 403 outside every root, 404 for no file."""
    if not config.roots:
        raise ApiError(403, "path jobs are off: start serve with --root DIR", "path_not_allowed", "path")
    real = Path(os.path.realpath(path))
    root = next((r for r in (Path(os.path.realpath(r)) for r in config.roots) if real.is_relative_to(r)), None)
    if root is None:
        raise ApiError(403, "path is not under a folder given to serve --root", "path_not_allowed", "path")
    if not real.is_file():
        raise ApiError(404, "no such file under the root", "file_not_found", "path")
    return real, root


def catalogue(catalog: Catalog, path: Path, root: Path | None = None, upload: bool = False) -> int:
    """Scan one file into the catalog; its media id. Not media: 400 (an upload is deleted with its row)."""
    summary = Scanner(catalog).scan([path])
    if summary.busy:
        raise ApiError(409, "the file is still being written; try again in a few seconds", "file_busy", "path")
    with catalog.write() as session:
        media = session.scalars(select(m.MediaFile).where(m.MediaFile.path == str(path))).first()
        if media is None:
            raise ApiError(400, "the file could not be read", "unreadable_file")
        if media.status == Status.skipped:
            reason = media.error or "not media"
            if upload:
                session.execute(delete(m.MediaFile).where(m.MediaFile.id == media.id))
                path.unlink(missing_ok=True)
            raise ApiError(400, f"not an audio or video file: {reason}", "invalid_file", "file")
        if root is not None and media.scan_root == str(path.parent) and root != path.parent:
            # a path job's file mirrors its tree under DATA/outputs as a scan of the root would
            session.execute(update(m.MediaFile).where(m.MediaFile.id == media.id).values(scan_root=str(root)))
        return media.id


def _reusable(catalog: Catalog, media_id: int, options: dict) -> bool:
    """The file is done, by a transcript made with exactly these options: nothing to decode again."""
    with catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
        return media.status == Status.done and any(
            t.status == Status.done and t.options == options for t in media.transcripts)


def _check_pending(queue: Queue, media_id: int, options: dict) -> None:
    """409 when the file's job already waits with other options (one job per file in the queue)."""
    if not is_pending(queue, media_id):
        return
    try:
        pending = Job.fetch(queue_job_id(media_id), connection=queue.connection, serializer=JSONSerializer)
    except Exception:  # noqa: BLE001 - gone meanwhile: nothing to clash with
        return
    if (pending.kwargs or {}).get("options") != options:
        raise ApiError(409, "this file is already queued with other options; submit again once it is done",
                       "file_busy")


def submit(catalog: Catalog, queue: Queue, config: ApiConfig, media_id: int, job_id: str, kind: str,
           source: str, filename: str, options: TranscribeOptions, callback_url: str | None = None) -> str:
    """Record the job and enqueue its file with the request's options (unless already done with them)."""
    opts = options.to_dict()
    reuse = _reusable(catalog, media_id, opts)
    if not reuse:
        _check_pending(queue, media_id, opts)
    create_job(catalog, job_id, media_id, kind, source, filename, opts, callback_url, requeue=not reuse)
    if not reuse:
        with catalog.read() as session:
            duration = session.get(m.MediaFile, media_id).duration
        queue_files(catalog, queue, [(media_id, duration)], opts, config.model)  # the request is recorded
    return job_id


def submit_upload(catalog: Catalog, queue: Queue, config: ApiConfig, form: Form, kind: str,
                  options: TranscribeOptions, callback_url: str | None = None) -> tuple[str, int]:
    """An uploaded file, moved under DATA/uploads, catalogued and queued: (job id, media id)."""
    if form.file is None:
        raise ApiError(400, "no file in the form (field 'file')", "missing_file", "file")
    job_id = new_job_id()
    path = place_upload(form, config.uploads_dir, job_id)
    media_id = catalogue(catalog, path, upload=True)
    submit(catalog, queue, config, media_id, job_id, kind, "upload", form.filename or path.name, options,
           callback_url)
    return job_id, media_id
