"""What `run` shows while its workers go (one progress bar in audio minutes) and its summary line."""

from __future__ import annotations

import subprocess
import sys
import time

from sqlalchemy import func, select
from tqdm import tqdm

from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.catalog.status import Status


def _progress(catalog: Catalog, ids: list[int]) -> tuple[float, float]:
    """(audio seconds done, audio seconds in total) over the files this run queued."""
    if not ids:
        return 0.0, 0.0
    with catalog.read() as session:
        rows = session.execute(select(m.MediaFile.id, m.MediaFile.duration, m.MediaFile.status)
                               .where(m.MediaFile.id.in_(ids))).all()
        running = (m.Transcript.media_id.in_(ids), m.Transcript.status == Status.running)
        partial = dict(session.execute(select(m.Transcript.media_id, func.max(m.Transcript.next_seek))
                                       .where(*running).group_by(m.Transcript.media_id)).all())
        in_parts = session.execute(  # a long file decoded in parts: what each part has done, summed
            select(m.Transcript.media_id, func.sum(m.TranscriptPart.next_seek - m.TranscriptPart.start))
            .join(m.TranscriptPart.transcript).where(*running).group_by(m.Transcript.media_id)).all()
        for media_id, samples in in_parts:
            partial[media_id] = max(partial.get(media_id) or 0, samples or 0)
    total = sum(d or 0 for _, d, _ in rows)
    done = sum((d or 0) if s in (Status.done, Status.failed) else min(d or 0, partial.get(i, 0) / 16000)
               for i, d, s in rows)
    return done, total


def watch(catalog: Catalog, ids: list[int], pool: list[subprocess.Popen], tty: bool) -> None:
    """One progress bar in audio minutes until every worker has emptied the queue and exited."""
    done, total = _progress(catalog, ids)
    bar = tqdm(total=round(total / 60, 2), unit="audio min", disable=not tty or not ids, dynamic_ncols=True)
    last = 0.0
    while alive := [p for p in pool if p.poll() is None]:
        try:  # returns as soon as a worker exits (the run's last moment); the catalog is asked once a second
            alive[0].wait(timeout=max(0.05, 1.0 - (time.monotonic() - last)))
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            done, total = _progress(catalog, ids)
            bar.n = round(done / 60, 2)
            bar.refresh()
    bar.close()


def summarize(catalog: Catalog, ids: list[int], wall: float, scan=None) -> int:
    """Print the run's summary line (and each failed file); the exit code: 1 if any file failed or is
    unfinished, or the scan (a runner.queue.scanner.ScanSummary) found media it could not take (see explain)."""
    with catalog.read() as session:
        rows = session.execute(select(m.MediaFile.path, m.MediaFile.status, m.MediaFile.error, m.MediaFile.duration)
                               .where(m.MediaFile.id.in_(ids))).all() if ids else []
    done = [r for r in rows if r.status == Status.done]
    failed = [r for r in rows if r.status == Status.failed]
    unfinished = [r for r in rows if r.status in (Status.queued, Status.running)]
    audio = sum(r.duration or 0 for r in done)
    speed = f", {audio / wall:.1f}x real time" if wall > 0 and audio else ""
    print(f"done {len(done)}, failed {len(failed)}, unfinished {len(unfinished)}; "
          f"{audio / 3600:.2f} h of audio in {wall:.0f} s{speed}")
    for r in failed:
        print(f"failed: {r.path}: {r.error}", file=sys.stderr)
    left = explain(scan, bool(ids)) if scan is not None else 0
    return 1 if failed or unfinished or left else 0


def explain(scan, queued: bool) -> int:
    """Say why media files the scan found were not done by this run; returns how many were not.
    A run must never end with 0 having silently done nothing (issue 18: files still being copied)."""
    if scan.busy:
        print(f"not done: {scan.busy} file(s) still being written; run again once they are complete", file=sys.stderr)
    if scan.unchanged_failed:
        print(f"not done: {scan.unchanged_failed} file(s) failed in an earlier run ('scriptorium status' says why, "
              "'scriptorium retry' queues them again)", file=sys.stderr)
    if not queued and not scan.busy and not scan.unchanged_failed:
        if scan.unchanged_done:
            print(f"nothing new: all {scan.unchanged_done} media file(s) were transcribed before", file=sys.stderr)
        else:
            print(f"no media files found ({scan.not_media} not media, {scan.failed} unreadable)", file=sys.stderr)
    return scan.busy + scan.unchanged_failed
