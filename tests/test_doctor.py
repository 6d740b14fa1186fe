"""`scriptorium doctor`: every kind of disagreement between catalog, queue and outputs is found, left
alone without --repair, repaired with it (saying what was done), and a second check is clean.

No model runs here: transcripts are written with the catalog's own helpers, on a SQLite catalog
and an empty database of the local Redis.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from runner.catalog import models as m
from runner.config import Settings
from runner.catalog.db import Catalog
from runner.catalog.doctor import DELETED, diagnose
from runner.commands.doctor_cmd import doctor
from runner.catalog.outputs import write_media_outputs
from runner.queue.jobqueue import claim_queue, connect, enqueue, is_pending, job_queue
from runner.queue.scanner import Scanner
from runner.catalog.status import Status
from tests.test_catalog import make_segment, start
from tests.test_faults import claim_redis_db
from tests.test_runner_e2e import copy_in

SHORT = ["LDC93S1.wav", "LJ002-0020.wav", "LJ002-0035.wav", "arctic_a0024.wav", "1089-134691-0000.flac",
         "speechbrain_spk1_snt1.wav", "speechbrain_spk2_snt1.wav", "speechbrain_example1.wav",
         "61-70968-0000.flac"]


@pytest.fixture
def redis_url():
    url, conn = claim_redis_db()
    yield url
    conn.flushdb()
    conn.close()


class Archive:
    """A scanned archive of real files; finish() gives a file a done transcript (and outputs)."""

    def __init__(self, tmp: Path, shared: Path, redis_url: str):
        self.folder = tmp / "archive"
        for name in SHORT:
            copy_in(shared / name, self.folder / ("sub" if name.endswith(".flac") else ""))
        self.data = tmp / "data"
        self.settings = Settings(self.data, f"sqlite:///{self.data / 'catalog.db'}", redis_url)
        self.catalog = Catalog.open(self.settings.db_url)
        summary = Scanner(self.catalog).scan([self.folder])
        assert summary.new == len(SHORT), summary.line()
        self.queue = job_queue(connect(redis_url), self.settings.queue_name)
        claim_queue(self.queue.connection, self.queue.name, self.catalog.identity(), "test catalog")
        with self.catalog.read() as session:
            self.ids = {Path(p).name: i for i, p in session.execute(sa.select(m.MediaFile.id, m.MediaFile.path))}

    def path(self, name: str) -> Path:
        return next(self.folder.rglob(name))

    def finish(self, name: str, outputs: bool = True) -> int:
        """A done transcript; its outputs written, or pending as a worker leaves them when the disk refuses."""
        media_id = self.ids[name]
        tid, *_ = start(self.catalog, media_id)
        self.catalog.add_window(tid, 0, 16000, [make_segment(f"words of {name}", 0.0)])
        self.catalog.finish_transcript(tid, "en", 0.99, {}, 1.0, 2.0, outputs="data")
        if outputs:
            write_media_outputs(self.catalog, self.settings, media_id)
            self.catalog.outputs_written(media_id)
        return tid

    def outputs(self, name: str) -> list[Path]:
        rel = self.path(name).parent.relative_to(self.folder)
        return sorted((self.data / "outputs" / rel).glob(Path(name).stem + ".*"))

    def status(self, name: str) -> tuple[str, str | None]:
        with self.catalog.read() as session:
            row = session.get(m.MediaFile, self.ids[name])
            return row.status.value, row.error

    def invoke(self, *args: str):
        return CliRunner().invoke(doctor, ["--data", str(self.data), "--db", self.settings.db_url,
                                           "--redis", self.settings.redis_url, *args])


@pytest.fixture
def archive(tmp_path, shared_audio_dir, redis_url):
    a = Archive(tmp_path, shared_audio_dir, redis_url)
    yield a
    a.catalog.close()


def start_ghost_job(queue, media_id: int) -> None:
    """Put a file's job in the started registry under a worker that never existed (so it is dead)."""
    enqueue(queue, media_id, {}, None, 2.0)
    worker = SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer, name="ghost.1.cpu")
    job, _ = worker.dequeue_job_and_maintain_ttl(timeout=None)
    assert job.id == f"media-{media_id}"
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)


def snapshot(a: Archive) -> tuple:
    with a.catalog.read() as session:
        media = session.execute(sa.select(
            m.MediaFile.id, m.MediaFile.status, m.MediaFile.error, m.MediaFile.size)).all()
        transcripts = session.execute(sa.select(m.Transcript.id, m.Transcript.status)).all()
    keys = sorted(k for k in a.queue.connection.keys("*") if not k.startswith(b"rq:worker") and b"claim" not in k)
    return sorted(map(tuple, media)), sorted(map(tuple, transcripts)), keys, a.queue.get_job_ids()


