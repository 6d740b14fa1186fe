"""`scriptorium run` on files copied in a moment before: it waits for them to settle and does them all,
and it never exits 0 having done nothing while media files were found (issue 18)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.test_runner_e2e import cli, copy_in

pytestmark = pytest.mark.slow
CLIPS = ("LDC93S1.wav", "jfk.flac", "arctic_a0024.wav")


def _slow_copy(src: Path, dst: Path, seconds: float, started: threading.Event) -> None:
    """Copy src to dst in small writes spread over `seconds`, as a copy over a slow link does."""
    data = src.read_bytes()
    steps = 12
    size = -(-len(data) // steps)
    with open(dst, "wb") as out:
        for i in range(steps):
            out.write(data[i * size:(i + 1) * size])
            out.flush()
            started.set()
            time.sleep(seconds / steps)


def _statuses(data: Path) -> dict[str, str]:
    with sqlite3.connect(data / "catalog.db") as db:
        return {Path(p).name: s for p, s in db.execute("SELECT path, status FROM media_files")}


def test_run_takes_files_copied_just_before(tmp_path, shared_audio_dir):
    """`cp -r archive a && scriptorium run a`: the copies are seconds old, and one is still being
    written when the scan passes. Before the fix: '0 new ... 4 still being written', done 0, exit 0."""
    folder = tmp_path / "a"
    folder.mkdir()
    for name in CLIPS:
        shutil.copyfile(shared_audio_dir / name, folder / name)  # mtime: now
    started = threading.Event()
    writer = threading.Thread(target=_slow_copy, args=(shared_audio_dir / "gb0.wav", folder / "gb0.wav", 6.0, started))
    writer.start()
    started.wait(10)
    data = tmp_path / "data"
    res = cli("run", str(folder), "--data", str(data))
    writer.join()
    assert res.returncode == 0, res.stderr
    assert "waiting for" in res.stderr
    assert _statuses(data) == {name: "done" for name in (*CLIPS, "gb0.wav")}
    with sqlite3.connect(data / "catalog.db") as db:  # gb0 was taken whole, not half written
        (duration,) = db.execute("SELECT duration FROM media_files WHERE path LIKE '%gb0.wav'").fetchone()
    assert duration == pytest.approx(127.4, abs=0.5)


def test_run_leaves_a_file_that_never_settles_and_says_so(tmp_path, shared_audio_dir):
    folder = tmp_path / "a"
    copy_in(shared_audio_dir / "LDC93S1.wav", folder)
    live = folder / "live.wav"
    shutil.copyfile(shared_audio_dir / "jfk.flac", live)
    stop = threading.Event()

    def keep_touching():
        while not stop.wait(0.3):
            live.touch()

    toucher = threading.Thread(target=keep_touching)
    toucher.start()
    try:
        res = cli("run", str(folder), "--data", str(tmp_path / "data"), "--wait-for-writes", "3")
    finally:
        stop.set()
        toucher.join()
    assert res.returncode == 1, res.stderr
    assert "still being written" in res.stderr and "live.wav" in res.stderr
    assert _statuses(tmp_path / "data") == {"LDC93S1.wav": "done"}


def test_a_second_run_says_nothing_new_and_a_failed_file_exits_1(tmp_path, shared_audio_dir):
    folder = tmp_path / "a"
    copy_in(shared_audio_dir / "LDC93S1.wav", folder)
    data = tmp_path / "data"
    assert cli("run", str(folder), "--data", str(data)).returncode == 0
    again = cli("run", str(folder), "--data", str(data))
    assert again.returncode == 0 and "nothing new" in again.stderr, again.stderr
    with sqlite3.connect(data / "catalog.db") as db:
        db.execute("UPDATE media_files SET status = 'failed', error = 'decoder exploded'")
    failed = cli("run", str(folder), "--data", str(data))
    assert failed.returncode == 1, failed.stderr
    assert "failed in an earlier run" in failed.stderr and "retry" in failed.stderr
