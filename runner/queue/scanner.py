"""Walk folders, recognise media by probing, and queue each new or changed file once."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sqlalchemy import delete, select, update
from tqdm import tqdm

from engine.audio import probe
from engine.errors import MediaError
from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.catalog.fingerprint import file_hash
from runner.catalog.status import Status

log = logging.getLogger(__name__)
SETTLE_SECONDS = 2.0  # a file modified more recently than this may still be being written
PROBE_THREADS = 4  # probes overlap: ffprobe runs are separate processes, PyAV releases the GIL
CHUNK = 256  # files looked up in the catalog with one query and recorded in one transaction
# Containers whose duration and codec PyAV reads exactly as ffprobe does (checked on the shared corpus);
# others (mp3, mp4/m4a: edit lists, encoder delay) differ between FFmpeg versions, so ffprobe decides them.
FAST_PROBE_FORMATS = frozenset({"wav", "flac", "ogg"})

try:  # optional (it comes with faster-whisper): probing in-process saves ffprobe's ~50 ms start-up per file
    import av
except ImportError:  # pragma: no cover - without it every file goes through ffprobe
    av = None


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
    busy_paths: list[tuple[Path, Path]] = field(default_factory=list)  # (file, its scan root), still being written
    unchanged_done: int = 0  # unchanged files already transcribed (nothing to do)
    unchanged_failed: int = 0  # unchanged files whose attempts ran out earlier (`retry` queues them)

    def line(self) -> str:
        busy = f"{self.busy} still being written" + (" (left for the next scan)" if self.busy else "")
        return (f"{self.new} new, {self.changed} changed, {self.unchanged} unchanged, {self.moved} moved, "
                f"{self.not_media} not media, {self.failed} failed, {busy}")


def _quiet_for(path: Path) -> float:
    """Seconds since the file last changed (0 if it cannot be read: _stat reports that)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return SETTLE_SECONDS


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


def _fast_probe(path: Path) -> tuple[float, str] | None:
    """(duration, codec) read in-process by PyAV for the formats in FAST_PROBE_FORMATS, else None.

    Anything unusual (no PyAV, an error, no audio, no duration, another format) returns None and
    goes through engine.audio.probe, whose ffprobe gives the same answers and the clear reasons.
    """
    if av is None:
        return None
    try:
        with av.open("file:" + os.path.abspath(path), timeout=30) as container:
            if container.format.name not in FAST_PROBE_FORMATS or container.duration is None:
                return None
            audio = container.streams.audio
            if not audio or container.duration <= 0:
                return None
            return container.duration / 1e6, audio[0].codec_context.codec.canonical_name
    except Exception:  # noqa: BLE001 - any doubt: let ffprobe decide and explain
        return None


def _inspect(path: Path) -> tuple:
    """(error, status, duration, codec, sha256) of a file: probing may run ffprobe, so it runs in threads."""
    fast = _fast_probe(path)
    if fast is not None:
        return None, Status.queued, fast[0], fast[1], file_hash(path)
    try:
        info = probe(path)
    except MediaError as exc:  # NoAudioStream included
        return exc.reason, Status.skipped, None, None, None
    return None, Status.queued, info.duration, info.codec, file_hash(path)


