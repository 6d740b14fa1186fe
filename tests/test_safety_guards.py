"""Guards of issue 7: one queue serves one catalog; an old schema is upgraded; outputs and exports stay
in their folder whatever the media are called (and two hostile names never share an output file).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from runner.catalog import models as m
from runner.config import Settings, sqlite_url_for
from runner.catalog.db import Catalog, alembic_config
from runner.errors import RunnerError
from runner.catalog.export import export_outputs
from runner.catalog.outputs import output_dir_for, write_media_outputs
from runner.queue.jobqueue import ForeignQueueError, claim_queue, owner_key
from runner.catalog.status import Status
from tests.test_catalog import make_segment, pg_dsn, reset_pg_schema, start  # noqa: F401 - pg_dsn is a fixture
from tests.test_faults import claim_redis_db
from tests.test_runner_e2e import REPO, _env, cli, cli_cmd, copy_in


@pytest.fixture
def redis_url():
    url, conn = claim_redis_db()
    yield url
    conn.flushdb()
    conn.close()


def worker(data: Path, redis_url: str, db: str | None = None) -> subprocess.CompletedProcess:
    args = ["worker", "--burst", "--compute", "cpu", "--threads", "1", "--data", str(data), "--redis", redis_url]
    return subprocess.run(cli_cmd(*args, *(["--db", db] if db else [])), cwd=REPO, env=_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


# --------------------------------------------------------------------------- one queue, one catalog


@pytest.mark.slow
def test_workers_of_two_catalogs_on_one_queue_are_refused(tmp_path, redis_url):
    first = worker(tmp_path / "a", redis_url)
    assert first.returncode == 0, first.stderr
    second = worker(tmp_path / "b", redis_url)
    assert second.returncode == 1, second.stderr
    message = second.stderr.strip().splitlines()[-1]
    assert message.startswith("error: queue 'scriptorium' on this Redis belongs to the catalog sqlite:///"), message
    assert str(tmp_path / "a" / "catalog.db") in message and str(tmp_path / "b" / "catalog.db") in message
    assert "scriptorium:scriptorium:catalog" in message
    assert "Traceback" not in second.stderr
    assert not (tmp_path / "b" / "outputs").exists()
    again = worker(tmp_path / "a", redis_url)  # the owner still works
    assert again.returncode == 0, again.stderr


def test_claim_is_idempotent_and_refuses_another_identity(redis_url):
    import redis

    conn = redis.Redis.from_url(redis_url)
    claim_queue(conn, "q1", "sqlite:h:/a.db", "sqlite:///a.db")
    claim_queue(conn, "q1", "sqlite:h:/a.db", "sqlite:///a.db")
    with pytest.raises(ForeignQueueError, match="belongs to the catalog sqlite:///a.db"):
        claim_queue(conn, "q1", "sqlite:h:/b.db", "sqlite:///b.db")
    claim_queue(conn, "q2", "sqlite:h:/b.db", "sqlite:///b.db")  # another queue name is another queue
    assert json.loads(conn.get(owner_key("q1")))["id"] == "sqlite:h:/a.db"


def test_one_postgresql_database_is_one_identity_whatever_the_url(pg_dsn):  # noqa: F811
    reset_pg_schema(pg_dsn)
    by_ip = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    by_name = by_ip.replace("127.0.0.1", "localhost")
    with_password = by_ip.replace("://postgres@", "://postgres:s3cret@")
    ids = []
    for url in (by_ip, by_name, with_password):
        with Catalog.open(url, migrate=False) as cat:
            ids.append(cat.identity())
            assert "s3cret" not in cat.url.render_as_string(hide_password=True)
    assert len(set(ids)) == 1 and ids[0].startswith("postgresql:"), ids
    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    with Catalog.open(admin, migrate=False) as other:
        assert other.identity() != ids[0]


def test_two_sqlite_files_are_two_identities(tmp_path):
    with Catalog.open(sqlite_url_for(tmp_path / "a")) as a, Catalog.open(sqlite_url_for(tmp_path / "b")) as b, \
            Catalog.open(f"sqlite:///{tmp_path / 'a' / '..' / 'a' / 'catalog.db'}") as a2:
        assert a.identity() != b.identity()
        assert a.identity() == a2.identity()


# --------------------------------------------------------------------------- an old schema


@pytest.mark.slow
def test_worker_upgrades_a_catalog_older_than_the_code(tmp_path, redis_url):
    data = tmp_path / "data"
    url = sqlite_url_for(data)
    with Catalog.open(url) as cat, cat.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    check = cli("db", "check", "--data", str(data))
    assert check.returncode == 1 and "not up to date" in check.stderr, check.stderr
    res = worker(data, redis_url)
    assert res.returncode == 0, res.stderr
    assert cli("db", "check", "--data", str(data)).returncode == 0


# --------------------------------------------------------------------------- hostile media names

HOSTILE = ["-rf.wav", "rf.wav", "--help.wav", "line\nbreak.wav", "linebreak.wav", "\\..\\..\\escape.wav",
           "%2e%2e%2fescape.wav", "~root.wav", " leading space.wav", "C:\\evil.wav", "tab\there.wav",
           "é" * 120 + ".wav", "é" * 120 + "x.wav"]
HOSTILE_DIRS = ["-x", "new\nline", "...", "\\..\\"]


def hostile_archive(shared: Path, folder: Path) -> list[Path]:
    src = shared / "LJ002-0020.wav"  # 1.5 s of speech
    files = [copy_in(src, folder, name) for name in HOSTILE]
    files += [copy_in(src, folder / d, "-clip.wav") for d in HOSTILE_DIRS]
    return files


def output_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix in (".srt", ".vtt", ".txt", ".json")]


@pytest.mark.slow
def test_hostile_names_keep_their_outputs_inside_and_apart(tmp_path, shared_audio_dir, redis_url):
    folder = tmp_path / "archive"
    media = hostile_archive(shared_audio_dir, folder)
    data = tmp_path / "data"
    scan = cli("scan", str(folder), "--data", str(data), "--redis", redis_url)
    assert scan.returncode == 0 and f"{len(media)} new" in scan.stdout, scan.stdout + scan.stderr
    res = worker(data, redis_url)
    assert res.returncode == 0, res.stderr
    with Catalog.open(sqlite_url_for(data)) as cat, cat.read() as session:
        statuses = dict(session.execute(sa.select(m.MediaFile.path, m.MediaFile.status)).all())
    assert statuses == {str(p): Status.done for p in media}

    outputs = (data / "outputs").resolve()
    inside = output_files(tmp_path)
    assert all(p.resolve().is_relative_to(outputs) for p in inside), [p for p in inside
                                                                       if not p.resolve().is_relative_to(outputs)]
    assert len(inside) == 4 * len(media), "two media wrote to the same output file"
    for p in inside:
        assert not p.name.startswith(("-", ".", " ")) and "\n" not in p.name and "\t" not in p.name, p.name
        assert len(p.name.encode()) <= 255, p.name

    exported = tmp_path / "export"
    ex = cli("export", "--data", str(data), "-o", str(exported))
    assert ex.returncode == 0 and f"exported {len(media)} files" in ex.stdout, ex.stdout + ex.stderr
    out = output_files(exported)
    assert len(out) == 4 * len(media) and all(p.resolve().is_relative_to(exported.resolve()) for p in out)


@pytest.fixture
def crafted(tmp_path):
    """A catalog whose rows were written by someone else: paths with '..' that climb out of their root."""
    settings = Settings(tmp_path / "data", sqlite_url_for(tmp_path / "data"), None)
    cat = Catalog.open(settings.db_url)
    ids = []
    for path, root in [("/archive/../../etc/cron.d/evil.wav", "/archive"),
                       ("/archive/sub/../../../tmp/evil.wav", "/archive")]:
        with cat.write() as session:
            row = m.MediaFile(path=path, scan_root=root, status=Status.queued, attempts=0, errors_log=[])
            session.add(row)
            session.flush()
            ids.append(row.id)
        tid, *_ = start(cat, row.id)
        cat.add_window(tid, 0, 16000, [make_segment("hostile", 0.0)])
        cat.finish_transcript(tid, "en", 0.9, {}, 1.0, 1.0)
    yield settings, cat, ids
    cat.close()


def test_outputs_of_climbing_paths_are_refused(crafted, tmp_path):
    settings, cat, ids = crafted
    for media_id in ids:
        with cat.read() as session:
            row = session.get(m.MediaFile, media_id)
            path, root = row.path, row.scan_root
        with pytest.raises(RunnerError, match="would leave"):
            output_dir_for(settings, path, root)
        with pytest.raises(RunnerError, match="would leave"):
            write_media_outputs(cat, settings, media_id)
    assert not output_files(tmp_path)


def test_export_of_climbing_paths_stays_in_its_folder(crafted, tmp_path):
    settings, cat, ids = crafted
    target = tmp_path / "deep" / "export"
    try:
        export_outputs(cat, target, ("srt", "txt"), [])
    except RunnerError as exc:
        assert "would leave" in str(exc)
    escaped = [p for p in output_files(tmp_path) if not p.resolve().is_relative_to(target.resolve())]
    assert not escaped, escaped
