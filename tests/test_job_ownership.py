"""Jobs that cannot lose or clobber work (issue 19), through the real CLI in subprocesses: one attempt
owns a transcript, outputs are never lost between the transcript and its files, secrets stay off
command lines, and a person's subtitles next to the media are never overwritten."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_catalog import pg_dsn  # noqa: F401 - a fixture
from tests.test_runner_e2e import REPO, _env, cli, cli_cmd, copy_in, redis_db_url  # noqa: F401 - a fixture
from tests.test_tls_redis import PASSWORD, tls_redis  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow
SEGMENTS_SQL = ("SELECT s.window, s.idx, s.start, s.end, s.text FROM segments s JOIN transcripts t "
                "ON t.id = s.transcript_id WHERE t.status = 'done' ORDER BY s.window, s.idx")


def rows(data: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(data / "catalog.db") as db:
        return db.execute(sql, args).fetchall()


def start_worker(log: Path, *args: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cli_cmd("worker", "--burst", "--compute", "cpu", "--threads", "1", "--batch", "1",
                                        *args), cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_a_released_job_and_its_stale_worker_leave_one_complete_transcript(tmp_path, shared_audio_dir,
                                                                           redis_db_url):  # noqa: F811
    """Worker A stops answering (SIGSTOP: no heartbeat), its job is released as a dead worker's and
    worker B resumes it; then A wakes up mid-window. A's next write is refused, A says so and stops;
    the transcript ends complete and equal to a fault-free run. Before the fix A's add_window deleted
    and rewrote B's windows (or B's A's) and a done transcript could miss some."""
    folder = tmp_path / "media"
    copy_in(shared_audio_dir / "gb0.wav", folder)  # 127 s: five windows, one at a time on one thread
    baseline = tmp_path / "baseline"
    assert cli("scan", str(folder), "--data", str(baseline)).returncode == 0
    assert cli("worker", "--burst", "--batch", "1", "--threads", "1", "--data", str(baseline)).returncode == 0

    data = tmp_path / "data"
    common = ["--data", str(data), "--redis", redis_db_url]
    assert cli("scan", str(folder), *common).returncode == 0
    a = start_worker(tmp_path / "a.log", *common)
    wait_for(lambda: rows(data, "SELECT 1 FROM transcripts WHERE next_window >= 1"), 120, "A's first window")
    os.kill(a.pid, signal.SIGSTOP)
    try:  # A's heartbeat stops; make it a minute old, as after a long stall
        with sqlite3.connect(data / "catalog.db") as db:
            db.execute("UPDATE workers SET last_seen = '2000-01-01 00:00:00.000000' WHERE pid = ?", (a.pid,))
        b = start_worker(tmp_path / "b.log", *common)
        wait_for(lambda: rows(data, "SELECT 1 FROM transcripts WHERE owner LIKE ?", f"%.{b.pid}.%"), 120,
                 "B to take the transcript over")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert a.wait(180) == 0 and b.wait(180) == 0, (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    a_log = (tmp_path / "a.log").read_text()
    assert "was taken over by another attempt" in a_log and "gb0.wav" in a_log, a_log
    assert rows(data, "SELECT status FROM transcripts") == [("done",)]
    assert rows(data, "SELECT status FROM media_files") == [("done",)]
    got, want = rows(data, SEGMENTS_SQL), rows(baseline, SEGMENTS_SQL)
    assert [r[4] for r in got] == [r[4] for r in want]
    assert [t for r in got for t in r[2:4]] == pytest.approx([t for r in want for t in r[2:4]], abs=1e-6)
    assert len({r[:2] for r in got}) == len(got), "duplicate segments"


KILL_BEFORE_OUTPUTS = ("import os, runner.queue.jobs as j; "
                       "j.write_media_outputs = lambda *a, **k: os.kill(os.getpid(), 9); "
                       "from runner.commands.cli import main; main()")


def test_a_worker_killed_before_the_outputs_leaves_them_pending_and_run_writes_them(tmp_path, shared_audio_dir):
    """SIGKILL at the one moment between finish_transcript and the output files (the kill is placed
    there by swapping the writer for os.kill in that real worker process). `status` must not call
    the file done; the next `run` writes its outputs. Before the fix the file was done with no
    outputs, and nothing but `doctor --repair` wrote them."""
    folder = tmp_path / "media"
    clip = copy_in(shared_audio_dir / "jfk.flac", folder)
    data = tmp_path / "data"
    assert cli("scan", str(folder), "--data", str(data)).returncode == 0
    killed = subprocess.run([sys.executable, "-c", KILL_BEFORE_OUTPUTS, "worker", "--burst", "--data", str(data)],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert rows(data, "SELECT status FROM transcripts") == [("done",)]
    status = json.loads(cli("status", "--json", "--data", str(data)).stdout)
    assert status["counts"]["done"] == 0 and status["counts"]["outputs pending"] == 1, status["counts"]
    outputs = data / "outputs"
    assert not list(outputs.rglob("jfk.*"))
    again = cli("run", str(folder), "--data", str(data))
    assert again.returncode == 0, again.stderr
    assert sorted(p.suffix for p in outputs.rglob("jfk.*")) == [".json", ".srt", ".txt", ".vtt"]
    assert json.loads(cli("status", "--json", "--data", str(data)).stdout)["counts"]["done"] == 1
    assert rows(data, "SELECT count(*) FROM transcripts") == [(1,)], "the transcript was decoded again"
    assert clip.exists()


def _cmdlines(root: int) -> dict[int, str]:
    """Command lines of a process and all its descendants by pid, as `ps` shows them to any user."""
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return out


def _watch_cmdlines(proc: subprocess.Popen, want: int, timeout: float = 60) -> list[str]:
    """Every command line seen under proc until `want` worker processes were seen (or it ended)."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        seen.update(_cmdlines(proc.pid))
        if sum(" worker " in c for c in seen.values()) >= want:
            break
        time.sleep(0.05)
    return list(seen.values())


def test_no_password_on_any_command_line(tmp_path, shared_audio_dir, tls_redis, pg_dsn):  # noqa: F811
    """`run --redis rediss://:PW@...` and `workers --db postgresql://u:PW@...` start children: no
    process shows PW in `ps`. Before the fix the worker children had --db/--redis URLs on argv."""
    port, certs = tls_redis
    folder = tmp_path / "media"
    copy_in(shared_audio_dir / "LJ002-0020.wav", folder)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.pem'}"
    run = subprocess.Popen(cli_cmd("run", str(folder), "--data", str(tmp_path / "d1"), "--redis", url), cwd=REPO,
                           env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = _watch_cmdlines(run, 1)
    run.communicate(timeout=180)
    assert run.returncode == 0
    children = [c for c in seen if " worker " in c]
    assert children and not [c for c in children if PASSWORD in c], seen

    secret = "pg-Secret-42"  # the server trusts local connections, so any password is accepted
    db_url = pg_dsn.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@") \
        .replace("postgresql://root@", f"postgresql://root:{secret}@")
    assert secret in db_url
    pool = subprocess.Popen(cli_cmd("workers", "--cpu", "2", "--threads", "1", "--burst", "--data",
                                    str(tmp_path / "d2"), "--db", db_url), cwd=REPO, env=_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = _watch_cmdlines(pool, 2)
    pool.communicate(timeout=180)
    assert pool.returncode == 0
    children = [c for c in seen if " worker " in c]
    assert len(children) == 2 and not [c for c in children if secret in c], seen


def test_subtitles_a_person_made_beside_the_media_are_never_overwritten(tmp_path, shared_audio_dir, ffmpeg):
    folder = tmp_path / "media"
    folder.mkdir()
    talk = folder / "talk.mp3"
    ffmpeg("-i", f"file:{shared_audio_dir / 'jfk.flac'}", "-c:a", "libmp3lame", "-b:a", "64k", f"file:{talk}")
    handmade = folder / "talk.srt"
    handmade.write_text("1\n00:00:00,000 --> 00:00:05,000\nHand-made subtitles, do not touch\n")
    past = time.time() - 60
    os.utime(talk, (past, past))
    data = tmp_path / "data"
    first = cli("run", str(folder), "--data", str(data), "--outputs", "beside")
    assert first.returncode == 0, first.stderr
    assert "Hand-made subtitles" in handmade.read_text()
    assert f"not overwriting {handmade}" in first.stderr, first.stderr
    assert (folder / "talk.vtt").is_file() and (folder / "talk.txt").is_file()

    # new bytes: transcribed again; its own .vtt is replaced, the person's .srt still is not
    ffmpeg("-i", f"file:{shared_audio_dir / 'jfk.flac'}", "-t", "6", "-c:a", "libmp3lame", f"file:{talk}")
    os.utime(talk, (past + 1, past + 1))
    vtt_before = (folder / "talk.vtt").read_text()
    second = cli("run", str(folder), "--data", str(data), "--outputs", "beside")
    assert second.returncode == 0, second.stderr
    assert (folder / "talk.vtt").read_text() != vtt_before
    assert "Hand-made subtitles" in handmade.read_text()

    os.utime(talk, (past + 2, past + 2))
    with sqlite3.connect(data / "catalog.db") as db:  # forget the scan: the next run looks at the file again
        db.execute("UPDATE media_files SET mtime = NULL")
    overwrite = cli("run", str(folder), "--data", str(data), "--outputs", "beside", "--overwrite")
    assert overwrite.returncode == 0, overwrite.stderr
    assert "Hand-made subtitles" not in handmade.read_text(), "--overwrite must replace it"
