"""Faults survived: a run of 13 files (12 short ones and gb0.wav, 127 s) hit by one fault each.

Each test scans the archive, starts `scriptorium worker --burst` processes, injects its fault
while gb0.wav is mid-file, lets the workers end, then runs at most one more `worker --burst`
(or `run`), and compares the catalog with a fault-free run of the same archive: every file
once, one done transcript each, the very same (file, idx, text) segments, no duplicate, no
leftover running transcript, and the four outputs of every file.

Real Redis and PostgreSQL: the shared local servers (an empty Redis database claimed per test,
the session's throwaway PostgreSQL database), or a server of the test's own where the fault is
to stop it (Redis with append-only persistence on a unix socket; a PostgreSQL cluster made
with initdb as the postgres user). SQLite where the fault is SQLite's (a lock held 10 s).
The disk-full test mounts a 64 KiB tmpfs, so it needs root (skipped otherwise).
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_catalog import pg_dsn, reset_pg_schema  # noqa: F401 - pg_dsn is a fixture
from tests.test_runner_e2e import REPO, _env, check_outputs, cli, cli_cmd, copy_in, kill_mentioning

pytestmark = pytest.mark.slow

LONG = "gb0.wav"  # 127 s: five 30 s windows, so there is a middle to hit
SHORT = ["LJ002-0020.wav", "LJ002-0035.wav", "1089-134691-0000.flac", "1089-134686-0001.flac",
         "1089-134691-0001.flac", "61-70968-0000.flac", "LDC93S1.wav", "arctic_a0024.wav",
         "ohf_kathleen_arctic_a0001_1592748574.mp3", "speechbrain_spk1_snt1.wav", "speechbrain_spk2_snt1.wav",
         "speechbrain_example1.wav"]  # 1.5 to 5.4 s each (LJSpeech, LibriSpeech, TIMIT, ARCTIC, ...)
WORKER_TIMEOUT_S = 240
FAULT_TIMEOUT_S = 120
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit()
             else 0, default=Path("/usr/lib/postgresql/15/bin"))


# --------------------------------------------------------------------------- archive and catalog state


def make_archive(shared: Path, folder: Path) -> list[Path]:
    """gb0.wav at the top (queued first, so the fault finds short files still waiting) and 12 short files."""
    files = [copy_in(shared / LONG, folder)]
    files += [copy_in(shared / name, folder / "short") for name in SHORT]
    return files


@dataclasses.dataclass
class CatalogState:
    """What a run left in the catalog, with paths relative to the archive folder."""

    media: dict[str, tuple[str, str | None]]  # name -> (status, error)
    media_rows: int
    transcripts: dict[str, list[str]]  # name -> statuses of its transcripts
    segments: list[tuple[str, int, str]]  # (name, idx, text) of done transcripts, in order
    duplicate_segments: list[tuple]

    @property
    def files(self) -> set[str]:
        return set(self.media)


def read_state(db_url: str, folder: Path) -> CatalogState:
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.NullPool)
    rel = lambda p: str(Path(p).relative_to(folder))  # noqa: E731
    try:
        with engine.connect() as conn:
            media_rows = conn.execute(sa.text("SELECT path, status, error FROM media_files")).all()
            transcripts: dict[str, list[str]] = {}
            for path, status in conn.execute(sa.text(
                    "SELECT m.path, t.status FROM transcripts t JOIN media_files m ON m.id = t.media_id "
                    "ORDER BY t.id")):
                transcripts.setdefault(rel(path), []).append(status)
            segments = [(rel(p), i, t) for p, i, t in conn.execute(sa.text(
                "SELECT m.path, s.idx, s.text FROM segments s JOIN transcripts t ON t.id = s.transcript_id "
                "JOIN media_files m ON m.id = t.media_id WHERE t.status = 'done' ORDER BY m.path, s.idx"))]
            dups = conn.execute(sa.text(
                "SELECT transcript_id, idx, count(*) FROM segments GROUP BY transcript_id, idx "
                "HAVING count(*) > 1")).all()
    finally:
        engine.dispose()
    return CatalogState({rel(p): (s, e) for p, s, e in media_rows}, len(media_rows), transcripts, segments,
                        [tuple(r) for r in dups])


def query(db_url: str, sql: str, **params) -> list[tuple]:
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.NullPool,
                              connect_args={"timeout": 5} if db_url.startswith("sqlite") else {})
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def assert_same_as_reference(state: CatalogState, reference: CatalogState, data: Path, folder: Path,
                             gone: tuple[str, ...] = ()) -> None:
    """Every file once and done (deleted ones failed, saying so), the reference's segments exactly, outputs."""
    assert state.media_rows == len(state.media) == len(reference.media), "a file is catalogued twice or missing"
    assert state.files == reference.files
    expected = {name: "done" for name in reference.files if name not in gone}
    got = {name: status for name, (status, _) in state.media.items() if name not in gone}
    assert got == expected, {n: state.media[n] for n in got if got[n] != "done"}
    for name in gone:
        status, error = state.media[name]
        assert status == "failed" and "deleted" in (error or ""), (name, status, error)
        assert name not in state.transcripts, f"{name} was deleted but has a transcript"
    assert state.transcripts == {n: ["done"] for n in expected}, "not exactly one done transcript per file"
    assert not state.duplicate_segments
    assert state.segments == [s for s in reference.segments if s[0] not in gone]
    for name in expected:
        check_outputs(data / "outputs" / Path(name).parent, folder / name)


