"""API jobs in the catalog: create one for a catalogued file, read its status and progress, list them,
and settle those whose file is done or failed (queueing their callbacks)."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import case, select

from engine.constants import SAMPLE_RATE
from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.catalog.status import Status

FINAL = (Status.done, Status.failed)
FORMATS = ("json", "srt", "vtt", "txt")
JOB_STATUSES = ("queued", "running", "done", "failed")


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def create_job(catalog: Catalog, job_id: str, media_id: int, kind: str, source: str, filename: str,
               options: dict, callback_url: str | None, requeue: bool = True) -> None:
    """Record a job for a catalogued file and (unless it is reused as it is) mark the file queued;
    a failed file starts its attempts over."""
    with catalog.write() as session:
        media = session.get(m.MediaFile, media_id, with_for_update=True)
        if requeue and media.status != Status.running:
            if media.status == Status.failed:
                media.attempts = 0
            media.status, media.error = Status.queued, None
        session.add(m.ApiJob(id=job_id, media_id=media_id, kind=kind, source=source, filename=filename,
                             options=options, status=Status.queued, callback_url=callback_url,
                             created_at=m.utcnow()))


def _effective_status():
    """The job's own status once settled, else its file's (a file that is new is as good as queued)."""
    return case((m.ApiJob.status.in_(FINAL), m.ApiJob.status),
                (m.MediaFile.status == Status.new, Status.queued.value), else_=m.MediaFile.status)


def _progress(session, media: m.MediaFile, status: str) -> dict:
    """Audio seconds decoded so far and in all: from the running transcript's resume points."""
    total = media.duration or 0.0
    if status == "done":
        return {"done_seconds": round(total, 3), "total_seconds": round(total, 3)}
    transcript = session.scalars(select(m.Transcript).where(
        m.Transcript.media_id == media.id, m.Transcript.status == Status.running)
        .order_by(m.Transcript.id.desc()).limit(1)).first()
    done = 0.0
    if transcript is not None and transcript.parts:
        end = round(total * SAMPLE_RATE)
        done = sum(((p.stop or end) if p.done else p.next_seek) - p.start for p in transcript.parts) / SAMPLE_RATE
    elif transcript is not None:
        done = transcript.next_seek / SAMPLE_RATE
    return {"done_seconds": round(min(max(done, 0.0), total), 3), "total_seconds": round(total, 3)}


def _view(session, job: m.ApiJob, media: m.MediaFile, status: str) -> dict:
    """A job as the API shows it (and as its callback carries it)."""
    view = {"id": job.id, "object": "job", "kind": job.kind, "status": status, "file": job.filename,
            "media_id": job.media_id, "created_at": int(job.created_at.timestamp()),
            "finished_at": int(job.finished_at.timestamp()) if job.finished_at else None,
            "progress": _progress(session, media, status),
            "error": job.error if status == "failed" else None,
            "options": {k: job.options.get(k) for k in ("task", "language", "initial_prompt", "temperatures")}}
    if status == "failed" and view["error"] is None:
        view["error"] = media.error
    if status == "done":
        view["outputs"] = {fmt: f"/v1/jobs/{job.id}/transcript.{fmt}" for fmt in FORMATS}
        view["page"] = f"/media/{job.media_id}"
    if job.callback_url:
        view["callback"] = _callback(session, job)
    return view


def _callback(session, job: m.ApiJob) -> dict:
    delivery = session.scalars(select(m.WebhookDelivery).where(m.WebhookDelivery.job_id == job.id)
                               .order_by(m.WebhookDelivery.id.desc()).limit(1)).first()
    if delivery is None:
        return {"url": job.callback_url, "state": "waiting", "attempts": 0, "last_error": None}
    last = (delivery.attempts_log or [{}])[-1]
    return {"url": job.callback_url, "state": delivery.state, "attempts": delivery.attempts,
            "last_error": last.get("error")}


def job_view(catalog: Catalog, job_id: str) -> dict | None:
    with catalog.read() as session:
        row = session.execute(select(m.ApiJob, m.MediaFile, _effective_status()).join(m.MediaFile)
                              .where(m.ApiJob.id == job_id)).first()
        return None if row is None else _view(session, row[0], row[1], str(row[2]))


def list_jobs(catalog: Catalog, status: str | None = None, limit: int = 100) -> list[dict]:
    """Newest first, optionally only those with one status."""
    query = select(m.ApiJob, m.MediaFile, _effective_status()).join(m.MediaFile)
    if status:
        query = query.where(_effective_status() == status)
    with catalog.read() as session:
        rows = session.execute(query.order_by(m.ApiJob.created_at.desc(), m.ApiJob.id).limit(limit)).all()
        return [_view(session, job, media, str(st)) for job, media, st in rows]


def media_of(catalog: Catalog, job_id: str) -> tuple[int, str] | None:
    """(media id, effective status) of a job, or None."""
    with catalog.read() as session:
        row = session.execute(select(m.ApiJob.media_id, _effective_status()).join(m.MediaFile)
                              .where(m.ApiJob.id == job_id)).first()
        return None if row is None else (row[0], str(row[1]))


def settle_jobs(catalog: Catalog) -> list[str]:
    """Jobs whose file is now done or failed take that status for good; each with a callback URL gets a
    pending delivery whose body (the job as GET shows it) is fixed now. Returns the settled ids."""
    ended = select(m.ApiJob, m.MediaFile).join(m.MediaFile).where(
        m.ApiJob.status.not_in(FINAL), m.MediaFile.status.in_(FINAL))
    with catalog.read() as session:  # most rounds find nothing: no write lock taken for them
        if session.execute(ended.limit(1)).first() is None:
            return []
    with catalog.write() as session:
        rows = session.execute(ended).all()
        now = m.utcnow()
        for job, media in rows:
            job.status, job.finished_at = media.status, now
            job.error = media.error if media.status == Status.failed else None
        session.flush()
        for job, media in rows:
            if job.callback_url:
                event = f"job.{job.status.value}"
                body = json.dumps({"event": event, "job": _view(session, job, media, job.status.value)},
                                  separators=(",", ":"), ensure_ascii=False)
                session.add(m.WebhookDelivery(job_id=job.id, url=job.callback_url, event=event, body=body,
                                              state="pending", attempts=0, attempts_log=[], next_attempt_at=now,
                                              created_at=now))
        return [job.id for job, _ in rows]
