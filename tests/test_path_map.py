"""--path-map SRC=DST: a worker on a host that mounts the shared archive elsewhere finds the media there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from runner.catalog import models as m
from runner.config import Settings, map_path, sqlite_url_for
from runner.catalog.db import Catalog
from runner.catalog.outputs import output_dir_for
from runner.catalog.status import Status
from tests.test_faults import claim_redis_db
from tests.test_runner_e2e import REPO, _env, cli, cli_cmd, copy_in

CLIP = "LJ002-0020.wav"  # 1.5 s: the shortest of the corpus


def test_map_path_replaces_the_longest_matching_folder_prefix():
    pairs = (("/mnt/archive", "/media"), ("/mnt/archive/tapes/", "/fast/tapes"), ("/", "/root-elsewhere"))
    assert map_path("/mnt/archive/a/talk.mp3", pairs) == "/media/a/talk.mp3"
    assert map_path("/mnt/archive/tapes/t1.wav", pairs) == "/fast/tapes/t1.wav"  # longest SRC wins
    assert map_path("/mnt/archive", pairs) == "/media"
    assert map_path("/mnt/archive-old/x.wav", pairs[:2]) == "/mnt/archive-old/x.wav"  # whole names only
    assert map_path("/srv/x.wav", pairs) == "/root-elsewhere/srv/x.wav"
    assert map_path("/srv/x.wav", ()) == "/srv/x.wav"


def test_outputs_beside_follow_the_map(tmp_path):
    settings = Settings(tmp_path, "sqlite://", None, outputs="beside", path_map=(("/mnt/a", "/media/a"),))
    assert output_dir_for(settings, "/mnt/a/box/t.wav", "/mnt/a") == Path("/media/a/box")
    data = Settings(tmp_path, "sqlite://", None, path_map=(("/mnt/a", "/media/a"),))
    assert output_dir_for(data, "/mnt/a/box/t.wav", "/mnt/a") == (tmp_path / "outputs" / "box").resolve()


def test_bad_path_map_is_a_usage_error(tmp_path):
    res = cli("worker", "--burst", "--data", str(tmp_path), "--path-map", "relative=/x")
    assert res.returncode == 2 and "SRC=DST" in res.stderr, res.stderr


@pytest.mark.slow
def test_worker_reaches_the_media_through_the_mapped_path(tmp_path, shared_audio_dir):
    url, conn = claim_redis_db()
    try:
        scanned = tmp_path / "host-a" / "archive"  # where the scanning host mounts the share
        copy_in(shared_audio_dir / CLIP, scanned / "box")
        data = tmp_path / "data"
        res = cli("scan", str(scanned), "--data", str(data), "--redis", url)
        assert res.returncode == 0, res.stderr
        elsewhere = tmp_path / "host-b"  # this host mounts the same share at another path
        (tmp_path / "host-a").rename(elsewhere)
        worker = cli_cmd("worker", "--burst", "--compute", "cpu", "--threads", "1", "--data", str(data),
                         "--redis", url, "--outputs", "beside", "--path-map", f"{tmp_path / 'host-a'}={elsewhere}")
        res = subprocess.run(worker, cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        with Catalog.open(sqlite_url_for(data)) as cat, cat.read() as session:
            row = session.scalars(select(m.MediaFile)).one()
            assert row.path == str(scanned / "box" / CLIP)  # the catalog keeps the scanning host's path
            assert row.status == Status.done, row.error
        assert (elsewhere / "archive" / "box" / "LJ002-0020.srt").is_file()  # beside the media, as mapped
    finally:
        conn.flushdb()
        conn.close()