def test_doctor_finds_reports_and_repairs_every_kind(archive):
    a = archive
    # done and fine
    a.finish("LDC93S1.wav")
    # done, outputs deleted
    a.finish("LJ002-0020.wav")
    for p in a.outputs("LJ002-0020.wav")[:2]:
        p.unlink()
    # done, media deleted from the archive
    a.finish("LJ002-0035.wav")
    a.path("LJ002-0035.wav").unlink()
    # queued, no job (orphan)
    # arctic_a0024.wav stays queued with no job
    # running with a job started by a worker that is gone
    a.catalog.set_media_status(a.ids["1089-134691-0000.flac"], Status.running)
    start_ghost_job(a.queue, a.ids["1089-134691-0000.flac"])
    # done with a left-over running transcript
    a.finish("speechbrain_spk1_snt1.wav")
    with a.catalog.write() as session:
        session.add(m.Transcript(media_id=a.ids["speechbrain_spk1_snt1.wav"], model_name="x", model_hash="y",
                                 backend="b", compute="c", options={}, status=Status.running))
    # changed since the scan (rewritten: new size)
    changed = a.path("speechbrain_spk2_snt1.wav")
    changed.write_bytes(changed.read_bytes() + b"\0" * 3200)
    past = time.time() - 60
    os.utime(changed, (past, past))
    # done without any transcript
    a.catalog.set_media_status(a.ids["speechbrain_example1.wav"], Status.done)
    # finished transcript whose outputs could not be written (disk full)
    a.finish("61-70968-0000.flac", outputs=False)
    a.catalog.outputs_failed(a.ids["61-70968-0000.flac"], "outputs not written: No space left")
    # stray jobs: one for a media id the catalog lacks, one waiting for a done file
    enqueue(a.queue, 9999, {}, None, 1.0)
    enqueue(a.queue, a.ids["LDC93S1.wav"], {}, None, 1.0)

    before = snapshot(a)
    res = a.invoke("--json")
    assert res.exit_code == 1, res.output
    report = json.loads(res.output)
    kinds = sorted((f["kind"], Path(f["path"]).name if f["path"] else str(f["media_id"])) for f in report["findings"])
    assert kinds == sorted([
        ("missing-outputs", "LJ002-0020.wav"),
        ("deleted", "LJ002-0035.wav"),
        ("orphan", "arctic_a0024.wav"),
        ("abandoned-job", "1089-134691-0000.flac"),
        ("stale-transcript", "speechbrain_spk1_snt1.wav"),
        ("stale", "speechbrain_spk2_snt1.wav"),
        ("no-transcript", "speechbrain_example1.wav"),
        ("missing-outputs", "61-70968-0000.flac"),
        ("stray-job", "9999"),
        ("stray-job", "LDC93S1.wav"),
    ]), kinds
    assert report["repaired"] == 0 and report["remaining"] == len(kinds)
    assert snapshot(a) == before, "doctor without --repair changed something"

    res = a.invoke("--repair")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == len(kinds) + 1 and all(" -> " in ln for ln in lines[:-1]), res.output
    assert f"{len(kinds)} problems, {len(kinds)} repaired, 0 remaining" in lines[-1]

    assert len(a.outputs("LJ002-0020.wav")) == 4
    assert a.status("LJ002-0035.wav") == ("done", f"{DELETED} (transcript kept)")
    for name in ("arctic_a0024.wav", "1089-134691-0000.flac", "speechbrain_spk2_snt1.wav",
                 "speechbrain_example1.wav"):
        assert is_pending(a.queue, a.ids[name]), name
        assert a.status(name)[0] in ("queued", "running"), (name, a.status(name))
    assert a.status("61-70968-0000.flac") == ("done", None)
    assert len(a.outputs("61-70968-0000.flac")) == 4
    with a.catalog.read() as session:
        assert [t.status for t in session.get(m.MediaFile, a.ids["speechbrain_spk1_snt1.wav"]).transcripts] == \
            [Status.done]
        assert session.get(m.MediaFile, a.ids["speechbrain_spk2_snt1.wav"]).size == changed.stat().st_size
        assert session.get(m.MediaFile, a.ids["speechbrain_spk2_snt1.wav"]).scan_root == str(a.folder)
    assert "media-9999" not in a.queue.get_job_ids()
    assert not is_pending(a.queue, a.ids["LDC93S1.wav"])

    again = a.invoke()
    assert again.exit_code == 0, again.output
    assert "catalog, queue and outputs agree" in again.output


def test_doctor_marks_a_deleted_queued_file_failed_and_drops_its_job(archive):
    a = archive
    enqueue(a.queue, a.ids["arctic_a0024.wav"], {}, None, 4.0)
    a.path("arctic_a0024.wav").unlink()
    res = a.invoke("--repair")
    assert "deleted from the archive: media" in res.output and "marked failed" in res.output, res.output
    assert a.status("arctic_a0024.wav") == ("failed", DELETED)
    assert not is_pending(a.queue, a.ids["arctic_a0024.wav"])
    # the other files are queued without a job: orphans, re-queued
    assert res.exit_code == 0, res.output
    assert a.invoke().exit_code == 0


def test_doctor_refuses_to_judge_another_catalogs_queue(archive, tmp_path):
    a = archive
    other = Catalog.open(f"sqlite:///{tmp_path / 'other.db'}")
    a.queue.connection.delete(f"scriptorium:{a.queue.name}:catalog")
    claim_queue(a.queue.connection, a.queue.name, other.identity(), "the other catalog")
    enqueue(a.queue, 424242, {}, None, 1.0)
    report = diagnose(a.catalog, a.settings, a.settings.redis_url, repair=True)
    assert [f.kind for f in report.findings] == ["foreign-queue"]
    assert report.remaining and "media-424242" in a.queue.get_job_ids()  # another catalog's job: untouched
    other.close()


def test_doctor_without_redis_still_checks_files(archive):
    a = archive
    a.finish("LDC93S1.wav")
    for p in a.outputs("LDC93S1.wav"):
        p.unlink()
    settings = Settings(a.data, a.settings.db_url, "redis://127.0.0.1:1/0")
    report = diagnose(a.catalog, settings, settings.redis_url, repair=True)
    kinds = [f.kind for f in report.findings]
    assert kinds == ["queue-unreachable", "missing-outputs"], kinds
    assert report.findings[1].repaired and len(a.outputs("LDC93S1.wav")) == 4
    assert [f.kind for f in report.remaining] == ["queue-unreachable"]
