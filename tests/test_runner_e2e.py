"""`scriptorium run / scan / worker / status / search` end to end, through the real CLI in subprocesses.

Real speech from the shared corpus is copied into tmp_path (never into the repository). Every
file gets an mtime a minute in the past: the scanner skips files modified in the last 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_ffmpeg
from tests.test_catalog import pg_dsn, reset_pg_schema  # noqa: F401 - pg_dsn is a fixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHORT_S = 15.0  # longer corpus files are cut to CUT_S seconds (stream copy) to keep the run short
CUT_S = 6
OUTPUT_FORMATS = ("srt", "vtt", "json", "txt")


# --------------------------------------------------------------------------- helpers


def _env() -> dict:
    """This environment without SCRIPTORIUM_* settings, so only the command line decides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTORIUM_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner.commands.cli", *args]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `scriptorium ARGS` to completion and return it (stdout, stderr as text)."""
    return subprocess.run(cli_cmd(*args), cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def settle(*paths: Path) -> None:
    """Date files a minute back, so the scanner does not take them for files still being written."""
    past = time.time() - 60
    for p in paths:
        os.utime(p, (past, past))


def copy_in(src: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / (name or src.name)
    shutil.copyfile(src, dst)
    settle(dst)
    return dst


def shortest(manifest: list[dict], suffix: str) -> dict:
    entries = [e for e in manifest if e["file"].lower().endswith(suffix)]
    if not entries:
        pytest.skip(f"no {suffix} file in the shared corpus")
    return min(entries, key=lambda e: e["duration_s"])


def short_copy(shared: Path, entry: dict, folder: Path) -> Path:
    """The corpus file copied into folder, or its first CUT_S seconds (no re-encoding) if it is long."""
    src = shared / entry["file"]
    if entry["duration_s"] <= SHORT_S:
        return copy_in(src, folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{src.stem}_cut{src.suffix}"
    run_ffmpeg("-i", f"file:{src}", "-t", str(CUT_S), "-map", "0:a", "-c", "copy", f"file:{out}")
    settle(out)
    return out


def status_json(data: Path, *extra: str) -> dict:
    res = cli("status", "--json", "--data", str(data), *extra)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def by_path(report: dict) -> dict[str, dict]:
    return {f["path"]: f for f in report["files"]}


def sqlite_rows(data: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the run's catalog directly (read-only; WAL lets us read while workers write)."""
    conn = sqlite3.connect(f"file:{data / 'catalog.db'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


SEGMENTS_SQL = """
SELECT m.path, s.idx, s.text, s.start FROM segments s
JOIN transcripts t ON t.id = s.transcript_id JOIN media_files m ON m.id = t.media_id
WHERE t.status = 'done' ORDER BY m.path, s.idx
"""


def processes_mentioning(text: str) -> list[str]:
    """Command lines (from /proc) of live processes whose arguments contain `text`, this test excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = next((ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if text.encode() in raw and "zombie" not in state:
            args = raw.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {args}")
    return found


def wait_gone(text: str, timeout: float) -> tuple[list[str], float]:
    """Wait until no process mentions `text`; returns (survivors, seconds waited)."""
    started = time.monotonic()
    while True:
        left = processes_mentioning(text)
        if not left or time.monotonic() - started > timeout:
            return left, time.monotonic() - started
        time.sleep(0.2)


def kill_mentioning(text: str) -> None:
    """Test clean-up: SIGKILL whatever process a failed test left behind (matched by its own path)."""
    for line in processes_mentioning(text):
        try:
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------- run end to end


@pytest.fixture
def mixed_folder(tmp_path, shared_audio_dir, manifest, media_factory):
    """A folder of good media in every format and of bad files: (folder, good paths, bad paths)."""
    folder = tmp_path / "media"
    good = [copy_in(shared_audio_dir / "LDC93S1.wav", folder)]
    librispeech_flac = [e for e in manifest if e["file"].endswith(".flac") and e["file"][0].isdigit()]
    good.append(copy_in(shared_audio_dir / min(librispeech_flac, key=lambda e: e["duration_s"])["file"], folder))
    for suffix in (".mp3", ".ogg", ".m4a"):
        good.append(short_copy(shared_audio_dir, shortest(manifest, suffix), folder))
    good.append(copy_in(media_factory.get("mp4"), folder, "jfk_video.mp4"))  # mpeg4 video + aac, from jfk.flac
    bad = [copy_in(media_factory.get("empty"), folder, "empty.wav"),
           copy_in(media_factory.get("random_mp3"), folder, "random_bytes.mp3"),
           copy_in(media_factory.get("truncated_m4a"), folder, "truncated.m4a")]
    notes = folder / "notes.txt"
    notes.write_text("not audio at all\n", encoding="utf-8")
    settle(notes)
    bad.append(notes)
    stems = [p.stem for p in good + bad]
    assert len(set(stems)) == len(stems), "outputs are named by stem: keep the stems distinct"
    return folder, good, bad


def check_outputs(outputs: Path, media: Path) -> None:
    """The four outputs of a done file exist and parse."""
    import srt
    import webvtt

    files = {fmt: outputs / f"{media.stem}.{fmt}" for fmt in OUTPUT_FORMATS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    assert not missing, f"{media.name}: missing outputs {missing}"
    cues = list(srt.parse(files["srt"].read_text(encoding="utf-8")))
    assert cues and all(c.content.strip() for c in cues), media.name
    vtt = webvtt.read(str(files["vtt"]))
    assert len(vtt) > 0 and all(c.text.strip() for c in vtt), media.name
    doc = json.loads(files["json"].read_text(encoding="utf-8"))
    assert doc, media.name
    assert files["txt"].read_text(encoding="utf-8").strip(), media.name


def test_run_end_to_end(tmp_path, mixed_folder, manifest_by_file):
    folder, good, bad = mixed_folder
    data = tmp_path / "data"

    first = cli("run", str(folder), "--data", str(data))
    # Bad files are "skipped" at scan time, not failed: every media file got done, so exit 0.
    assert first.returncode == 0, f"stdout:\n{first.stdout}\nstderr:\n{first.stderr}"
    assert f"{len(good)} new" in first.stderr and f"{len(bad)} not media" in first.stderr, first.stderr
    assert f"done {len(good)}, failed 0, unfinished 0" in first.stdout, first.stdout

    report = status_json(data)
    files = by_path(report)
    assert set(files) == {str(p) for p in good + bad}
    for p in good:
        assert files[str(p)]["status"] == "done", files[str(p)]
        assert files[str(p)]["model"], files[str(p)]
    for p in bad:
        assert files[str(p)]["status"] in ("skipped", "failed"), files[str(p)]
        assert (files[str(p)]["error"] or "").strip(), files[str(p)]
    assert report["counts"]["done"] == len(good)
    assert report["audio_hours_left"] == 0

    outputs = data / "outputs"
    for p in good:
        check_outputs(outputs, p)
    for p in bad:
        assert not list(outputs.glob(f"{p.stem}.*")), f"outputs written for bad file {p.name}"

    # Search: a phrase tiny.en gets right in LDC93S1 ("She had your dark suit in greasy wash water all year";
    # "water" is heard as "for" on an AMD AVX2 CPU, whose int8 kernels (oneDNN) round unlike MKL's).
    assert "greasy wash" in manifest_by_file["LDC93S1.wav"]["reference"]
    found = cli("search", "--json", "greasy wash", "--data", str(data))
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits, "no hit for a phrase of LDC93S1.wav"
    assert hits[0]["path"] == str(folder / "LDC93S1.wav")
    assert 0 <= hits[0]["start"] < hits[0]["end"] <= manifest_by_file["LDC93S1.wav"]["duration_s"] + 0.5
    assert "[greasy]" in hits[0]["marked"]

    # Run again: nothing is transcribed twice.
    segments_before = sqlite_rows(data, SEGMENTS_SQL)
    second = cli("run", str(folder), "--data", str(data))
    assert second.returncode == 0, second.stderr
    assert "0 new, 0 changed" in second.stderr and f"{len(good) + len(bad)} unchanged" in second.stderr, second.stderr
    assert "done 0, failed 0, unfinished 0" in second.stdout, second.stdout
    assert sqlite_rows(data, SEGMENTS_SQL) == segments_before
    assert sqlite_rows(data, "SELECT count(*) FROM transcripts") == [(len(good),)]


# --------------------------------------------------------------------------- kill -9 and resume


def test_run_resumes_after_sigkill(tmp_path, shared_audio_dir):
    """kill -9 `run` in the middle of a long file: no process survives, and a second run resumes
    that very transcript and ends with exactly the segments of an uninterrupted run."""
    folder = tmp_path / "media"
    long_file = copy_in(shared_audio_dir / "gb0.wav", folder)  # 127 s: five 30 s windows
    copy_in(shared_audio_dir / "LDC93S1.wav", folder)
    copy_in(shared_audio_dir / "1089-134691-0000.flac", folder)
    data = tmp_path / "killed"

    proc = subprocess.Popen(cli_cmd("run", str(folder), "--data", str(data)), cwd=REPO, env=_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        running = []
        deadline = time.monotonic() + 180
        while not running and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if (data / "catalog.db").exists():
                try:
                    running = sqlite_rows(data, "SELECT t.id, t.next_window FROM transcripts t JOIN media_files m "
                                                "ON m.id = t.media_id WHERE m.path = ? AND t.status = 'running' "
                                                "AND t.next_window >= 1", (str(long_file),))
                except sqlite3.OperationalError:  # tables not created yet
                    running = []
        assert running, f"gb0.wav never had a window done while running:\n{proc.communicate()[0].decode()}"
        before = processes_mentioning(str(data))
        assert any("redis-server" in p for p in before) and any(" worker " in p for p in before), before
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        survivors, waited = wait_gone(str(data), timeout=20)
        assert not survivors, f"processes of the killed run still alive after {waited:.1f} s: {survivors}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        kill_mentioning(str(data))
    transcript_id, window_at_kill = running[0]
    assert window_at_kill < 5, "killed too late: gb0.wav was already done"
    assert sqlite_rows(data, "SELECT status FROM media_files WHERE path = ?", (str(long_file),)) != [("done",)]

    resumed = cli("run", str(folder), "--data", str(data))
    assert resumed.returncode == 0, f"stdout:\n{resumed.stdout}\nstderr:\n{resumed.stderr}"
    # The transcript begun before the kill is the one that finished (resumed, not started over).
    assert sqlite_rows(data, "SELECT t.id FROM transcripts t JOIN media_files m ON m.id = t.media_id "
                             "WHERE m.path = ? AND t.status = 'done'", (str(long_file),)) == [(transcript_id,)]

    baseline = tmp_path / "uninterrupted"
    clean = cli("run", str(folder), "--data", str(baseline))
    assert clean.returncode == 0, clean.stderr

    got, want = sqlite_rows(data, SEGMENTS_SQL), sqlite_rows(baseline, SEGMENTS_SQL)
    assert len({(p, i) for p, i, _, _ in got}) == len(got), "duplicate segments after resume"
    assert [(p, i, t) for p, i, t, _ in got] == [(p, i, t) for p, i, t, _ in want]
    assert [s for *_, s in got] == pytest.approx([s for *_, s in want], abs=1e-6)
    for path in {p for p, *_ in got}:
        assert sqlite_rows(data, "SELECT count(*) FROM transcripts t JOIN media_files m ON m.id = t.media_id "
                                 "WHERE m.path = ?", (path,)) == [(1,)]


# --------------------------------------------------------------------------- PostgreSQL + two workers


@pytest.fixture
def redis_db_url():
    """A URL of an empty database of the local Redis (127.0.0.1:6379), flushed afterwards."""
    import redis

    try:
        redis.Redis(socket_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"local Redis unreachable: {exc}")
    wanted = os.environ.get("SCRIPTORIUM_TEST_REDIS_DB")
    for n in ([int(wanted)] if wanted else range(14, 0, -1)):
        conn = redis.Redis(db=n)
        if conn.dbsize() == 0 and conn.set("scriptorium-test-claim", os.getpid(), nx=True, ex=900):
            break
    else:
        pytest.skip("no empty Redis database on 127.0.0.1:6379")
    yield f"redis://127.0.0.1:6379/{n}"
    conn.flushdb()
    conn.close()


def test_scan_and_two_workers_postgres(tmp_path, shared_audio_dir, pg_dsn, redis_db_url):  # noqa: F811
    import psycopg

    reset_pg_schema(pg_dsn)
    db_url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    folder = tmp_path / "media"
    names = ["LDC93S1.wav", "1089-134691-0000.flac", "speechbrain_spk2_snt1.wav", "speechbrain_spk2_snt2.wav",
             "speechbrain_spk2_snt3.wav", "ohf_kathleen_arctic_a0001_1592748574.mp3"]
    media = [copy_in(shared_audio_dir / n, folder) for n in names]
    data = tmp_path / "data"
    common = ["--data", str(data), "--db", db_url, "--redis", redis_db_url]

    scan = cli("scan", str(folder), *common)
    assert scan.returncode == 0, scan.stderr
    assert f"{len(media)} new" in scan.stdout, scan.stdout

    worker = cli_cmd("worker", "--burst", "--compute", "cpu", "--threads", "1", *common)
    procs = [subprocess.Popen(worker, cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True) for _ in range(2)]
    try:
        logs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(logs)
    assert not [log for log in logs if "Traceback" in log], "\n---\n".join(logs)

    with psycopg.connect(pg_dsn) as conn:
        statuses = dict(conn.execute("SELECT path, status FROM media_files").fetchall())
        transcripts = conn.execute("SELECT media_id, status FROM transcripts ORDER BY media_id").fetchall()
        dup_idx = conn.execute("SELECT transcript_id, idx, count(*) FROM segments GROUP BY transcript_id, idx "
                               "HAVING count(*) > 1").fetchall()
        dup_text = conn.execute("SELECT transcript_id, start, text, count(*) FROM segments "
                                "GROUP BY transcript_id, start, text HAVING count(*) > 1").fetchall()
        n_segments = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
    assert statuses == {str(p): "done" for p in media}, "\n---\n".join(logs)
    assert len(transcripts) == len(media) and {s for _, s in transcripts} == {"done"}, transcripts
    assert len({m for m, _ in transcripts}) == len(media)
    assert not dup_idx and not dup_text
    assert n_segments >= len(media)
    for p in media:
        check_outputs(data / "outputs", p)

    rescan = cli("scan", str(folder), *common)
    assert rescan.returncode == 0, rescan.stderr
    assert f"0 new, 0 changed, {len(media)} unchanged" in rescan.stdout, rescan.stdout