# --------------------------------------------------------------------------- processes


def claim_redis_db() -> tuple[str, object]:
    """An empty database of the local Redis, claimed for this test: (URL, connection)."""
    import redis

    try:
        redis.Redis(socket_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"local Redis unreachable: {exc}")
    for n in range(15, 0, -1):
        conn = redis.Redis(db=n)
        if conn.dbsize() == 0 and conn.set("scriptorium-test-claim", os.getpid(), nx=True, ex=1800):
            return f"redis://127.0.0.1:6379/{n}", conn
    pytest.skip("no empty Redis database on 127.0.0.1:6379")


@pytest.fixture
def local_redis():
    url, conn = claim_redis_db()
    yield url
    conn.flushdb()
    conn.close()


@pytest.fixture
def pg_url(pg_dsn):  # noqa: F811
    reset_pg_schema(pg_dsn)
    return pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@dataclasses.dataclass
class Rig:
    """One archive, its data folder, catalog and queue, and the worker processes started on them."""

    tmp: Path
    folder: Path
    data: Path
    db_url: str
    redis_url: str
    procs: list = dataclasses.field(default_factory=list)

    def common(self) -> list[str]:
        return ["--data", str(self.data), "--db", self.db_url, "--redis", self.redis_url]

    def scan(self) -> None:
        res = cli("scan", str(self.folder), *self.common())
        assert res.returncode == 0 and f"{1 + len(SHORT)} new" in res.stdout, res.stdout + res.stderr

    def start_workers(self, n: int = 2) -> list[subprocess.Popen]:
        """n `worker --burst` processes (one thread each: the machine has two cores), logging to files.
        One file at a time (--batch 1): the scenarios need files waiting in the queue while one decodes."""
        started = []
        for _ in range(n):
            log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")
            proc = subprocess.Popen(cli_cmd("worker", "--burst", "--compute", "cpu", "--threads", "1",
                                            "--batch", "1", *self.common()),
                                    cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            proc.log_path = log.name
            log.close()
            self.procs.append(proc)
            started.append(proc)
        return started

    def wait(self, procs: list[subprocess.Popen], timeout: float = WORKER_TIMEOUT_S) -> list[int]:
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {p.pid} still running after {timeout:.0f} s:\n{self.logs()}")
        return [p.returncode for p in procs]

    def logs(self) -> str:
        return "\n".join(f"--- worker {p.pid} (rc {p.returncode})\n" + Path(p.log_path).read_text(errors="replace")
                         for p in self.procs)

    def finish(self) -> subprocess.Popen:
        """The one more `worker --burst` after the fault: must end cleanly."""
        (proc,) = self.start_workers(1)
        assert self.wait([proc]) == [0], self.logs()
        assert "Traceback" not in Path(proc.log_path).read_text(errors="replace"), self.logs()
        return proc

    def media_id(self, name: str) -> int:
        return query(self.db_url, "SELECT id FROM media_files WHERE path = :p", p=str(self.folder / name))[0][0]

    def wait_mid_file(self, name: str = LONG, timeout: float = FAULT_TIMEOUT_S) -> tuple[int, int]:
        """Block until `name` has a running transcript with at least one window committed: (id, next_window)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = query(self.db_url, "SELECT t.id, t.next_window FROM transcripts t JOIN media_files m "
                                      "ON m.id = t.media_id WHERE m.path = :p AND t.status = 'running' "
                                      "AND t.next_window >= 1", p=str(self.folder / name))
            if rows:
                return rows[0]
            if all(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.1)
        pytest.fail(f"{name} never got a window done while running:\n{self.logs()}")

    def transcript_status(self, transcript_id: int) -> list[tuple]:
        return query(self.db_url, "SELECT status FROM transcripts WHERE id = :i", i=transcript_id)

    def doctor(self, repair: bool = False):
        """`scriptorium doctor` on this rig's catalog, queue and outputs (in this process)."""
        from runner.config import Settings
        from runner.catalog.db import Catalog
        from runner.catalog.doctor import diagnose

        with Catalog.open(self.db_url) as catalog:
            return diagnose(catalog, Settings(self.data, self.db_url, self.redis_url), self.redis_url, repair)

    def check(self, reference: CatalogState, gone: tuple[str, ...] = ()) -> CatalogState:
        """The catalog equals the fault-free one, and doctor finds nothing to say."""
        state = read_state(self.db_url, self.folder)
        assert_same_as_reference(state, reference, self.data, self.folder, gone)
        report = self.doctor()
        assert not report.findings, [f.line() for f in report.findings]
        return state

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        kill_mentioning(str(self.data))


@pytest.fixture
def rig_factory(tmp_path, shared_audio_dir):
    made = []

    def make(db_url: str, redis_url: str) -> Rig:
        folder = tmp_path / "archive"
        make_archive(shared_audio_dir, folder)
        rig = Rig(tmp_path, folder, tmp_path / "data", db_url, redis_url)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.kill_all()


def sqlite_url(data: Path) -> str:
    return f"sqlite:///{data / 'catalog.db'}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_audio_dir) -> CatalogState:
    """The fault-free run: scan, two `worker --burst`, SQLite catalog (the engine's output does not depend on it)."""
    url, conn = claim_redis_db()
    tmp = tmp_path_factory.mktemp("reference")
    folder = tmp / "archive"
    make_archive(shared_audio_dir, folder)
    rig = Rig(tmp, folder, tmp / "data", sqlite_url(tmp / "data"), url)
    try:
        started = time.monotonic()
        rig.scan()
        assert rig.wait(rig.start_workers(2)) == [0, 0], rig.logs()
        print(f"\nfault-free run: {time.monotonic() - started:.1f} s")
        state = read_state(rig.db_url, folder)
        assert set(state.media) == {LONG, *(f"short/{n}" for n in SHORT)}
        assert {s for s, _ in state.media.values()} == {"done"}, state.media
        assert len(state.segments) >= len(state.media)
        return state
    finally:
        rig.kill_all()
        conn.flushdb()
        conn.close()


def worker_pid(redis_url: str, media_id: int) -> int:
    """The pid of the worker running a media file's job (worker names are host.pid.compute, and
    host.pid.compute.thread in a batching worker)."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from runner.queue.jobqueue import connect, job_id

    job = Job.fetch(job_id(media_id), connection=connect(redis_url), serializer=JSONSerializer)
    return int(re.search(r"\.(\d+)\.[a-z]+(\.\d+)?$", job.worker_name).group(1))


def queue_state(redis_url: str) -> tuple[int, int]:
    """(jobs waiting, jobs started) in the scriptorium queue."""
    from runner.queue.jobqueue import connect, job_queue

    queue = job_queue(connect(redis_url))
    return len(queue), len(queue.started_job_registry.get_job_ids())


# --------------------------------------------------------------------------- (a) SIGKILL of a worker


def test_sigkill_worker_mid_file(rig_factory, reference, pg_url, local_redis):
    rig = rig_factory(pg_url, local_redis)
    rig.scan()
    workers = rig.start_workers(2)
    transcript_id, window = rig.wait_mid_file()
    victim = worker_pid(rig.redis_url, rig.media_id(LONG))
    assert victim in [p.pid for p in workers]
    os.kill(victim, signal.SIGKILL)
    codes = rig.wait(workers)
    assert sorted(codes) == [-signal.SIGKILL, 0], rig.logs()
    assert rig.transcript_status(transcript_id) == [("running",)]
    rig.finish()
    assert rig.transcript_status(transcript_id) == [("done",)], "the killed file started over instead of resuming"
    rig.check(reference)
    print(f"\nSIGKILL at window {window} of {LONG}: resumed transcript {transcript_id}")


# --------------------------------------------------------------------------- (b) SIGTERM of all workers


def test_sigterm_all_workers_mid_run(rig_factory, reference, pg_url, local_redis):
    rig = rig_factory(pg_url, local_redis)
    rig.scan()
    workers = rig.start_workers(2)
    transcript_id, window = rig.wait_mid_file()
    sent = time.monotonic()
    for p in workers:
        os.kill(p.pid, signal.SIGTERM)
    codes = rig.wait(workers, timeout=60)
    stopped_in = time.monotonic() - sent
    assert codes == [0, 0], rig.logs()
    assert stopped_in < 30, f"workers took {stopped_in:.1f} s to stop"
    waiting, started = queue_state(rig.redis_url)
    assert started == 0 and waiting >= 1, (waiting, started)  # the interrupted job went back to the queue
    assert rig.transcript_status(transcript_id) == [("running",)]
    rig.finish()
    assert rig.transcript_status(transcript_id) == [("done",)]
    rig.check(reference)
    print(f"\nSIGTERM at window {window}: workers stopped in {stopped_in:.1f} s; {waiting} jobs waited")


# --------------------------------------------------------------------------- (c) Redis killed and restarted


class OwnRedis:
    """A redis-server of this test on a unix socket, append-only with fsync on every write."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed")
        self.proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                                      "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                                      "--save", "", "--logfile", str(self.dir / "redis.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping():
                    return
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        pytest.fail(f"own redis-server did not start: {(self.dir / 'redis.log').read_text(errors='replace')}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


def test_redis_killed_and_restarted_mid_run(rig_factory, reference, pg_url, own_redis):
    rig = rig_factory(pg_url, own_redis.url)
    rig.scan()
    workers = rig.start_workers(2)
    transcript_id, window = rig.wait_mid_file()
    before = queue_state(rig.redis_url)
    own_redis.kill()  # SIGKILL: no shutdown save, only what the append-only file holds
    time.sleep(3)
    own_redis.start()
    after = queue_state(rig.redis_url)
    assert after[0] + after[1] >= 1 and after[0] <= before[0], (before, after)  # the jobs are still there
    rig.wait(workers)
    rig.finish()
    rig.check(reference)
    print(f"\nRedis killed at window {window}: (waiting, started) jobs {before} before, {after} after restart; "
          f"worker exit codes {[p.returncode for p in workers]}")


# --------------------------------------------------------------------------- (d) PostgreSQL restarted


class OwnPostgres:
    """A PostgreSQL cluster of this test on a spare port, trust auth: run as the postgres user when we are
    root (the server refuses root), else as ourselves; its folder is outside tmp_path, which only we can open."""

    def __init__(self):
        if not (PG_BIN / "initdb").is_file():
            pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run a cluster as")
        self.dir = Path(tempfile.mkdtemp(prefix="scriptorium-pg-"))
        if self.as_root:
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.dir / "db"), "-A", "trust", "-U", "postgres",
                          "--no-sync")

    def _as_postgres(self, *cmd: str) -> subprocess.CompletedProcess:
        res = subprocess.run(self._prefix() + list(cmd), capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            pytest.fail(f"{' '.join(cmd)}: {res.stdout}{res.stderr}")
        return res

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "db"), "-o", opts,
                          "-l", str(self.dir / "log"), "-w", "start")

    def _prefix(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if self.as_root else []

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(self._prefix() + [str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "db"), "-m", mode, "-w",
                                         "stop"], capture_output=True, timeout=60)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres():
    server = OwnPostgres()
    server.start()
    yield server
    server.remove()


