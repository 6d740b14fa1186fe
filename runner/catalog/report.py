"""Status of the archive: counts by state, audio hours, throughput, ETA, workers, failures."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.catalog.reconcile import DEAD_AFTER_S
from runner.catalog.status import Status


@dataclass(frozen=True)
class FileState:
    path: str
    status: str
    error: str | None
    duration: float | None
    attempts: int
    model: str | None
    outputs_pending: bool = False  # transcript done, its files not written yet: not done


@dataclass(frozen=True)
class Report:
    counts: dict
    audio_hours_done: float
    audio_hours_left: float
    throughput: float | None  # audio seconds per wall second, over finished transcripts
    eta_seconds: float | None
    workers: list
    files: list
    max_attempts: int = 3  # the catalog's one retry policy: a file fails after this many failed attempts

    def to_dict(self) -> dict:
        return asdict(self)


def build_report(catalog: Catalog, with_files: bool = True, max_attempts: int = 3) -> Report:
    """One consistent read of the catalog. A file whose transcript is done but whose output files
    are not written counts as `outputs pending`, never as done."""
    with catalog.read() as session:
        counts = {s.value: 0 for s in Status}
        counts.update({s.value if hasattr(s, "value") else s: n for s, n in session.execute(
            select(m.MediaFile.status, func.count()).where(m.MediaFile.outputs_pending.is_(None))
            .group_by(m.MediaFile.status))})
        counts["outputs pending"] = session.scalar(select(func.count()).where(m.MediaFile.outputs_pending.is_not(None)))
        done = _sum(session, [Status.done])
        left = _sum(session, [Status.queued, Status.running, Status.new])
        audio, wall = session.execute(select(func.sum(m.Transcript.audio_seconds), func.sum(m.Transcript.wall_seconds))
                                      .where(m.Transcript.status == Status.done)).one()
        files = _files(session) if with_files else []
        workers = _workers(session)
    throughput = (audio / wall) if audio and wall else None
    eta = left / (throughput * max(1, len(workers))) if throughput and left else (0.0 if not left else None)
    return Report(counts, done / 3600, left / 3600, throughput, eta, workers, files, max_attempts)


def _sum(session, statuses) -> float:
    return float(session.scalar(select(func.coalesce(func.sum(m.MediaFile.duration), 0.0))
                                .where(m.MediaFile.status.in_(statuses))) or 0.0)


def _files(session) -> list[dict]:
    # transcripts loaded in a few IN queries, not one query per file
    rows = session.execute(select(m.MediaFile).order_by(m.MediaFile.path)
                           .options(selectinload(m.MediaFile.transcripts))).scalars()
    out = []
    for row in rows:
        model = next((t.model_name for t in row.transcripts if t.status == Status.done), None)
        status = row.status.value if hasattr(row.status, "value") else str(row.status)
        out.append(asdict(FileState(row.path, status, row.error, row.duration, row.attempts or 0, model,
                                    row.outputs_pending is not None)))
    return out


def _workers(session) -> list[dict]:
    since = m.utcnow() - dt.timedelta(seconds=DEAD_AFTER_S)
    rows = session.scalars(select(m.WorkerInfo).where(m.WorkerInfo.last_seen >= since)).all()
    return [{"name": w.name, "compute": w.compute, "host": w.host, "pid": w.pid,
             "last_seen": w.last_seen.isoformat()} for w in rows]


def format_report(report: Report) -> str:
    """Human-readable lines for `scriptorium status`."""
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items() if v)
    lines = [f"files: {counts or 'none'}",
             f"audio: {report.audio_hours_done:.2f} h done, {report.audio_hours_left:.2f} h left"]
    if report.throughput:
        eta = f", ETA {report.eta_seconds / 60:.1f} min" if report.eta_seconds else ""
        lines.append(f"speed: {report.throughput:.1f}x real time per worker{eta}")
    lines.append(f"workers alive: {len(report.workers)}" + "".join(
        f"\n  {w['name']} ({w['compute']})" for w in report.workers))
    for f in report.files:
        if f["outputs_pending"]:
            lines.append(f"outputs pending: {f['path']}" + (f": {f['error']}" if f["error"] else ""))
        elif f["status"] in ("queued", "running") and f["attempts"]:
            lines.append(f"retrying ({f['attempts']} of {report.max_attempts} attempts failed): {f['path']}: "
                         f"{f['error']}")
        elif f["status"] == "failed":
            lines.append(f"failed after {f['attempts']} attempt(s): {f['path']}: {f['error']} "
                         "('scriptorium retry' queues it again)")
        elif f["status"] == "skipped":
            lines.append(f"skipped: {f['path']}: {f['error']}")
    return "\n".join(lines)
