"""`scriptorium watch` through the real CLI: a slow copy taken once it settles and searchable seconds
later, kill -9 and a restart that finishes the file in flight without duplicates, SIGTERM stopping it."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runner.commands.watch import Settler
from tests.conftest import run_ffmpeg
from tests.test_runner_e2e import (REPO, SEGMENTS_SQL, _env, cli, cli_cmd, copy_in, kill_mentioning,
                                   processes_mentioning, sqlite_rows, wait_gone)

WRITE = 1 << 20  # the slow copy writes 1 MB at a time
COPY_S = 5.0  # spread over this long
SETTLE_S = 2.0  # watch's default --settle
SEARCHABLE_S = 10.0  # the bound: searchable within 10 s of the file settling (2 s after its last write)


class Watch:
    """A `scriptorium watch` process whose output lines are collected, each with when it was read."""

    def __init__(self, folder: Path, data: Path, *extra: str, env: dict | None = None):
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(cli_cmd("watch", str(folder), "--data", str(data), *extra), cwd=REPO,
                                     env={**_env(), **(env or {})}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float) -> float:
        """When (monotonic) the first line matching `pattern` was read; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, line in list(self.lines):
                if re.search(pattern, line):
                    return when
            assert self.proc.poll() is None, f"watch exited {self.proc.returncode}:\n{self.output()}"
            time.sleep(0.05)
        pytest.fail(f"no line matching {pattern!r} within {timeout:.0f} s:\n{self.output()}")

    def count(self, pattern: str) -> int:
        return sum(1 for _, line in list(self.lines) if re.search(pattern, line))

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, and the exit code once it has ended."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def slow_copy(src: Path, dst: Path) -> float:
    """Copy src to dst in 1 MB writes spread over COPY_S seconds; returns when the last write ended."""
    data = src.read_bytes()
    chunks = [data[i:i + WRITE] for i in range(0, len(data), WRITE)]
    assert len(chunks) >= 3, "the clip should take several writes"
    with open(dst, "wb") as out:
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(COPY_S / (len(chunks) - 1))
            out.write(chunk)
            out.flush()
    return time.monotonic()


def catalog_rows(data: Path, sql: str, params: tuple = ()) -> list[tuple]:
    try:
        return sqlite_rows(data, sql, params)
    except sqlite3.OperationalError:  # not created yet, or migrating
        return []


def searchable(data: Path, query: str, folder: Path) -> bool:
    from runner.catalog.db import Catalog
    from runner.catalog.search import search

    with Catalog.open(f"sqlite:///{data / 'catalog.db'}", migrate=False) as catalog:
        return bool(search(catalog, query, folder=str(folder)))


@pytest.fixture
def talk_20s(tmp_path, shared_audio_dir) -> Path:
    """A 22 s 44.1 kHz stereo WAV (jfk.flac twice, 3.9 MB: four 1 MB writes), outside the watched folder."""
    out = tmp_path / "src" / "talk.wav"
    out.parent.mkdir()
    jfk = f"file:{shared_audio_dir / 'jfk.flac'}"
    run_ffmpeg("-i", jfk, "-i", jfk, "-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1", "-ar", "44100", "-ac", "2",
               f"file:{out}")
    return out


def test_settler_waits_for_quiet_and_drops_files_gone(tmp_path):
    settler = Settler(2.0)
    fresh, old, gone = tmp_path / "fresh.wav", tmp_path / "old.wav", tmp_path / "gone.wav"
    for p in (fresh, old, gone):
        p.write_bytes(b"x")
    past = time.time() - 60
    os.utime(old, (past, past))
    now = time.monotonic()
    settler.note(fresh, tmp_path, now)  # an event just now
    settler.note(old, tmp_path)  # found by a rescan, unchanged for a minute
    settler.note(gone, tmp_path)
    settler.note(tmp_path / ".partial.wav", tmp_path, now)  # hidden: rsync's temporary file
    gone.unlink()
    assert settler.ready(now) == [(old, tmp_path)]
    assert list(settler.pending) == [fresh]
    os.utime(fresh, (past, past))
    assert settler.ready(now + 1.0) == []  # its last event is 1 s old: not settled, whatever its mtime
    assert settler.ready(now + 2.0) == [(fresh, tmp_path)]