def test_postgres_restarted_mid_run(rig_factory, reference, own_postgres, local_redis):
    rig = rig_factory(own_postgres.url, local_redis)
    rig.scan()
    workers = rig.start_workers(2)
    transcript_id, window = rig.wait_mid_file()
    own_postgres.stop("immediate")  # a crash: the server recovers from its WAL on start
    time.sleep(3)
    own_postgres.start()
    codes = rig.wait(workers)
    first = read_state(rig.db_url, rig.folder)
    rig.finish()
    state = rig.check(reference)
    assert not [n for n, (_, err) in state.media.items() if err], "an outage was recorded against a file"
    unfinished = [n for n, (s, _) in first.media.items() if s != "done"]
    print(f"\nPostgreSQL restarted at window {window}: worker exit codes {codes}; "
          f"unfinished before the extra worker: {unfinished}")


# --------------------------------------------------------------------------- (e) SQLite locked 10 s


LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_sqlite_catalog_locked_for_10_s(rig_factory, reference, tmp_path, local_redis):
    rig = rig_factory(sqlite_url(tmp_path / "data"), local_redis)
    rig.scan()
    workers = rig.start_workers(2)
    transcript_id, window = rig.wait_mid_file()
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(rig.data / "catalog.db"), "10"],
                              stdout=subprocess.PIPE, text=True)
    assert locker.stdout.readline().strip() == "locked"
    locked_at = time.monotonic()
    stuck = query(rig.db_url, "SELECT t.next_window FROM transcripts t WHERE t.id = :i", i=transcript_id)
    assert locker.wait(timeout=30) == 0
    held = time.monotonic() - locked_at
    codes = rig.wait(workers)
    first = read_state(rig.db_url, rig.folder)
    rig.finish()
    rig.check(reference)
    unfinished = [n for n, (s, _) in first.media.items() if s != "done"]
    print(f"\nSQLite locked {held:.1f} s from window {stuck}: exit codes {codes}; unfinished before the extra "
          f"worker: {unfinished}")


