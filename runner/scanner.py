"""Walk folders, recognise media by probing, and queue each new or changed file once."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sqlalchemy import delete, select
from tqdm import tqdm

from engine.audio import probe
from engine.errors import MediaError
from runner import catalog as m
from runner.db import Catalog
from runner.status import Status

log = logging.getLogger(__name__)
SETTLE_SECONDS = 2.0
PROBE_THREADS = 4  # ffprobe runs are mostly waiting: overlap them  # a file modified more recently than this may still be being written


@dataclass
class ScanSummary:
    """What a scan found; `to_queue` lists (media id, duration) of files that need a job."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    moved: int = 0
    not_media: int = 0
    failed: int = 0
    busy: int = 0
    to_queue: list[tuple[int, float | None]] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.new} new, {self.changed} changed, {self.unchanged} unchanged, {self.moved} moved, "
                f"{self.not_media} not media, {self.failed} failed, {self.busy} still being written")


def walk(root: Path) -> Iterator[Path]:
    """Every regular file under root, following directory links once (no loops)."""
    seen: set[tuple[int, int]] = set()
    files_seen: set[tuple[int, int]] = set()  # a linked file is catalogued once, under its first path
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or not path.is_file():
                continue
            fst = path.stat()
            if (fst.st_dev, fst.st_ino) not in files_seen:
                files_seen.add((fst.st_dev, fst.st_ino))
                yield path


def file_hash(path: Path) -> str:
    """sha256 of the file's bytes: identifies moved and copied files."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inspect(path: Path) -> tuple:
    """(error, status, duration, codec, sha256) of a file: probing runs ffprobe, so it runs in threads."""
    try:
        info = probe(path)
    except MediaError as exc:  # NoAudioStream included
        return exc.reason, Status.skipped, None, None, None
    return None, Status.queued, info.duration, info.codec, file_hash(path)


class Scanner:
    """Records what it finds in the catalog; decides per file: skip, queue, or record a reason."""

    def __init__(self, catalog: Catalog, model_hash: str | None = None):
        self.catalog = catalog
        self.model_hash = model_hash

    def scan(self, roots: list[Path], progress: bool = False) -> ScanSummary:
        summary = ScanSummary()
        with ThreadPoolExecutor(PROBE_THREADS) as pool:
            for root in roots:
                root = Path(root).expanduser().resolve()
                files = [root] if root.is_file() else walk(root)
                scan_root = root.parent if root.is_file() else root
                pending: list = []
                for path in tqdm(files, desc=f"scan {root.name}", unit=" files", disable=not progress, leave=False):
                    todo = self._scan_file(path.absolute(), scan_root, summary)
                    if todo is not None:  # new or changed: probe and hash in the pool
                        pending.append((todo, pool.submit(_inspect, todo[0])))
                    if len(pending) >= 4 * PROBE_THREADS:
                        self._record_all(pending, summary)
                self._record_all(pending, summary)
        return summary

    def _record_all(self, pending: list, summary: ScanSummary) -> None:
        for (path, root, st, row), future in pending:
            self._record(path, root, st, row, future.result(), summary)
        pending.clear()

    def _scan_file(self, path: Path, root: Path, summary: ScanSummary):
        """Known and unchanged files are settled here; others are returned for probing."""
        try:
            st = path.stat()
        except OSError as exc:
            summary.failed += 1
            log.warning("%s: %s", path, exc.strerror)
            return None
        if time.time() - st.st_mtime < SETTLE_SECONDS:
            summary.busy += 1
            return None
        with self.catalog.read() as session:
            row = session.scalar(select(m.MediaFile).where(m.MediaFile.path == str(path)))
        if row is not None and row.size == st.st_size and row.mtime == st.st_mtime:
            self._known_unchanged(row, summary)
            return None
        return path, root, st, row

    def _known_unchanged(self, row: m.MediaFile, summary: ScanSummary) -> None:
        summary.unchanged += 1
        if row.status in (Status.queued, Status.running, Status.new) or \
                (row.status == Status.done and self.model_hash and not self._done_with_model(row.id)):
            self._set(row.id, status=Status.queued)
            summary.to_queue.append((row.id, row.duration))

    def _done_with_model(self, media_id: int) -> bool:
        with self.catalog.read() as session:
            hashes = session.scalars(select(m.Transcript.model_hash).where(
                m.Transcript.media_id == media_id, m.Transcript.status == Status.done)).all()
        return self.model_hash in hashes

    def _record(self, path: Path, root: Path, st: os.stat_result, row, inspected: tuple,
                summary: ScanSummary) -> None:
        """Record a probed file: queue it, adopt it as a moved one, or note why it is not media."""
        error, status, duration, codec, digest = inspected
        values = dict(path=str(path), scan_root=str(root), size=st.st_size, mtime=st.st_mtime,
                      content_hash=digest, duration=duration, codec=codec, status=status, error=error,
                      scanned_at=m.utcnow())
        if row is None and digest and self._adopt_moved(digest, values):
            summary.moved += 1
            return
        media_id = self._upsert(row, values)
        if status == Status.skipped:
            summary.not_media += 1
            return
        summary.changed += row is not None
        summary.new += row is None
        summary.to_queue.append((media_id, duration))

    def _adopt_moved(self, digest: str, values: dict) -> bool:
        """A done file whose old path is gone and whose bytes match moves to the new path."""
        with self.catalog.write() as session:
            rows = session.scalars(select(m.MediaFile).where(
                m.MediaFile.content_hash == digest, m.MediaFile.status == Status.done)).all()
            for old in rows:
                if not Path(old.path).exists():
                    for key in ("path", "scan_root", "size", "mtime", "scanned_at"):
                        setattr(old, key, values[key])
                    return True
        return False

    def _upsert(self, row, values: dict) -> int:
        with self.catalog.write() as session:
            if row is None:
                row = m.MediaFile(**values, attempts=0, errors_log=[])
                session.add(row)
            else:
                row = session.get(m.MediaFile, row.id)
                for key, value in values.items():
                    setattr(row, key, value)
                row.attempts, row.errors_log = 0, []
                # new content: a half-done transcript of the old bytes must not be resumed
                session.execute(delete(m.Transcript).where(m.Transcript.media_id == row.id,
                                                           m.Transcript.status == Status.running))
            session.flush()
            return row.id

    def _set(self, media_id: int, **values) -> None:
        with self.catalog.write() as session:
            row = session.get(m.MediaFile, media_id)
            for key, value in values.items():
                setattr(row, key, value)