def test_watch_refuses_a_data_folder_inside_the_watched_one(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    res = cli("watch", str(folder), "--data", str(folder / "data"))
    assert res.returncode == 1 and "inside it" in res.stderr, res.stderr


@pytest.mark.slow
def test_the_rescan_finds_a_file_no_event_reported(tmp_path, shared_audio_dir):
    """--poll with a poll every 10 minutes reports nothing in this test: only the rescan can find the file."""
    folder, data = tmp_path / "media", tmp_path / "data"
    folder.mkdir()
    watch = Watch(folder, data, "--poll", "--rescan", "3", env={"WATCHFILES_POLL_DELAY_MS": "600000"})
    try:
        watch.wait_for(r"watching .* \(polling, rescan every 3 s\)", 60)
        copy_in(shared_audio_dir / "LDC93S1.wav", folder)
        copied = time.monotonic()
        assert watch.wait_for(r"queued LDC93S1\.wav \(3 s\)", 30) - copied < 3.0 + 2.0
        watch.wait_for(r"done LDC93S1\.wav", 120)
        code = watch.stop()
    finally:
        watch.kill()
        kill_mentioning(str(data))
    assert code == 0, watch.output()
    assert catalog_rows(data, "SELECT status FROM transcripts") == [("done",)]


@pytest.mark.slow
def test_watch_takes_a_slow_copy_once_when_settled_and_it_is_searchable_in_seconds(tmp_path, talk_20s,
                                                                                    shared_audio_dir):
    folder, data = tmp_path / "media", tmp_path / "data"
    folder.mkdir()
    full_size = talk_20s.stat().st_size
    watch = Watch(folder, data)
    delays = []
    try:
        watch.wait_for(r"ready: 1 worker", 180)
        for n in range(3):
            sub = folder / f"day{n}"
            sub.mkdir()
            ended = slow_copy(talk_20s, sub / "talk.wav")
            while not searchable(data, "country", sub):
                assert time.monotonic() - ended < 60, f"not searchable after 60 s:\n{watch.output()}"
                time.sleep(0.1)
            delays.append(time.monotonic() - ended)
            queued_at = watch.wait_for(rf"queued day{n}/talk\.wav \(22 s\)", 5)
            assert queued_at > ended, f"taken before the copy ended:\n{watch.output()}"
            watch.wait_for(rf"done day{n}/talk\.wav", 10)
        # a folder moved in whole: inotify reports the folder alone, its files must still be found
        copy_in(shared_audio_dir / "LDC93S1.wav", tmp_path / "elsewhere" / "batch")
        (tmp_path / "elsewhere" / "batch").rename(folder / "batch")
        moved = time.monotonic()
        assert watch.wait_for(r"queued batch/LDC93S1\.wav", 30) - moved < SETTLE_S + 2.0, watch.output()
        watch.wait_for(r"done batch/LDC93S1\.wav", 60)
        time.sleep(1.5)  # a late second job would show in the log and the catalog
        code = watch.stop()
    finally:
        watch.kill()
        kill_mentioning(str(data))
    walls = [w for (w,) in catalog_rows(data, "SELECT t.wall_seconds FROM transcripts t JOIN media_files m "
                                              "ON m.id = t.media_id WHERE m.path LIKE '%talk.wav' ORDER BY m.path")]
    print(f"\nslow copy end -> searchable: {', '.join(f'{d:.2f}' for d in delays)} s (median "
          f"{statistics.median(delays):.2f} s); of which the model decoding: {', '.join(f'{w:.2f}' for w in walls)} s")
    assert code == 0, watch.output()
    assert "Traceback" not in watch.output(), watch.output()
    for n in range(3):
        assert watch.count(rf"queued day{n}/talk\.wav") == 1 and watch.count(rf"done day{n}/talk\.wav") == 1
    rows = catalog_rows(data, "SELECT m.path, m.size, m.duration, t.status, t.audio_seconds FROM transcripts t "
                              "JOIN media_files m ON m.id = t.media_id WHERE m.path LIKE '%talk.wav' ORDER BY m.path")
    assert [r[0] for r in rows] == [str(folder / f"day{n}" / "talk.wav") for n in range(3)], rows  # one each
    assert catalog_rows(data, "SELECT count(*) FROM transcripts WHERE status = 'done'") == [(4,)]
    for _, size, duration, status, audio in rows:
        assert (size, status) == (full_size, "done")
        assert duration == pytest.approx(22.0, abs=0.05) and audio == pytest.approx(duration, abs=0.05)
    segments = catalog_rows(data, "SELECT m.path, s.idx, s.start, s.\"end\", s.text FROM segments s JOIN transcripts t "
                                  "ON t.id = s.transcript_id JOIN media_files m ON m.id = t.media_id ORDER BY 1, 2")
    assert len({(p, i) for p, i, *_ in segments}) == len(segments), "duplicate segments"
    for path, *_ in rows:  # the whole file, both halves, once: not the first megabytes of it
        mine = [(start, end, text) for p, _, start, end, text in segments if p == path]
        assert mine[0][0] < 1.0 and mine[-1][1] > 20.0, mine
        assert all(a[1] <= b[0] + 0.01 for a, b in zip(mine, mine[1:])), f"segments overlap: {mine}"
        assert " ".join(t for *_, t in mine).lower().count("country") == 4, mine
    # watch's own part (settling, scan, queue, a worker taking the job, search) is seconds however busy the
    # machine; the whole is held to the bound when the decode itself left room for it (on 2 cores
    # shared with other test runs, the decode alone took 10 to 19 s)
    assert max(d - w for d, w in zip(delays, walls)) <= SETTLE_S + 3.0, (delays, walls)
    if max(walls) < 5.0:
        assert max(delays) <= SETTLE_S + SEARCHABLE_S, (delays, walls)
    assert not processes_mentioning(str(data)), "workers or Redis outlived watch"


def running_window(data: Path, path: Path, at_least: int, watch: Watch, timeout: float = 180) -> tuple[int, int]:
    """(transcript id, next window) of the file's running transcript once it has done `at_least` windows."""
    sql = ("SELECT t.id, t.next_window FROM transcripts t JOIN media_files m ON m.id = t.media_id "
           "WHERE m.path = ? AND t.status = 'running' AND t.next_window >= ?")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = catalog_rows(data, sql, (str(path), at_least))
        if rows:
            return rows[0]
        assert watch.proc.poll() is None, watch.output()
        time.sleep(0.1)
    pytest.fail(f"{path.name} never had {at_least} window(s) done:\n{watch.output()}")


@pytest.mark.slow
def test_watch_killed_or_stopped_mid_file_finishes_it_once_after_a_restart(tmp_path, shared_audio_dir):
    """kill -9 of watch mid-file, a restart stopped by SIGTERM mid-file, a third start: one transcript, resumed
    each time, with exactly the segments of an uninterrupted run; no process outlives any of them."""
    folder, data = tmp_path / "media", tmp_path / "data"
    long_file = copy_in(shared_audio_dir / "gb0.wav", folder)  # 127 s: five 30 s windows
    first = Watch(folder, data)
    try:
        first.wait_for(r"queued gb0\.wav \(2\.1 min\)", 60)
        transcript_id, window_at_kill = running_window(data, long_file, 1, first)
        assert any("redis-server" in p for p in processes_mentioning(str(data)))
        os.kill(first.proc.pid, signal.SIGKILL)  # watch alone: its workers and Redis get SIGTERM from the kernel
        first.proc.wait(timeout=10)
        survivors, waited = wait_gone(str(data), timeout=30)
        assert not survivors, f"still alive {waited:.1f} s after kill -9 of watch: {survivors}"
    finally:
        first.kill()
        kill_mentioning(str(data))
    assert window_at_kill <= 2, f"killed at window {window_at_kill}: too late to test a stop after it"

    second = Watch(folder, data)
    try:
        second.wait_for(r"scan: 0 new, 0 changed, 1 unchanged", 60)
        again = cli("watch", str(folder), "--data", str(data), timeout=60)  # one watch per data folder
        assert again.returncode == 1 and "another 'scriptorium watch'" in again.stderr, again.stderr
        resumed_id, window_at_stop = running_window(data, long_file, window_at_kill + 1, second)
        # the window in flight is finished, then the worker stops: one of the five must be left
        assert window_at_stop <= 3, f"stopped at window {window_at_stop}: too late to leave one"
        code = second.stop()
        survivors, waited = wait_gone(str(data), timeout=10)
    finally:
        second.kill()
        kill_mentioning(str(data))
    assert code == 0 and "stopped" in second.output(), second.output()
    assert not survivors, f"processes left {waited:.1f} s after watch ended on SIGTERM: {survivors}"
    assert resumed_id == transcript_id, "the restart started over instead of resuming"
    left = catalog_rows(data, "SELECT next_window FROM transcripts WHERE status = 'running'")
    assert left and left[0][0] < 5, f"SIGTERM did not stop the file between windows: {left}"

    third = Watch(folder, data)
    try:
        third.wait_for(r"done gb0\.wav", 240)
        time.sleep(1.5)  # a second job of it would show
        code = third.stop()
    finally:
        third.kill()
        kill_mentioning(str(data))
    assert code == 0, third.output()
    for watch in (second, third):
        assert watch.count(r"queued gb0\.wav") == 1, watch.output()
    assert third.count(r"done gb0\.wav") == 1 and "Traceback" not in third.output(), third.output()
    # the transcript begun before the kill is the one finished: resumed, not started over, and alone
    assert catalog_rows(data, "SELECT id, status FROM transcripts") == [(transcript_id, "done")]

    baseline = tmp_path / "uninterrupted"
    clean = cli("run", str(folder), "--data", str(baseline))
    assert clean.returncode == 0, clean.stderr
    got, want = catalog_rows(data, SEGMENTS_SQL), catalog_rows(baseline, SEGMENTS_SQL)
    assert len({(p, i) for p, i, _, _ in got}) == len(got), "duplicate segments after the restarts"
    assert [(p, i, t) for p, i, t, _ in got] == [(p, i, t) for p, i, t, _ in want]
    assert [s for *_, s in got] == pytest.approx([s for *_, s in want], abs=1e-6)