# --------------------------------------------------------------------------- (f) output disk full


@pytest.fixture
def small_outputs(tmp_path):
    """DATA/outputs on a 64 KiB tmpfs, nearly filled; yields (folder, filler file)."""
    outputs = tmp_path / "data" / "outputs"
    outputs.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(outputs)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {res.stderr.strip()}")
    filler = outputs / "filler.bin"
    try:
        with open(filler, "wb") as fh:
            fh.write(b"\0" * (32 * 1024))  # leaves room for a few short files' outputs, then the disk is full
        yield outputs, filler
    finally:
        subprocess.run(["umount", "-l", str(outputs)], capture_output=True)


def test_output_disk_full_then_freed(rig_factory, reference, tmp_path, small_outputs, pg_url, local_redis):
    outputs, filler = small_outputs
    rig = rig_factory(pg_url, local_redis)
    rig.scan()
    workers = rig.start_workers(2)
    codes = rig.wait(workers)
    assert codes == [0, 0], rig.logs()
    first = read_state(rig.db_url, rig.folder)
    pending = {n: e for n, (s, e) in first.media.items() if s != "done"}
    assert pending, "the disk never filled up"
    assert all(s == "queued" and "No space left on device" in (e or "") for s, e in
               (first.media[n] for n in pending)), first.media
    assert first.transcripts == {n: ["done"] for n in first.media}, "a transcript was lost or redone"
    found = rig.doctor()
    assert sorted(Path(f.path).relative_to(rig.folder).as_posix() for f in found.findings
                  if f.kind == "missing-outputs") == sorted(pending), [f.line() for f in found.findings]
    # Free the disk: drop the filler and grow the tmpfs.
    filler.unlink()
    res = subprocess.run(["mount", "-o", "remount,size=64m", str(outputs)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rig.finish()
    rig.check(reference)
    print(f"\ndisk full: {len(pending)} of {len(first.media)} files had no outputs; all written after freeing")


# --------------------------------------------------------------------------- (g) a file deleted after scan


def test_file_deleted_after_scan(rig_factory, reference, pg_url, local_redis):
    rig = rig_factory(pg_url, local_redis)
    rig.scan()
    early, late = "short/LDC93S1.wav", "short/speechbrain_spk2_snt1.wav"
    (rig.folder / early).unlink()  # gone before any worker starts
    workers = rig.start_workers(1)
    rig.wait_mid_file()
    assert query(rig.db_url, "SELECT status FROM media_files WHERE path = :p", p=str(rig.folder / late)) == \
        [("queued",)]
    (rig.folder / late).unlink()  # gone while its job waits in the queue
    assert rig.wait(workers) == [0], rig.logs()
    res = cli("run", str(rig.folder), *rig.common(), "--workers", "1", "--threads", "1", "--batch", "1",
              "--compute", "cpu")
    assert res.returncode == 0 and "0 new" in res.stderr, res.stdout + res.stderr
    state = rig.check(reference, gone=(early, late))
    for name in (early, late):
        assert not list((rig.data / "outputs" / "short").glob(f"{Path(name).stem}.*"))
    print(f"\ndeleted after scan: {[state.media[n] for n in (early, late)]}")
