"""`scriptorium doctor`: check the catalog against the queue and the output files, and repair what is safe.

Checks, in the order they are repaired:

- the queue belongs to this catalog (else nothing in it is looked at: its media ids are another's);
- jobs started by workers that are gone (released, so their files can be queued again);
- files deleted from the archive (marked: failed "file deleted from the archive"; a done file keeps
  its transcript and status, the error says it is gone);
- files whose size or mtime changed since the scan (scanned again and queued: the transcript would
  be of other content);
- running transcripts of done files (left over: deleted) and done files without a transcript (queued);
- done files whose outputs are missing, and finished transcripts whose outputs could not be written
  (disk full): written from the catalog;
- queued or running files without a live job (queued again);
- jobs for files the catalog lacks, or that are done, failed or skipped (removed from the queue).

Without repair nothing is changed. A repair is only what a worker or a scan would do anyway.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import delete, func, select

from engine.writers import FORMATS, safe_stem
from runner.catalog import models as m
from runner.config import Settings
from runner.catalog.db import Catalog
from runner.errors import RunnerError
from runner.catalog.outputs import output_dir_for, output_stem, write_media_outputs
from runner.queue.jobqueue import is_pending, job_id, queue_owner
from runner.catalog.reconcile import worker_dead
from runner.catalog.status import Status
from runner.queue.submit import resubmit

DELETED = "file deleted from the archive"
DELETED_MARKS = ("file deleted",)  # DELETED, and the worker's "file deleted after scan"
TITLES = {
    "foreign-queue": "queue of another catalog",
    "queue-unreachable": "queue unreachable",
    "abandoned-job": "abandoned job",
    "deleted": "deleted from the archive",
    "stale": "changed since the scan",
    "stale-transcript": "left-over transcript",
    "no-transcript": "done without a transcript",
    "missing-outputs": "missing outputs",
    "orphan": "file without a job",
    "stray-job": "stray job",
}


@dataclasses.dataclass
class Finding:
    """One problem: what it is, about which file, and what the repair did (or why it could not)."""

    kind: str
    detail: str
    media_id: int | None = None
    path: str | None = None
    repair: str | None = None  # what --repair did; None: not repaired
    error: str | None = None  # why the repair failed or is not safe

    @property
    def repaired(self) -> bool:
        return self.repair is not None

    def line(self) -> str:
        where = " ".join(x for x in (f"media {self.media_id}" if self.media_id is not None else "",
                                     self.path or "") if x)
        where = f"{where}: " if where else ""
        tail = f" -> {self.repair}" if self.repair else (f" (not repaired: {self.error})" if self.error else "")
        return f"{TITLES.get(self.kind, self.kind)}: {where}{self.detail}{tail}"


@dataclasses.dataclass
class DoctorReport:
    findings: list[Finding]
    files: int = 0
    jobs: int = 0
    repair: bool = False

    @property
    def remaining(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]

    def to_dict(self) -> dict:
        return {"files_checked": self.files, "jobs_checked": self.jobs, "repair": self.repair,
                "problems": len(self.findings), "repaired": len(self.findings) - len(self.remaining),
                "remaining": len(self.remaining), "findings": [dataclasses.asdict(f) for f in self.findings]}

    def summary(self) -> str:
        if not self.findings:
            return f"doctor: {self.files} files and {self.jobs} jobs checked; catalog, queue and outputs agree"
        if not self.repair:
            return (f"doctor: {self.files} files and {self.jobs} jobs checked; {len(self.findings)} problems "
                    f"(run with --repair to fix what is safe)")
        return (f"doctor: {self.files} files and {self.jobs} jobs checked; {len(self.findings)} problems, "
                f"{len(self.findings) - len(self.remaining)} repaired, {len(self.remaining)} remaining")


@dataclasses.dataclass
class _Media:
    id: int
    path: str
    scan_root: str | None
    size: int | None
    mtime: float | None
    status: Status
    error: str | None
    duration: float | None
    outputs_pending: str | None


class Doctor:
    """One check of a catalog (and its queue, when reachable); `run()` returns the report."""

    def __init__(self, catalog: Catalog, settings: Settings, queue: Queue | None, repair: bool = False,
                 queue_error: str | None = None):
        self.catalog, self.settings, self.queue, self.repair = catalog, settings, queue, repair
        self.queue_error = queue_error
        self.findings: list[Finding] = []
        self.handled: set[int] = set()  # media ids a check already took care of
        self.jobs = 0

    # --- helpers

    def _add(self, finding: Finding, fix=None) -> Finding:
        """Record a finding; with repair, run `fix()` (its return value says what was done)."""
        self.findings.append(finding)
        if self.repair and fix is not None:
            try:
                finding.repair = fix()
            except (OSError, RunnerError) as exc:
                finding.error = str(exc)
        return finding

    def _enqueue(self, media: _Media) -> str:
        if self.queue is None:
            raise RunnerError("the queue is unreachable")
        resubmit(self.catalog, self.queue, [media.id])  # with what its job asked for
        return "queued"

    def _media(self) -> list[_Media]:
        with self.catalog.read() as session:
            rows = session.execute(select(m.MediaFile.id, m.MediaFile.path, m.MediaFile.scan_root, m.MediaFile.size,
                                          m.MediaFile.mtime, m.MediaFile.status, m.MediaFile.error,
                                          m.MediaFile.duration, m.MediaFile.outputs_pending)
                                   .order_by(m.MediaFile.id)).all()
        return [_Media(*r) for r in rows]

    # --- checks

    def run(self) -> DoctorReport:
        self._check_queue_owner()
        media = self._media()
        by_id = {row.id: row for row in media}
        self._check_abandoned(by_id)
        for row in media:
            self._check_file(row)
        self._check_transcripts(by_id)
        self._check_outputs(by_id)
        self._check_orphans(media)
        self._check_jobs(by_id)
        return DoctorReport(self.findings, len(media), self.jobs, self.repair)

    def _check_queue_owner(self) -> None:
        if self.queue is None:
            self._add(Finding("queue-unreachable", self.queue_error or "no Redis to check the queue against",
                              error="queue checks skipped"))
            return
        owner = queue_owner(self.queue.connection, self.queue.name)
        mine = self.catalog.identity()
        if owner is not None and owner.get("id") != mine:
            self._add(Finding("foreign-queue", f"queue '{self.queue.name}' belongs to the catalog "
                                               f"{owner.get('catalog')} ({owner.get('id')}), not to this one ({mine})",
                              error="queue checks skipped; use this catalog's own Redis"))
            self.queue = None

    def _check_abandoned(self, by_id: dict[int, _Media]) -> None:
        """Started jobs whose worker is gone: released, so the file can be queued again."""
        if self.queue is None:
            return
        registry = StartedJobRegistry(queue=self.queue)
        for jid in registry.get_job_ids():
            self.jobs += 1
            try:
                job = Job.fetch(jid, connection=self.queue.connection, serializer=JSONSerializer)
            except Exception:  # noqa: BLE001 - gone or unreadable (not JSON): nothing can run it
                def drop(jid=jid):
                    conn = self.queue.connection
                    stale = [k for k in conn.zrange(registry.key, 0, -1) if k.decode().startswith(jid + ":")]
                    if stale:
                        conn.zrem(registry.key, *stale)
                    return "removed from the started jobs"
                self._add(Finding("abandoned-job", f"job {jid} is started but cannot be read"), drop)
                continue
            if not worker_dead(self.catalog, job.worker_name):
                continue
            media_id = (job.kwargs or {}).get("media_id")

            row = by_id.get(media_id)

            def release(job=job, row=row):
                registry.remove_executions(job)
                job.delete()
                if row is not None and row.status in (Status.queued, Status.running):
                    return f"released; {self._enqueue(row)} again"
                return "released"
            if row is not None:
                self.handled.add(row.id)
            self._add(Finding("abandoned-job", f"job {jid} was started by worker {job.worker_name}, which is gone",
                              media_id, row.path if row else None), release)

    def _check_file(self, row: _Media) -> None:
        try:
            st = os.stat(row.path)
        except FileNotFoundError:
            if (row.error or "").startswith(DELETED_MARKS):
                self.handled.add(row.id)  # marked before: nothing left to do
                return
            self.handled.add(row.id)
            self._add(Finding("deleted", f"{row.status.value} in the catalog, but the file is gone", row.id, row.path),
                      lambda: self._mark_deleted(row))
            return
        except OSError as exc:
            self._add(Finding("deleted", f"cannot stat the file: {exc.strerror}", row.id, row.path,
                              error="the archive may be unmounted"))
            self.handled.add(row.id)
            return
        if row.size == st.st_size and row.mtime is not None and abs(st.st_mtime - row.mtime) <= 1e-3:
            return
        self.handled.add(row.id)
        change = f"size {row.size} -> {st.st_size} bytes" if row.size != st.st_size else "modified"
        self._add(Finding("stale", f"{change} since the scan ({row.status.value} in the catalog)", row.id, row.path),
                  lambda: self._rescan(row))

    def _mark_deleted(self, row: _Media) -> str:
        keep = row.status in (Status.done, Status.skipped)
        status = row.status if keep else Status.failed
        error = f"{DELETED} (transcript kept)" if row.status == Status.done else DELETED
        self.catalog.set_media_status(row.id, status, error)
        self._drop_waiting_job(row.id)
        return f"marked {status.value}: {error}"

    def _drop_waiting_job(self, media_id: int) -> None:
        if self.queue is None:
            return
        try:
            job = Job.fetch(job_id(media_id), connection=self.queue.connection, serializer=JSONSerializer)
        except Exception:  # noqa: BLE001 - no job
            return
        if job.get_status(refresh=False) == "queued":
            job.delete()

    def _rescan(self, row: _Media) -> str:
        """Scan the one file again (as `scan` would) and queue it; its scan root stays."""
        from runner.queue.scanner import Scanner

        if self.queue is None:
            raise RunnerError("the queue is unreachable")
        summary = Scanner(self.catalog).scan([Path(row.path)])
        with self.catalog.write() as session:  # scanning a file as a root makes its folder the root
            media = session.get(m.MediaFile, row.id)
            if media is not None and media.path == row.path:
                media.scan_root = row.scan_root
        if summary.busy:
            raise RunnerError("the file is still being written; run doctor again later")
        resubmit(self.catalog, self.queue, [media_id for media_id, _ in summary.to_queue])
        return "scanned again and queued" if summary.to_queue else f"scanned again ({summary.line()})"

    def _check_transcripts(self, by_id: dict[int, _Media]) -> None:
        with self.catalog.read() as session:
            running = session.execute(select(m.Transcript.id, m.Transcript.media_id)
                                      .join(m.MediaFile, m.MediaFile.id == m.Transcript.media_id)
                                      .where(m.Transcript.status == Status.running,
                                             m.MediaFile.status == Status.done)).all()
            done_counts = dict(session.execute(select(m.Transcript.media_id, func.count())
                                               .where(m.Transcript.status == Status.done)
                                               .group_by(m.Transcript.media_id)).all())
        for tid, media_id in running:
            row = by_id.get(media_id)
            if row is None or row.id in self.handled or self._pending(media_id):
                continue

            def drop(tid=tid):
                with self.catalog.write() as session:
                    session.execute(delete(m.Transcript).where(m.Transcript.id == tid,
                                                               m.Transcript.status == Status.running))
                return f"running transcript {tid} deleted"
            self._add(Finding("stale-transcript", f"transcript {tid} is still running but the file is done",
                              media_id, row.path), drop)
        for row in by_id.values():
            if row.status == Status.done and row.id not in self.handled and not done_counts.get(row.id):
                self.handled.add(row.id)

                def requeue(row=row):
                    self.catalog.set_media_status(row.id, Status.queued)
                    return self._enqueue(row)
                self._add(Finding("no-transcript", "done in the catalog but has no finished transcript",
                                  row.id, row.path), requeue)

    def expected_outputs(self, row: _Media) -> list[Path]:
        target = output_dir_for(self.settings, row.path, row.scan_root)
        stem = safe_stem(output_stem(self.catalog, row.path))
        return [target / f"{stem}.{fmt}" for fmt in FORMATS]

    def _check_outputs(self, by_id: dict[int, _Media]) -> None:
        for row in by_id.values():
            if row.id in self.handled:
                continue
            pending = row.outputs_pending is not None
            if row.status != Status.done and not pending:
                continue
            try:
                missing = [p for p in self.expected_outputs(row) if not p.is_file()]
            except RunnerError as exc:
                self._add(Finding("missing-outputs", str(exc), row.id, row.path, error="unsafe output folder"))
                continue
            if pending:
                self.handled.add(row.id)
            if not missing and not pending:
                continue
            detail = (f"transcript finished, outputs not written ({row.error or 'pending'})" if pending else
                      f"{', '.join(p.name for p in missing)} missing in {missing[0].parent}")

            def write(row=row, pending=pending):
                write_media_outputs(self.catalog, self.settings, row.id)
                if pending:
                    self.catalog.outputs_written(row.id)
                    self._drop_waiting_job(row.id)
                    return "outputs written; marked done"
                return "outputs written"
            self._add(Finding("missing-outputs", detail, row.id, row.path), write)

    def _pending(self, media_id: int) -> bool:
        return self.queue is not None and is_pending(self.queue, media_id)

    def _check_orphans(self, media: list[_Media]) -> None:
        if self.queue is None:
            return
        for row in media:
            if row.id in self.handled or row.status not in (Status.queued, Status.running):
                continue
            if not is_pending(self.queue, row.id):
                self._add(Finding("orphan", f"{row.status.value} in the catalog, but no job in the queue",
                                  row.id, row.path), lambda row=row: self._enqueue(row))

    def _check_jobs(self, by_id: dict[int, _Media]) -> None:
        """Waiting jobs of files that are not meant to be transcribed (or that the catalog lacks)."""
        if self.queue is None:
            return
        for jid in self.queue.get_job_ids():
            self.jobs += 1
            try:
                media_id = int(jid.removeprefix("media-")) if jid.startswith("media-") else None
            except ValueError:
                media_id = None
            row = by_id.get(media_id) if media_id is not None else None
            if row is not None and row.status in (Status.queued, Status.running, Status.new):
                continue
            if row is not None and row.id in self.handled:
                continue
            why = (f"job {jid} is not a Scriptorium job" if media_id is None else
                   f"job {jid} waits for media {media_id}, which the catalog does not have" if row is None else
                   f"job {jid} waits although the file is {row.status.value}")

            def drop(jid=jid):
                try:
                    Job.fetch(jid, connection=self.queue.connection, serializer=JSONSerializer).delete()
                except Exception:  # noqa: BLE001 - unreadable: take it off the queue list at least
                    self.queue.remove(jid)
                return "removed from the queue"
            self._add(Finding("stray-job", why, media_id, row.path if row else None), drop)


def diagnose(catalog: Catalog, settings: Settings, redis_url: str | None, repair: bool = False) -> DoctorReport:
    """Check (and with `repair`, fix) the catalog against the queue at `redis_url` and the output files."""
    import redis

    from runner.queue.jobqueue import QueueUnreachable, connect, job_queue, shown_url

    queue, error = None, None
    if redis_url:
        try:
            queue = job_queue(connect(redis_url), settings.queue_name)
        except QueueUnreachable as exc:
            error = f"cannot reach Redis at {exc.url}: {exc.reason}"
        except (redis.RedisError, OSError) as exc:
            error = f"cannot reach Redis at {shown_url(redis_url)}: {exc}"
    return Doctor(catalog, settings, queue, repair, error).run()