class Scanner:
    """Records what it finds in the catalog; decides per file: skip, queue, or record a reason."""

    def __init__(self, catalog: Catalog, model_hash: str | None = None, requeue_unfinished: bool = True):
        """`requeue_unfinished=False` leaves known, unchanged files alone whatever their state: a
        watcher's rescans must not flip files being decoded back to queued (its reconcile re-queues lost jobs)."""
        self.catalog = catalog
        self.model_hash = model_hash
        self.requeue_unfinished = requeue_unfinished

    def scan(self, roots: list[Path], progress: bool = False) -> ScanSummary:
        summary = ScanSummary()
        with ThreadPoolExecutor(PROBE_THREADS) as pool:
            for root in roots:
                root = Path(root).expanduser().resolve()
                files = [root] if root.is_file() else walk(root)
                scan_root = root.parent if root.is_file() else root
                chunk: list[Path] = []
                for path in tqdm(files, desc=f"scan {root.name}", unit=" files", disable=not progress, leave=False):
                    chunk.append(path.absolute())
                    if len(chunk) >= CHUNK:
                        self._scan_chunk(chunk, scan_root, summary, pool)
                self._scan_chunk(chunk, scan_root, summary, pool)
        return summary

    def scan_files(self, items: list[tuple[Path, Path]], summary: ScanSummary | None = None) -> ScanSummary:
        """Scan these (file, its scan root) pairs, such as files a watcher saw settle; a file still
        being written lands in summary.busy_paths."""
        summary = summary or ScanSummary()
        with ThreadPoolExecutor(PROBE_THREADS) as pool:
            for root in dict.fromkeys(r for _, r in items):
                paths = [p for p, r in items if r == root]
                for start in range(0, len(paths), CHUNK):
                    self._scan_chunk(paths[start:start + CHUNK], root, summary, pool)
        return summary

    def take_settled(self, summary: ScanSummary, wait: float, poll: float = 0.25) -> None:
        """Wait up to `wait` seconds for the files still being written (summary.busy_paths) and scan
        each as soon as it has settled (no change for SETTLE_SECONDS), into the same summary. A
        one-shot `run` needs this: a folder copied just before it would otherwise be skipped."""
        deadline = time.monotonic() + wait
        with ThreadPoolExecutor(PROBE_THREADS) as pool:
            while summary.busy_paths:
                ready = [(p, r) for p, r in summary.busy_paths if _quiet_for(p) >= SETTLE_SECONDS]
                summary.busy_paths = [item for item in summary.busy_paths if item not in ready]
                summary.busy -= len(ready)
                for root in dict.fromkeys(r for _, r in ready):  # a file busy again is put back by _stat
                    self._scan_chunk([p for p, r in ready if r == root], root, summary, pool)
                if not summary.busy_paths or time.monotonic() >= deadline:
                    return
                time.sleep(poll)

    def _scan_chunk(self, paths: list[Path], root: Path, summary: ScanSummary, pool: ThreadPoolExecutor) -> None:
        """Settle the known, unchanged files of a chunk; probe the others in the pool and record them."""
        stats = [(path, st) for path in paths if (st := self._stat(path, summary, root)) is not None]
        paths.clear()
        if not stats:
            return
        with self.catalog.read() as session:
            known = {row.path: row for row in session.scalars(
                select(m.MediaFile).where(m.MediaFile.path.in_([str(p) for p, _ in stats])))}
        pending: list = []
        requeue: list[int] = []
        for path, st in stats:
            row = known.get(str(path))
            if row is not None and row.size == st.st_size and row.mtime == st.st_mtime:
                self._known_unchanged(row, summary, requeue)
            else:  # new or changed: probe and hash in the pool
                pending.append(((path, root, st, row), pool.submit(_inspect, path)))
        if requeue:
            with self.catalog.write() as session:
                session.execute(update(m.MediaFile).where(m.MediaFile.id.in_(requeue))
                                .values(status=Status.queued), execution_options={"synchronize_session": False})
        if pending:
            self._record_all(pending, summary)

    def _record_all(self, pending: list, summary: ScanSummary) -> None:
        """Record a chunk's probed files in one transaction, in scan order."""
        inspected = [(todo, future.result()) for todo, future in pending]
        pending.clear()
        queued: list[tuple[m.MediaFile, float | None]] = []
        with self.catalog.write() as session:
            for (path, root, st, row), result in inspected:
                record = self._record(session, path, root, st, row, result, summary)
                if record is not None:
                    queued.append(record)
            session.flush()
            summary.to_queue.extend((row.id, duration) for row, duration in queued)

    def _stat(self, path: Path, summary: ScanSummary, root: Path) -> os.stat_result | None:
        """The file's stat, or None (counted) when it cannot be read or may still be being written."""
        try:
            st = path.stat()
        except OSError as exc:
            summary.failed += 1
            log.warning("%s: %s", path, exc.strerror)
            return None
        if time.time() - st.st_mtime < SETTLE_SECONDS:
            summary.busy += 1
            summary.busy_paths.append((path, root))
            return None
        return st

    def _known_unchanged(self, row: m.MediaFile, summary: ScanSummary, requeue: list[int]) -> None:
        summary.unchanged += 1
        if not self.requeue_unfinished:
            summary.unchanged_done += row.status == Status.done
        elif row.status in (Status.queued, Status.running, Status.new) or \
                (row.status == Status.done and self.model_hash and not self._done_with_model(row.id)):
            requeue.append(row.id)  # set to queued by the caller, for the whole chunk at once
            summary.to_queue.append((row.id, row.duration))
        elif row.status == Status.done:
            summary.unchanged_done += 1
        elif row.status == Status.failed:
            summary.unchanged_failed += 1

    def _done_with_model(self, media_id: int) -> bool:
        with self.catalog.read() as session:
            hashes = session.scalars(select(m.Transcript.model_hash).where(
                m.Transcript.media_id == media_id, m.Transcript.status == Status.done)).all()
        return self.model_hash in hashes

    def _record(self, session, path: Path, root: Path, st: os.stat_result, row, inspected: tuple,
                summary: ScanSummary) -> tuple[m.MediaFile, float | None] | None:
        """Record a probed file: queue it, adopt it as a moved one, or note why it is not media.

        Returns (row, duration) of a file to queue; its id is known once the session is flushed.
        """
        error, status, duration, codec, digest = inspected
        values = dict(path=str(path), scan_root=str(root), size=st.st_size, mtime=st.st_mtime,
                      content_hash=digest, duration=duration, codec=codec, status=status, error=error,
                      scanned_at=m.utcnow())
        if row is None and digest and self._adopt_moved(session, digest, values):
            summary.moved += 1
            return None
        media = self._upsert(session, row, values)
        if status == Status.skipped:
            summary.not_media += 1
            return None
        summary.changed += row is not None
        summary.new += row is None
        return media, duration

    @staticmethod
    def _adopt_moved(session, digest: str, values: dict) -> bool:
        """A done file whose old path is gone and whose bytes match moves to the new path."""
        with session.no_autoflush:  # the chunk's new rows are not done: no need to write them first
            rows = session.scalars(select(m.MediaFile).where(
                m.MediaFile.content_hash == digest, m.MediaFile.status == Status.done)).all()
        for old in rows:
            if not Path(old.path).exists():
                for key in ("path", "scan_root", "size", "mtime", "scanned_at"):
                    setattr(old, key, values[key])
                return True
        return False

    @staticmethod
    def _upsert(session, row, values: dict) -> m.MediaFile:
        if row is None:
            row = m.MediaFile(**values, attempts=0, errors_log=[])
            session.add(row)
            return row
        row = session.get(m.MediaFile, row.id)
        for key, value in values.items():
            setattr(row, key, value)
        row.attempts, row.errors_log, row.outputs_pending = 0, [], None
        # new content: a half-done transcript of the old bytes must not be resumed
        session.execute(delete(m.Transcript).where(m.Transcript.media_id == row.id,
                                                   m.Transcript.status == Status.running))
        return row
