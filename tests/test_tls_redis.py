"""Workers on several hosts share one Redis over TLS with a password: rediss://:PASSWORD@host:port/db?ssl_ca_certs=.

Each test starts its own `redis-server` that listens on a TLS port only (plain port 0) and wants a
password, with a CA and a server certificate made here by the openssl CLI. The real CLI scans,
enqueues, works the queue and runs through it; wrong passwords and CAs end in one line, not a traceback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import select

from runner.catalog import models as m
from runner.config import sqlite_url_for
from runner.catalog.db import Catalog
from runner.queue.jobqueue import QueueUnreachable, connect, job_id, job_queue, owner_key, shown_url
from runner.catalog.status import Status
from tests.test_runner_e2e import check_outputs, cli, copy_in

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-Tls"
CLIPS = ("LJ002-0020.wav", "LJ002-0035.wav")  # 1.5 and 1.6 s of real speech
NO_TLS_MARKS = ("not supported", "not built", "missing implement", "bad directive")  # a build without TLS


def openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"openssl {' '.join(args)}: {res.stderr}"


def make_authority(folder: Path, name: str) -> None:
    """A self-signed CA: NAME.pem and NAME.key."""
    openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN=Scriptorium test {name}", cwd=folder)


def make_certificates(folder: Path) -> None:
    """ca.pem, a server.pem/server.key it signed for 127.0.0.1 and localhost, and an unrelated other-ca.pem."""
    folder.mkdir(parents=True, exist_ok=True)
    make_authority(folder, "ca")
    make_authority(folder, "other-ca")
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                       "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=folder)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tls_redis(tmp_path):
    """(port, certificate folder) of a TLS-only, password-protected redis-server of this test."""
    server = shutil.which("redis-server")
    if server is None or shutil.which("openssl") is None:
        pytest.skip("needs redis-server and the openssl CLI")
    certs = tmp_path / "tls"
    make_certificates(certs)
    port = free_port()
    proc = subprocess.Popen([server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
                             "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no",
                             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(certs)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.pem'}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read()
                if "tls" in out.lower() and any(mark in out.lower() for mark in NO_TLS_MARKS):
                    pytest.skip(f"this redis-server has no TLS support: {out.strip().splitlines()[-1]}")
                pytest.fail(f"TLS redis-server exited with {proc.returncode}:\n{out}")
            try:
                connect(url).close()
                break
            except QueueUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield port, certs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rediss(port: int, certs: Path, password: str = PASSWORD, ca: str | None = "ca.pem") -> str:
    query = f"?ssl_ca_certs={certs / ca}" if ca else ""
    return f"rediss://:{password}@127.0.0.1:{port}/0{query}"


def media_rows(data: Path) -> dict[str, tuple[Status, str | None]]:
    with Catalog.open(sqlite_url_for(data)) as catalog, catalog.read() as session:
        return {Path(r.path).name: (r.status, r.error) for r in session.scalars(select(m.MediaFile))}


def test_scan_worker_and_run_round_trip_through_tls_redis(tls_redis, tmp_path, shared_audio_dir):
    port, certs = tls_redis
    url = rediss(port, certs)
    folder, data = tmp_path / "archive", tmp_path / "data"
    first = copy_in(shared_audio_dir / CLIPS[0], folder)
    common = ["--data", str(data), "--redis", url]

    scan = cli("scan", str(folder), *common)
    assert scan.returncode == 0 and "1 new" in scan.stdout, scan.stdout + scan.stderr
    queue = job_queue(connect(url))
    assert queue.job_ids == [job_id(1)], "the job is not on the TLS server"
    assert queue.connection.exists(owner_key(queue.name)), "the queue was not claimed on the TLS server"

    worker = cli("worker", "--burst", "--compute", "cpu", "--threads", "1", *common)
    assert worker.returncode == 0 and "Traceback" not in worker.stderr, worker.stderr
    assert media_rows(data) == {first.name: (Status.done, None)}
    assert Job.fetch(job_id(1), connection=queue.connection, serializer=JSONSerializer).get_status() == "finished"
    assert queue.job_ids == []
    check_outputs(data / "outputs", first)

    second = copy_in(shared_audio_dir / CLIPS[1], folder)  # `run --redis` hands the URL to its workers
    run = cli("run", str(folder), *common, "--workers", "1", "--threads", "1", "--compute", "cpu")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 new" in run.stderr and "done 1, failed 0, unfinished 0" in run.stdout, run.stdout + run.stderr
    assert Job.fetch(job_id(2), connection=queue.connection, serializer=JSONSerializer).get_status() == "finished"
    assert media_rows(data) == {first.name: (Status.done, None), second.name: (Status.done, None)}
    check_outputs(data / "outputs", second)
    assert not (data / "redis").exists(), "an embedded Redis was started instead"
    assert not [res for res in (scan, worker, run) if PASSWORD in res.stdout + res.stderr], "the password was printed"


@pytest.mark.parametrize("case, expected", [
    ("wrong password", "password refused"),
    ("CA of another authority", "TLS certificate is not trusted"),
    ("no CA (system store)", "TLS certificate is not trusted"),
    ("CA file missing", "ssl_ca_certs file"),
    ("plain redis:// to the TLS port", "the URL starts with rediss://"),
])
def test_bad_tls_redis_url_fails_in_one_line(tls_redis, tmp_path, shared_audio_dir, case, expected):
    port, certs = tls_redis
    wrong = "not-the-password" if case == "wrong password" else PASSWORD
    url = {"CA of another authority": rediss(port, certs, ca="other-ca.pem"),
           "no CA (system store)": rediss(port, certs, ca=None),
           "CA file missing": rediss(port, certs, ca="missing.pem"),
           "plain redis:// to the TLS port": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
           }.get(case, rediss(port, certs, password=wrong))
    folder, data = tmp_path / "archive", tmp_path / "data"
    copy_in(shared_audio_dir / CLIPS[0], folder)
    for args in (["scan", str(folder)], ["worker", "--burst", "--compute", "cpu", "--threads", "1"]):
        res = cli(*args, "--data", str(data), "--redis", url, timeout=120)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1, f"{args[0]}: {res.stderr}"
        assert lines[0].startswith(f"error: Redis at {shown_url(url)}: ") and expected in lines[0], lines[0]
        assert PASSWORD not in res.stderr and wrong not in res.stderr, "the password was printed"
    assert not (data / "redis").exists()


def test_shown_url_hides_only_the_password():
    assert shown_url("rediss://:pw@h:6380/0?ssl_ca_certs=/ca.pem") == "rediss://:***@h:6380/0?ssl_ca_certs=/ca.pem"
    assert shown_url("redis://queue:p%40ss@h/1") == "redis://queue:***@h/1"
    assert shown_url("redis://h:6379/0") == "redis://h:6379/0"
    assert shown_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
