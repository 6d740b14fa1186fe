"""/v1/jobs with callbacks: five uploads polled to done and five signed callbacks that verify; a receiver
that fails twice gets it on the third try; an unreachable one is recorded as failed delivery while the
transcript stays done; path jobs only under --root; a 504 names the job to poll; a callback pending when
serve stops is delivered by the next serve.

A real `scriptorium worker` process, a real Redis database, a SQLite catalog, the app on uvicorn in a
thread, and an http.server receiver; signatures are recomputed here from the documented scheme.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
import srt
from sqlalchemy import select

from bench.wer import word_errors
from runner.catalog import models as m
from runner.config import sqlite_url_for
from runner.catalog.db import Catalog
from runner.web.api_config import ApiConfig, WebhookPolicy
from runner.web.app import create_app
from tests.test_api_auth import REPO, env, free_port, serving
from tests.test_faults import claim_redis_db

pytestmark = pytest.mark.slow
SECRET = "whsec-test-0123456789"
CLIPS = ("LDC93S1.wav", "arctic_a0024.wav", "speechbrain_spk1_snt1.wav", "1089-134686-0001.flac",
         "61-70968-0000.flac")


class Receiver:
    """A local HTTP server recording every callback; `plan[path]` lists the statuses to answer in turn."""

    def __init__(self):
        self.calls: list[dict] = []
        self.plan: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.calls.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                           "at": time.time()})
                    answers = receiver.plan.get(self.path) or [200]
                    status = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict]:
        with self.lock:
            return [c for c in self.calls if c["path"] == path]

    def wait(self, path: str, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.to(path)) < count:
            assert time.monotonic() < deadline, f"{len(self.to(path))} of {count} callbacks to {path}"
            time.sleep(0.05)
        return self.to(path)


@dataclasses.dataclass
class Rig:
    data: object
    root: object
    catalog: Catalog
    redis_url: str
    config: ApiConfig
    receiver: Receiver
    url: str = ""  # of the app serving the current test


@pytest.fixture(scope="module")
def rig(tmp_path_factory, shared_audio_dir):
    """The API over a fresh catalog, one batching worker process on the same catalog and queue, a receiver."""
    redis_url, conn = claim_redis_db()
    base = tmp_path_factory.mktemp("jobs")
    data, root = base / "data", base / "archive"
    (root / "talks").mkdir(parents=True)
    for name in CLIPS[:2]:
        shutil.copy2(shared_audio_dir / name, root / "talks" / name)
    catalog = Catalog.open(sqlite_url_for(data))
    worker = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "worker", "--data", str(data), "--db",
                               sqlite_url_for(data), "--redis", redis_url, "--threads", "2", "--batch", "8"],
                              cwd=REPO, env=env(), stdin=subprocess.DEVNULL)
    config = ApiConfig(data, redis_url, webhook_secret=SECRET, roots=(root,), monitor_every=0.1,
                       webhooks=WebhookPolicy(attempts=3, first_delay=0.3, factor=2.0, timeout=2.0))
    try:
        deadline = time.monotonic() + 120
        while not catalog.alive_workers(30):
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not come up"
            time.sleep(0.2)
        yield Rig(data, root, catalog, redis_url, config, Receiver())
    finally:
        worker.terminate()
        worker.wait(60)
        catalog.close()
        conn.flushdb()
        conn.close()


@pytest.fixture
def served(rig):
    """The app serving one test (the restart test runs its own, so no other serve delivers its callback)."""
    with serving(create_app(rig.catalog, rig.redis_url, api=rig.config)) as url:
        rig.url = url
        yield rig
    rig.url = ""


def verified(call: dict, max_age: float = 120) -> dict:
    """The callback's JSON once its signature checks out: HMAC-SHA256(secret, f"{t}.{raw body}")."""
    fields = dict(part.split("=", 1) for part in call["headers"]["X-Scriptorium-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + call["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"]), "signature does not verify"
    assert abs(call["at"] - int(fields["t"])) < max_age
    return json.loads(call["body"])


def submit(rig: Rig, path, callback: str | None = None, **fields) -> str:
    data = {**fields, **({"callback_url": callback} if callback else {})}
    with open(path, "rb") as fh:
        res = httpx.post(f"{rig.url}/v1/jobs", files={"file": (path.name, fh)}, data=data)
    assert res.status_code == 202, res.text
    assert res.json()["status"] in ("queued", "running", "done")
    return res.json()["id"]


def poll_done(rig: Rig, job_id: str, timeout: float = 120) -> tuple[dict, list[dict]]:
    """The job once it is done, and every view seen on the way."""
    seen, deadline = [], time.monotonic() + timeout
    while True:
        view = httpx.get(f"{rig.url}/v1/jobs/{job_id}").json()
        seen.append(view)
        if view["status"] in ("done", "failed"):
            return view, seen
        assert time.monotonic() < deadline, view
        time.sleep(0.1)


def delivery_rows(rig: Rig, job_id: str) -> list[m.WebhookDelivery]:
    with rig.catalog.read() as session:
        return session.scalars(select(m.WebhookDelivery).where(m.WebhookDelivery.job_id == job_id)).all()


def wait_callback_state(rig: Rig, job_id: str, state: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (callback := httpx.get(f"{rig.url}/v1/jobs/{job_id}").json()["callback"])["state"] != state:
        assert time.monotonic() < deadline, callback
        time.sleep(0.05)
    return callback


def test_five_jobs_polled_to_done_get_five_signed_callbacks(rig, served, shared_audio_dir, manifest_by_file):
    started = time.perf_counter()
    ids = [submit(rig, shared_audio_dir / name, f"{rig.receiver.url}/five") for name in CLIPS]
    submitted = time.perf_counter() - started
    views = {}
    for job_id in ids:
        views[job_id], seen = poll_done(rig, job_id)
        assert views[job_id]["status"] == "done", views[job_id]
        done = [v["progress"]["done_seconds"] for v in seen]
        assert done == sorted(done) and all(v["progress"]["done_seconds"] <= v["progress"]["total_seconds"]
                                            for v in seen)
    all_done = time.perf_counter() - started
    calls = rig.receiver.wait("/five", 5)
    called = time.perf_counter() - started
    bodies = [verified(c) for c in calls]
    assert sorted(b["job"]["id"] for b in bodies) == sorted(ids) and {b["event"] for b in bodies} == {"job.done"}
    assert {c["headers"]["X-Scriptorium-Event"] for c in calls} == {"job.done"}
    print(f"\n5 jobs: submitted in {submitted:.2f} s, all done after {all_done:.2f} s, "
          f"5 callbacks after {called:.2f} s")
    listed = {j["id"] for j in httpx.get(f"{rig.url}/v1/jobs", params={"status": "done"}).json()["data"]}
    assert set(ids) <= listed
    assert not set(ids) & {j["id"] for j in httpx.get(f"{rig.url}/v1/jobs?status=queued").json()["data"]}
    assert httpx.get(f"{rig.url}/v1/jobs?status=bogus").status_code == 400
    for job_id, name in zip(ids, CLIPS):
        view = views[job_id]
        assert view["progress"]["done_seconds"] == view["progress"]["total_seconds"] > 0
        subs = list(srt.parse(httpx.get(rig.url + view["outputs"]["srt"]).text))
        heard = " ".join(s.content for s in subs)
        errors = word_errors(manifest_by_file[name]["reference"], heard)
        assert errors.errors / errors.reference_words < 0.35, (name, heard)
    assert wait_callback_state(rig, ids[0], "delivered")["attempts"] == 1


def test_receiver_that_fails_twice_gets_the_callback_on_the_third_try(rig, served, shared_audio_dir):
    rig.receiver.plan["/flaky"] = [500, 503, 200]
    job_id = submit(rig, shared_audio_dir / CLIPS[0], f"{rig.receiver.url}/flaky")
    poll_done(rig, job_id)
    calls = rig.receiver.wait("/flaky", 3)
    callback = wait_callback_state(rig, job_id, "delivered")
    assert callback["attempts"] == 3 and len(rig.receiver.to("/flaky")) == 3
    assert len({c["body"] for c in calls}) == 1, "every attempt carries the same body"
    assert all(verified(c)["job"]["id"] == job_id for c in calls)
    assert calls[1]["at"] - calls[0]["at"] >= 0.25 and calls[2]["at"] - calls[1]["at"] >= 0.55  # 0.3 s, then 0.6 s
    [row] = delivery_rows(rig, job_id)
    assert [a["status"] for a in row.attempts_log] == [500, 503, 200] and row.delivered_at is not None


def test_unreachable_receiver_is_a_failed_delivery_not_a_failed_transcript(rig, served, shared_audio_dir):
    job_id = submit(rig, shared_audio_dir / CLIPS[1], f"http://127.0.0.1:{free_port()}/gone")
    view, _ = poll_done(rig, job_id)
    callback = wait_callback_state(rig, job_id, "failed")
    assert callback["attempts"] == 3 and "refused" in callback["last_error"].lower()
    view = httpx.get(f"{rig.url}/v1/jobs/{job_id}").json()
    assert view["status"] == "done" and view["error"] is None
    assert httpx.get(rig.url + view["outputs"]["txt"]).text.strip()
    assert job_id in {j["id"] for j in httpx.get(f"{rig.url}/v1/jobs?status=done").json()["data"]}


def test_path_jobs_only_under_a_root(rig, served, shared_audio_dir):
    inside = rig.root / "talks" / CLIPS[0]
    res = httpx.post(f"{rig.url}/v1/jobs", json={"path": str(inside), "callback_url": f"{rig.receiver.url}/path"})
    assert res.status_code == 202, res.text
    view, _ = poll_done(rig, res.json()["id"])
    assert view["status"] == "done" and view["file"] == str(inside)
    assert (rig.data / "outputs" / "talks" / "LDC93S1.srt").is_file(), "outputs mirror the tree under the root"
    assert verified(rig.receiver.wait("/path", 1)[0])["job"]["id"] == view["id"]
    (rig.root / "escape.wav").symlink_to(shared_audio_dir / CLIPS[2])
    for path, status in ((shared_audio_dir / CLIPS[2], 403), (rig.root / "talks" / ".." / ".." / CLIPS[2], 403),
                         (rig.root / "escape.wav", 403), (rig.root / "talks" / "missing.wav", 404)):
        res = httpx.post(f"{rig.url}/v1/jobs", data={"path": str(path)}, files={"x": ("", b"")})
        assert res.status_code == status, (path, res.text)
        assert res.json()["error"]["param"] == "path"


def test_callback_needs_http_url(rig, served, shared_audio_dir):
    with open(shared_audio_dir / CLIPS[0], "rb") as fh:
        res = httpx.post(f"{rig.url}/v1/jobs", files={"file": ("a.wav", fh)}, data={"callback_url": "file:///etc/x"})
    assert res.status_code == 400 and res.json()["error"]["param"] == "callback_url"


def test_waiting_too_long_is_504_naming_the_job_to_poll(rig, shared_audio_dir):
    impatient = dataclasses.replace(rig.config, wait_timeout=0.05)
    with serving(create_app(rig.catalog, rig.redis_url, api=impatient)) as rig.url:
        client = openai.OpenAI(base_url=f"{rig.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as raised:
            client.audio.transcriptions.create(model="whisper-1", file=shared_audio_dir / "jfk.flac")
        assert raised.value.status_code == 504
        job_id = raised.value.body["job_id"]
        assert job_id in raised.value.body["message"]
        view, _ = poll_done(rig, job_id)
    assert view["status"] == "done" and view["kind"] == "transcription"


def test_a_callback_pending_when_serve_stops_is_delivered_by_the_next_serve(rig, shared_audio_dir):
    slow = dataclasses.replace(rig.config, webhooks=WebhookPolicy(attempts=5, first_delay=1.0, timeout=2.0))
    rig.receiver.plan["/later"] = [500]
    with serving(create_app(rig.catalog, rig.redis_url, api=slow)) as url:
        with open(shared_audio_dir / CLIPS[0], "rb") as fh:
            job_id = httpx.post(f"{url}/v1/jobs", files={"file": ("a.wav", fh)},
                                data={"callback_url": f"{rig.receiver.url}/later"}).json()["id"]
        rig.receiver.wait("/later", 1)
    [row] = delivery_rows(rig, job_id)
    assert row.state == "pending" and row.attempts == 1
    time.sleep(1.5)  # past its next attempt: nothing runs to send it
    assert delivery_rows(rig, job_id)[0].state == "pending" and len(rig.receiver.to("/later")) == 1
    rig.receiver.plan["/later"] = [200]
    with serving(create_app(rig.catalog, rig.redis_url, api=slow)):
        deadline = time.monotonic() + 20
        while delivery_rows(rig, job_id)[0].state != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    calls = rig.receiver.to("/later")
    assert len(calls) == 2 and verified(calls[1])["job"]["id"] == job_id
