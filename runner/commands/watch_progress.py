"""What `watch` prints: one line per file taken and one when it is done or failed, read from the catalog."""

from __future__ import annotations

import datetime as dt
import socket
import sys
import time
from pathlib import Path

from sqlalchemy import select

from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.catalog.status import Status

POLL_S = 1.0  # the catalog is asked this often
LAG = dt.timedelta(seconds=30)  # rows are looked at this far back: a commit lands after its updated_at
MAX_LINES = 20  # a bigger batch (a first scan of an archive) is one line, not one per file


def audio_length(seconds: float | None) -> str:
    """20 s, 5.2 min, 1.5 h."""
    if seconds is None:
        return "length unknown"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def shown_name(path: str, scan_root: str | None) -> str:
    """The file's path under its watched folder (just its name if it is not under it)."""
    try:
        return str(Path(path).relative_to(scan_root)) if scan_root else Path(path).name
    except ValueError:
        return Path(path).name


class Progress:
    """Tracks the files this watch queued until the catalog says each is done or failed."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.tracked: dict[int, float] = {}  # media id -> when it was queued (monotonic)
        self.since = m.utcnow() - LAG
        self.last = 0.0
        self.ready = False

    @staticmethod
    def say(text: str, err: bool = False) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr if err else sys.stdout, flush=True)

    def queued(self, items: list[tuple[int, float | None]]) -> None:
        """Report files just queued: 'queued talk.mp3 (5.2 min)'."""
        if not items:
            return
        now = time.monotonic()
        self.tracked.update((media_id, now) for media_id, _ in items)
        if len(items) > MAX_LINES:
            self.say(f"queued {len(items)} files ({audio_length(sum(d or 0 for _, d in items))})")
            return
        for row in self._rows([i for i, _ in items]):
            self.say(f"queued {shown_name(row.path, row.scan_root)} ({audio_length(row.duration)})")

    def poll(self, worker_pids: list[int]) -> None:
        """At most once a second: say when the workers are ready, and which tracked files ended."""
        if time.monotonic() - self.last < POLL_S:
            return
        self.last = time.monotonic()
        if not self.ready:
            self._check_ready(worker_pids)
        if not self.tracked:
            return
        since, self.since = self.since, m.utcnow() - LAG
        with self.catalog.read() as session:
            rows = session.execute(self._columns().where(
                m.MediaFile.updated_at >= since, m.MediaFile.status.in_([Status.done, Status.failed]))).all()
        for row in rows:
            queued_at = self.tracked.pop(row.id, None)
            if queued_at is None:
                continue
            name = shown_name(row.path, row.scan_root)
            if row.status == Status.done:
                self.say(f"done {name} ({audio_length(row.duration)} of audio, "
                         f"{time.monotonic() - queued_at:.0f} s after it was queued)")
            else:
                self.say(f"failed {name}: {row.error}", err=True)

    def _check_ready(self, pids: list[int]) -> None:
        """Workers record their first heartbeat once the model is loaded."""
        with self.catalog.read() as session:
            seen = set(session.scalars(select(m.WorkerInfo.pid).where(
                m.WorkerInfo.host == socket.gethostname(), m.WorkerInfo.pid.in_(pids))).all())
        if pids and seen >= set(pids):
            self.ready = True
            self.say(f"ready: {len(pids)} worker(s) loaded the model")

    @staticmethod
    def _columns():
        return select(m.MediaFile.id, m.MediaFile.path, m.MediaFile.scan_root, m.MediaFile.duration,
                      m.MediaFile.status, m.MediaFile.error)

    def _rows(self, ids: list[int]) -> list:
        with self.catalog.read() as session:
            return session.execute(self._columns().where(m.MediaFile.id.in_(ids)).order_by(m.MediaFile.path)).all()
