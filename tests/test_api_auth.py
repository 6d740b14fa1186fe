"""`serve`'s gate: no token off loopback refuses to start; wrong or missing tokens get 401 before any
byte is stored; uploads over the limit get 413 (announced or counted while streaming) and leave nothing.

Real uvicorn servers (in a thread, or `scriptorium serve` as a process) on a real Redis and SQLite catalog;
no worker runs here, so the OpenAI route answers 503. The helpers here serve the other API tests too.
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from runner.config import sqlite_url_for
from runner.catalog.db import Catalog
from runner.web.api_config import ApiConfig
from runner.web.app import create_app
from tests.test_faults import claim_redis_db

REPO = Path(__file__).resolve().parents[1]
TOKEN = "correct horse battery staple"
GB = 1024**3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1"):
    """The app on a real uvicorn server in a thread (lifespan included); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def redis_url():
    url, conn = claim_redis_db()
    yield url
    conn.flushdb()
    conn.close()


@contextlib.contextmanager
def api_app(data: Path, redis_url: str, **config):
    """A catalog in `data` and the web app with its /v1 API over it, served; yields (base URL, catalog)."""
    catalog = Catalog.open(sqlite_url_for(data))
    app = create_app(catalog, redis_url, api=ApiConfig(data, redis_url, **config))
    try:
        with serving(app) as url:
            yield url, catalog
    finally:
        catalog.close()


def env() -> dict:
    """The environment for `scriptorium` processes: this checkout first, no SCRIPTORIUM_* from outside."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTORIUM_")}
    return {**clean, "PYTHONPATH": str(REPO)}


def leftovers(data: Path) -> list[str]:
    """Whatever an upload left under DATA/uploads."""
    folder = data / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def raw_post(url: str, path: str, headers: dict, body, length: int | None) -> tuple[int, bytes, int]:
    """POST a generated body over a plain socket, stopping as soon as the server answers:
    (status, response bytes, body bytes sent). `length` None sends it chunked."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent = 0
    try:
        for chunk in body:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending
            sock.sendall(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = b""
    sock.settimeout(10)
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while data := sock.recv(65536):
            response += data
    sock.close()
    return int(response.split(b" ", 2)[1]), response, sent


def huge_multipart(total: int, boundary: str = "scriptoriumtest"):
    """A multipart body of `total` bytes whose file part is zeros, generated chunk by chunk."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    yield head
    left, chunk = total - len(head) - len(tail), b"\0" * (1 << 20)
    while left > 0:
        yield chunk[:left]
        left -= len(chunk)
    yield tail


def test_non_loopback_bind_without_token_refuses_to_start(tmp_path):
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        res = subprocess.run([sys.executable, "-m", "runner.commands.cli", "serve", "--host", host, "--data",
                              str(tmp_path / "data")], cwd=REPO, env=env(), capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, (host, res.stdout, res.stderr)
        assert "--token" in res.stderr and host in res.stderr
        assert not (tmp_path / "data").exists(), "nothing may start before the refusal"


def test_non_loopback_bind_with_token_serves_only_with_it(tmp_path, redis_url):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                             "--data", str(tmp_path / "data"), "--redis", redis_url], cwd=REPO,
                            env={**env(), "SCRIPTORIUM_API_TOKEN": TOKEN}, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                missing = httpx.get(f"{url}/v1/jobs")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.1)
        assert missing.status_code == 401
        assert httpx.get(f"{url}/v1/jobs", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                           f"Token {TOKEN}", "Basic " + base64.b64encode(b"me:wrong").decode()])
def test_wrong_or_missing_token_gets_401_and_stores_nothing(tmp_path, redis_url, shared_audio_dir, authorization):
    headers = {"authorization": authorization} if authorization else {}
    with api_app(tmp_path / "data", redis_url, token=TOKEN) as (url, _):
        assert httpx.get(f"{url}/v1/jobs", headers=headers).status_code == 401
        for route in ("/v1/jobs", "/v1/audio/transcriptions"):
            with open(shared_audio_dir / "jfk.flac", "rb") as fh:
                res = httpx.post(f"{url}{route}", headers=headers, files={"file": ("jfk.flac", fh)},
                                 data={"model": "whisper-1"})
            assert res.status_code == 401, res.text
            assert res.json()["error"]["code"] == "invalid_api_key"
            assert res.headers["www-authenticate"].startswith("Bearer")
        page = httpx.get(f"{url}/backlog", headers=headers)
        assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic")
    assert leftovers(tmp_path / "data") == []


def test_right_token_passes_and_no_worker_is_a_clear_503(tmp_path, redis_url, shared_audio_dir):
    with api_app(tmp_path / "data", redis_url, token=TOKEN) as (url, _):
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).audio.transcriptions.create(
                model="whisper-1", file=shared_audio_dir / "jfk.flac")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
        with pytest.raises(openai.APIStatusError) as raised:
            client.audio.transcriptions.create(model="whisper-1", file=shared_audio_dir / "jfk.flac")
        assert raised.value.status_code == 503
        assert raised.value.body["code"] == "no_workers" and "worker" in raised.value.body["message"]
        basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        assert httpx.get(f"{url}/backlog", headers={"authorization": f"Basic {basic}"}).status_code == 200
    assert leftovers(tmp_path / "data") == []


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/audio/transcriptions"])
def test_3gb_upload_with_default_limit_gets_413_and_leaves_nothing(tmp_path, redis_url, route):
    boundary = "scriptoriumtest"
    with api_app(tmp_path / "data", redis_url) as (url, _):
        status, response, sent = raw_post(url, route, {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                                          huge_multipart(3 * GB, boundary), 3 * GB)
    assert status == 413, response
    assert b"upload_too_large" in response
    assert sent < 64 * 1024**2, f"the server let {sent} bytes in before refusing"
    assert leftovers(tmp_path / "data") == []


def test_streamed_upload_over_the_limit_gets_413_and_its_partial_file_is_deleted(tmp_path, redis_url):
    """No Content-Length: the running count stops the upload, after part of it reached the disk."""
    boundary = "scriptoriumtest"
    data = tmp_path / "data"
    with api_app(data, redis_url, max_upload=4 * 1024**2) as (url, _):
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        status, response, sent = raw_post(url, "/v1/jobs", headers, huge_multipart(3 * GB, boundary), None)
    assert status == 413, response
    assert 4 * 1024**2 < sent < 512 * 1024**2, sent
    assert (data / "uploads").is_dir(), "the upload never reached the disk: the count was not what stopped it"
    assert leftovers(data) == []


def test_partial_uploads_of_a_killed_serve_are_cleared_at_start(tmp_path, redis_url):
    uploads = tmp_path / "data" / "uploads"
    uploads.mkdir(parents=True)
    for name in (".partial-old", ".partial-fresh", "job_1-kept.wav"):
        (uploads / name).write_bytes(b"x")
    hours_ago = time.time() - 7200
    for name in (".partial-old", "job_1-kept.wav"):
        os.utime(uploads / name, (hours_ago, hours_ago))
    with api_app(tmp_path / "data", redis_url):
        pass
    assert leftovers(tmp_path / "data") == [".partial-fresh", "job_1-kept.wav"]
