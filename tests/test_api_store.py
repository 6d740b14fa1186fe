"""API jobs and webhook deliveries in the catalog, on SQLite and PostgreSQL: status follows the file until
settled, progress of a file in parts, listing by status, a failed file's job.failed callback, and the
delivery lease, backoff and final state."""

from __future__ import annotations

import datetime as dt
import json

from engine.constants import SAMPLE_RATE
from runner.catalog import models as m
from runner.catalog.status import Status
from runner.web.api_config import WebhookPolicy
from runner.web.api_store import create_job, job_view, list_jobs, new_job_id, settle_jobs
from runner.web.webhooks import claim_due, record_attempt, signature, verify
from tests.test_catalog import add_media, catalog, empty_db_url, pg_dsn, start  # noqa: F401

POLICY = WebhookPolicy(attempts=3, first_delay=10.0, factor=2.0)


def job_for(cat, media_id: int, callback: str | None = "http://127.0.0.1:9/hook") -> str:
    job_id = new_job_id()
    create_job(cat, job_id, media_id, "job", "upload", "tape.wav", {"task": "transcribe"}, callback)
    return job_id


def test_status_follows_the_file_until_settled(catalog):
    media_id = add_media(catalog, duration=600.0, status=Status.failed, attempts=3, errors_log=[])
    job_id = job_for(catalog, media_id)
    with catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
        assert (media.status, media.attempts) == (Status.queued, 0), "a failed file starts its attempts over"
    assert job_view(catalog, job_id)["status"] == "queued"
    catalog.set_media_status(media_id, Status.running)
    assert [j["id"] for j in list_jobs(catalog, "running")] == [job_id] and not list_jobs(catalog, "queued")
    assert settle_jobs(catalog) == []
    tid, *_ = start(catalog, media_id)
    catalog.plan_parts(tid, [(0, 300 * SAMPLE_RATE), (300 * SAMPLE_RATE, None)])
    catalog.part_done(tid, 0)
    with catalog.write() as session:
        session.get(m.TranscriptPart, (tid, 1)).next_seek = 360 * SAMPLE_RATE
    assert job_view(catalog, job_id)["progress"] == {"done_seconds": 360.0, "total_seconds": 600.0}
    catalog.finish_transcript(tid, "en", 1.0, {}, 60.0, 600.0)
    assert job_view(catalog, job_id)["status"] == "done", "done as soon as the file is, before settling"
    assert settle_jobs(catalog) == [job_id] and settle_jobs(catalog) == []
    catalog.set_media_status(media_id, Status.queued)  # the file queued again by someone else later
    view = job_view(catalog, job_id)
    assert view["status"] == "done" and view["outputs"]["srt"] == f"/v1/jobs/{job_id}/transcript.srt"
    assert [j["id"] for j in list_jobs(catalog, "done")] == [job_id]


def test_a_failed_file_settles_its_job_with_a_job_failed_callback(catalog):
    media_id = add_media(catalog, duration=5.0, status=Status.queued, attempts=0, errors_log=[])
    job_id, silent = job_for(catalog, media_id), job_for(catalog, media_id, callback=None)
    catalog.record_failure(media_id, "ffmpeg: Invalid data found when processing input", True, 3)
    assert sorted(settle_jobs(catalog)) == sorted([job_id, silent])
    [delivery] = claim_due(catalog, lease=60)
    assert delivery.job_id == job_id and delivery.event == "job.failed"
    body = json.loads(delivery.body)
    assert body["job"]["status"] == "failed" and "Invalid data" in body["job"]["error"]
    assert job_view(catalog, job_id)["error"] == body["job"]["error"]


def test_delivery_lease_backoff_and_final_state(catalog):
    media_id = add_media(catalog, duration=5.0, status=Status.queued, attempts=0, errors_log=[])
    job_id = job_for(catalog, media_id)
    catalog.set_media_status(media_id, Status.done)
    settle_jobs(catalog)
    [delivery] = claim_due(catalog, lease=60)
    assert claim_due(catalog, lease=60) == [], "a leased delivery is not handed out twice"
    before = m.utcnow()
    assert record_attempt(catalog, delivery.id, 500, "HTTP 500", POLICY) == "pending"
    with catalog.read() as session:
        row = session.get(m.WebhookDelivery, delivery.id)
        assert dt.timedelta(seconds=9) < row.next_attempt_at - before < dt.timedelta(seconds=11)
    assert claim_due(catalog, lease=60) == [], "not due before its backoff"
    assert record_attempt(catalog, delivery.id, None, "URLError: refused", POLICY) == "pending"
    assert record_attempt(catalog, delivery.id, 502, "HTTP 502", POLICY) == "failed"
    callback = job_view(catalog, job_id)["callback"]
    assert callback == {"url": "http://127.0.0.1:9/hook", "state": "failed", "attempts": 3, "last_error": "HTTP 502"}
    assert job_view(catalog, job_id)["status"] == "done", "a failed delivery does not fail the job"


def test_signature_scheme():
    body = b'{"event":"job.done"}'
    header = signature("secret", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("secret", header, body, now=1_700_000_010)
    assert not verify("secret", header, body + b" ", now=1_700_000_010)
    assert not verify("other", header, body, now=1_700_000_010)
    assert not verify("secret", header, body, now=1_700_000_000 + 301), "an old timestamp is a replay"
