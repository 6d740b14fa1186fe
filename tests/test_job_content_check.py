"""A job refuses media whose bytes were replaced under the same size and mtime, and a scan requeues it.

Real speech from the shared corpus, a real SQLite catalog, the real tiny.en model on CPU; the job
function is called as a worker calls it (no Redis needed: the job only reads the catalog).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from sqlalchemy import select

from engine.options import TranscribeOptions
from runner.catalog import models as m
from runner.queue import jobs
from runner.config import Settings, sqlite_url_for
from runner.catalog.db import Catalog
from runner.catalog.fingerprint import file_hash
from runner.queue.scanner import Scanner
from runner.catalog.status import Status
from tests.test_runner_e2e import settle

OLD = "speechbrain_spk2_snt1.wav"  # "We are sure that one war is enough." 64,364 bytes, 16 kHz mono
NEW = "speechbrain_spk2_snt4.wav"  # "Mend the coat before you go out." 65,324 bytes: cut to OLD's size


def _media(catalog: Catalog) -> m.MediaFile:
    with catalog.read() as session:
        row = session.scalars(select(m.MediaFile)).one()
        session.expunge(row)
        return row


def _transcripts(catalog: Catalog, media_id: int) -> list[tuple[str, str]]:
    """(status, text of all its segments) of each transcript of the file."""
    with catalog.read() as session:
        found = session.scalars(select(m.Transcript).where(m.Transcript.media_id == media_id)).all()
        return [(t.status.value, " ".join(session.scalars(select(m.Segment.text).where(
            m.Segment.transcript_id == t.id).order_by(m.Segment.idx)).all())) for t in found]


@contextlib.contextmanager
def worker_job(tmp_path: Path, source: Path, name: str, transcriber) -> Iterator[tuple[Path, Path, Catalog]]:
    """`source` copied into an archive folder as `name`, scanned into a fresh SQLite catalog, and this
    process made a worker with `transcriber` (as `scriptorium worker` sets it up): (clip, data, catalog)."""
    folder, data = tmp_path / "archive", tmp_path / "data"
    folder.mkdir()
    clip = folder / name
    shutil.copyfile(source, clip)
    settle(clip)
    settings = Settings(data, sqlite_url_for(data), None)
    catalog = Catalog.open(settings.db_url)
    jobs.set_context(jobs.WorkerContext(settings, catalog, transcriber))
    try:
        assert Scanner(catalog).scan([folder]).new == 1
        yield clip, data, catalog
    finally:
        jobs.STOP.clear()
        jobs.set_context(None)
        catalog.close()


def test_job_refuses_media_rewritten_with_same_size_and_mtime(tmp_path, shared_audio_dir, cpu_transcriber):
    folder = tmp_path / "archive"
    with worker_job(tmp_path, shared_audio_dir / OLD, "interview.wav", cpu_transcriber) as (clip, data, catalog):
        scanned = _media(catalog)
        assert scanned.content_hash == file_hash(clip)

        # Rewrite in place: other real speech, cut to the same length, mtime restored to the nanosecond.
        before = clip.stat()
        replacement = (shared_audio_dir / NEW).read_bytes()[:before.st_size]
        assert len(replacement) == before.st_size and replacement != clip.read_bytes()
        clip.write_bytes(replacement)
        os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = clip.stat()
        assert (after.st_size, after.st_mtime) == (scanned.size, scanned.mtime)  # size/mtime cannot tell
        assert file_hash(clip) != scanned.content_hash

        result = jobs.transcribe_media(scanned.id, TranscribeOptions().to_dict())
        assert result["status"] == "failed", result
        assert "content changed after scan" in result["error"] and "sha256" in result["error"], result
        row = _media(catalog)
        assert row.status == Status.failed and row.error == result["error"], (row.status, row.error)
        assert row.errors_log[-1]["reason"] == result["error"] and row.errors_log[-1]["permanent"]
        assert _transcripts(catalog, row.id) == [], "a transcript was started for bytes the scan never saw"
        assert not list(data.glob("outputs/interview.*")), "outputs written for bytes the scan never saw"

        # The next scan sees the file as changed (not as unchanged and failed), hashes it, and queues it.
        rescan = Scanner(catalog).scan([folder])
        assert (rescan.changed, rescan.unchanged) == (1, 0), rescan.line()
        assert [media_id for media_id, _ in rescan.to_queue] == [row.id]
        row = _media(catalog)
        assert row.status == Status.queued and row.content_hash == file_hash(clip) and row.attempts == 0
        assert row.mtime == after.st_mtime

        done = jobs.transcribe_media(row.id, TranscribeOptions().to_dict())
        assert done["status"] == "done", done
        [(status, text)] = _transcripts(catalog, row.id)
        words = text.lower()
        assert status == "done" and "coat" in words and "war" not in words, text  # the new speech, not the old
        assert (data / "outputs" / "interview.srt").is_file()
