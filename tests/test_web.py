"""`scriptorium serve`: search, read along and backlog pages against real transcripts, in headless Chromium;
media served only from scan roots (traversal, symlinks, unknown ids get 404), with range requests.

The catalog is built once from recordings of ../shared/audio (LDC93S1.wav as is and inside a longer
panel.flac, a LibriSpeech flac, three sentences muxed into an mp4 with a video track), transcribed
in-process with tiny.en on CPU. Screenshots of the pages go to the test's
temp folder and to artifacts/web/ at the repository root (ignored by git) to be looked at.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from runner.catalog import models as m
from runner.catalog.status import Status
from tests.test_catalog import catalog, empty_db_url, pg_dsn  # noqa: F401 - fixtures for both backends
from tests.test_runner_e2e import redis_db_url  # noqa: F401 - an empty local Redis database

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "web"
PHRASE = "greasy wash"  # LDC93S1: "She had your dark suit in greasy wash water all year." ("water" is
# heard as "for" on an AMD AVX2 CPU, whose int8 kernels (oneDNN) round unlike the MKL ones of others)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Archive:
    root: Path
    outside: Path
    catalog: object
    ids: dict  # name -> media id


def _age(path: Path) -> None:
    """Make a file look settled to the scanner (it skips files written in the last seconds)."""
    old = time.time() - 60
    os.utime(path, (old, old))


def concat(ffmpeg, parts: list[Path], out: Path, gap_s: float = 1.2) -> None:
    """Recordings one after another, each followed by a short silence, as one 16 kHz mono file."""
    inputs = [arg for p in parts for arg in ("-i", f"file:{p}")]
    chains = "".join(f"[{i}:a]aresample=16000,aformat=channel_layouts=mono,apad=pad_dur={gap_s}[a{i}];"
                     for i in range(len(parts)))
    joined = "".join(f"[a{i}]" for i in range(len(parts)))
    ffmpeg(*inputs, "-filter_complex", f"{chains}{joined}concat=n={len(parts)}:v=0:a=1[out]", "-map", "[out]",
           f"file:{out}")


def _add_row(catalog, **values) -> int:
    with catalog.write() as session:
        row = m.MediaFile(status=Status.skipped, attempts=0, errors_log=[], **values)
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture(scope="module")
def archive(tmp_path_factory, shared_audio_dir, cpu_transcriber, ffmpeg) -> Archive:
    """A scanned, transcribed archive: a wav, a flac and an mp4 done, one file failed, and rows that point
    out of the scan root (a symlink, an absolute path elsewhere, a `..` path, no root at all)."""
    from engine.options import TranscribeOptions
    from runner.config import Settings
    from runner.config import sqlite_url_for
    from runner.catalog.db import Catalog
    from runner.queue.jobs import WorkerContext, set_context, transcribe_media
    from runner.queue.scanner import Scanner

    base = tmp_path_factory.mktemp("web")
    root, outside, data = base / "archive", base / "outside", base / "data"
    for folder in ("interviews", "books", "video", "broken"):
        (root / folder).mkdir(parents=True)
    outside.mkdir()
    shutil.copy2(shared_audio_dir / "LDC93S1.wav", root / "interviews" / "LDC93S1.wav")
    shutil.copy2(shared_audio_dir / "1089-134686-0000.flac", root / "books" / "stew.flac")
    shutil.copy2(shared_audio_dir / "speechbrain_spk2_snt2.wav", root / "broken" / "tape.wav")
    # the phrase again, a few seconds into a longer recording, so that seeking to it is a real move
    concat(ffmpeg, [shared_audio_dir / n for n in ("speechbrain_spk1_snt2.wav", "LDC93S1.wav",
                                                   "speechbrain_spk1_snt5.wav")], root / "interviews" / "panel.flac")
    sentences = base / "sentences.wav"
    concat(ffmpeg, [shared_audio_dir / n for n in ("speechbrain_spk1_snt4.wav", "speechbrain_example1.wav",
                                                   "speechbrain_spk2_snt4.wav")], sentences)
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-i", f"file:{sentences}",
           "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", "-movflags", "+faststart", f"file:{root / 'video' / 'sentences.mp4'}")
    for made in (root / "interviews" / "panel.flac", root / "video" / "sentences.mp4"):
        _age(made)
    shutil.copy2(shared_audio_dir / "LDC93S1.wav", outside / "secret.wav")

    settings = Settings(data, sqlite_url_for(data), None)
    catalog = Catalog.open(settings.db_url)
    summary = Scanner(catalog).scan([root])
    with catalog.read() as session:
        ids = {Path(p).name: i for i, p in session.execute(select(m.MediaFile.id, m.MediaFile.path))}
    assert set(ids) == {"LDC93S1.wav", "panel.flac", "stew.flac", "tape.wav", "sentences.mp4"}, summary.line()
    set_context(WorkerContext(settings, catalog, cpu_transcriber))
    try:
        for name in ("LDC93S1.wav", "panel.flac", "stew.flac", "sentences.mp4"):
            result = transcribe_media(ids[name], TranscribeOptions().to_dict())
            assert result["status"] == "done", result
    finally:
        set_context(None)
    catalog.record_failure(ids["tape.wav"], "ffmpeg: Invalid data found when processing input", True, 3)

    (root / "link.wav").symlink_to(outside / "secret.wav")
    ids["link"] = _add_row(catalog, path=str(root / "link.wav"), scan_root=str(root))
    ids["elsewhere"] = _add_row(catalog, path=str(outside / "secret.wav"), scan_root=str(root))
    ids["dotdot"] = _add_row(catalog, path=f"{root}/../outside/secret.wav", scan_root=str(root))
    ids["no_root"] = _add_row(catalog, path=str(outside / "secret.wav") + ".copy", scan_root=None)
    shutil.copy2(outside / "secret.wav", outside / "secret.wav.copy")
    ids["relative"] = _add_row(catalog, path="secret.wav", scan_root="outside")
    yield Archive(root, outside, catalog, ids)
    catalog.close()


@contextlib.contextmanager
def serving(app):
    """`app` under uvicorn in a thread on 127.0.0.1 and a free port; yields its base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(archive) -> str:
    from runner.web.app import create_app

    with serving(create_app(archive.catalog)) as base:
        yield base


def get(base: str, target: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    """One raw request (the target is sent exactly as given: no normalisation of `..` or `%2f`)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- browser

def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Debian's chromium is not installed (apt-get install chromium): browser tests need it")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) drives Chromium")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield pg
    context.close()
    assert not errors, f"errors in the page: {errors}"


def shot(pg, tmp_path: Path, name: str) -> Path:
    """Screenshot the whole page into tmp_path and artifacts/web/."""
    path = tmp_path / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, ARTIFACTS / path.name)
    return path


SEEKED_AND_HIGHLIGHTED = """([start]) => {
    const media = document.getElementById('player');
    const cur = document.querySelector('.seg.current');
    return media && media.readyState >= 1 && Math.abs(media.currentTime - start) < 1 && cur !== null
        && Math.abs(parseFloat(cur.dataset.start) - start) < 0.01;
}"""


def test_search_then_click_a_hit_plays_from_that_moment(server, archive, page, tmp_path):
    page.goto(server + "/")
    page.fill("#q", PHRASE)
    page.press("#q", "Enter")
    page.wait_for_url("**/search?*")
    page.locator(".hit a").first.wait_for()
    assert sorted(page.locator(".file-hits h2").all_inner_texts()) == ["LDC93S1.wav", "panel.flac"]
    assert page.locator(".hit mark").count() == 4  # each word of the phrase, in each file
    panel = page.locator(".file-hits", has=page.locator("h2", has_text="panel.flac"))
    hit = panel.locator(".hit a").first
    assert PHRASE in hit.inner_text().lower()
    start = float(hit.get_attribute("data-start"))
    assert start > 3, "the phrase is said a few seconds into panel.flac"
    shot(page, tmp_path, "search")

    hit.click()
    page.wait_for_url(f"**/media/{archive.ids['panel.flac']}?t=*")
    page.wait_for_function(SEEKED_AND_HIGHLIGHTED, arg=[start], timeout=15000)
    current = page.locator(".seg.current")
    assert current.count() == 1 and "greasy" in current.inner_text().lower()
    assert page.locator("audio#player").count() == 1 and page.locator(".seg").count() >= 2
    assert page.locator("#model").inner_text() == "tiny.en"
    assert [a.get_attribute("href") for a in page.locator(".downloads a").all()] == [
        f"/media/{archive.ids['panel.flac']}/transcript.{f}" for f in ("srt", "vtt", "json", "txt")]
    assert "beam_size" in page.locator("#options").text_content()
    shot(page, tmp_path, "transcript_audio")


def test_clicking_a_segment_seeks_and_the_spoken_one_is_highlighted(server, archive, page, tmp_path):
    page.goto(f"{server}/media/{archive.ids['sentences.mp4']}")
    assert page.locator("video#player").count() == 1
    assert page.locator("video#player track[kind=subtitles]").get_attribute("src") == \
        f"/media/{archive.ids['sentences.mp4']}/subtitles.vtt"
    segs = page.locator(".seg")
    n = segs.count()
    assert n >= 2, "three sentences with pauses between them"
    starts = [float(segs.nth(i).get_attribute("data-start")) for i in range(n)]
    page.wait_for_function("() => document.getElementById('player').readyState >= 1", timeout=15000)
    segs.nth(n - 1).locator(".text").click()
    page.wait_for_function(SEEKED_AND_HIGHLIGHTED, arg=[starts[-1]], timeout=15000)
    assert starts[-1] > 3 and "current" in segs.nth(n - 1).get_attribute("class")
    assert page.url.endswith(f"?t={starts[-1]:.3f}")

    # playing on from just before the second segment: the highlight follows the media's clock
    page.evaluate("""([t]) => { const v = document.getElementById('player');
                                v.muted = true; v.currentTime = t; return v.play(); }""", [starts[1] - 0.4])
    page.wait_for_function(SEEKED_AND_HIGHLIGHTED, arg=[starts[1]], timeout=15000)
    page.evaluate("() => document.getElementById('player').pause()")
    assert page.locator(".seg.current").count() == 1
    shot(page, tmp_path, "transcript_video")


def test_backlog_page(server, archive, page, tmp_path):
    archive.catalog.heartbeat_worker("cuda-box-1", "gpu", "cuda-box", 4242)
    page.goto(server + "/backlog")
    counts = " ".join(page.locator("#counts").inner_text().split())
    assert "4 done" in counts and "1 failed" in counts
    done_s = page.locator("#hours-done").inner_text()
    assert done_s.endswith(" s") and 30 < int(done_s.split()[0]) < 60  # about 40 s of audio
    assert page.locator("#hours-left").inner_text() == "0 s"
    assert "real time" in page.locator("#throughput").inner_text()
    assert page.locator("#eta").inner_text() == "nothing left"
    assert page.locator("#throughput-chart rect.bar").count() >= 1
    failed = page.locator("#failed").inner_text()
    assert "tape.wav" in failed and "Invalid data found" in failed
    assert page.locator("#retry").is_visible()
    workers = page.locator("#workers tr").all_inner_texts()
    assert len(workers) == 2 and workers[1].split()[:3] == ["cuda-box-1", "gpu", "cuda-box"]
    shot(page, tmp_path, "backlog")


# --------------------------------------------------------------------------- HTTP

TRAVERSALS = [
    "/media/../../etc/passwd",
    "/media/../../../../../../etc/passwd/file",
    "/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
    "/media/..%2f..%2f..%2fetc%2fpasswd/file",
    "/media/1/file/../../../../etc/passwd",
    "/media/1%2f..%2f..%2f..%2fetc%2fpasswd",
    "/media/%252e%252e%252fetc%252fpasswd/file",
    "/media/..%5c..%5cetc%5cpasswd/file",
    "/media//etc/passwd",
    "/media//etc/passwd/file",
    "/media/%2fetc%2fpasswd/file",
    "/media/file:%2f%2f%2fetc%2fpasswd/file",
    "/etc/passwd",
    "//etc/passwd",
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e%2fapp.py",
    "/static/..",
    "/static/%2fetc%2fpasswd",
    "/media/1/transcript.%2e%2e%2f%2e%2e%2fetc%2fpasswd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_path_traversal_gets_404(server, target):
    status, _, body = get(server, target)
    assert status == 404, (target, status)
    assert b"root:" not in body


@pytest.mark.parametrize("target", ["/media/999999", "/media/999999/file", "/media/999999/subtitles.vtt",
                                    "/media/999999/transcript.srt", "/media/-1/file", "/media/abc", "/media/1.5/file",
                                    "/media/0/file", "/nope", "/media/99999999999999999999999/file",
                                    "/media/2147483648", "/media/9223372036854775808/transcript.srt"])
def test_unknown_ids_and_pages_get_404(server, target):
    assert get(server, target)[0] == 404


@pytest.mark.parametrize("row", ["link", "elsewhere", "dotdot", "no_root", "relative"])
def test_rows_pointing_out_of_their_scan_root_are_not_served(server, archive, row):
    media_id = archive.ids[row]
    status, _, body = get(server, f"/media/{media_id}/file")
    assert status == 404 and b"RIFF" not in body
    status, _, body = get(server, f"/media/{media_id}")
    assert status == 200 and b"cannot be played" in body and b"/file" not in body


def test_media_inside_the_root_is_served_whole_and_by_range(server, archive):
    path = archive.root / "interviews" / "LDC93S1.wav"
    data, media_id = path.read_bytes(), archive.ids["LDC93S1.wav"]
    status, headers, body = get(server, f"/media/{media_id}/file")
    assert status == 200 and body == data and headers["accept-ranges"] == "bytes"
    assert headers["content-type"].startswith("audio/")
    status, headers, body = get(server, f"/media/{media_id}/file", {"Range": "bytes=0-99"})
    assert status == 206 and body == data[:100]
    assert headers["content-range"] == f"bytes 0-99/{len(data)}" and headers["accept-ranges"] == "bytes"
    status, headers, body = get(server, f"/media/{media_id}/file", {"Range": f"bytes={len(data) - 10}-"})
    assert status == 206 and body == data[-10:]
    assert get(server, f"/media/{media_id}/file", {"Range": f"bytes={len(data) + 5}-"})[0] == 416
    status, headers, _ = get(server, f"/media/{archive.ids['sentences.mp4']}/file", {"Range": "bytes=0-1"})
    assert status == 206 and headers["content-type"] == "video/mp4"


def test_downloads_are_generated_from_the_catalog(server, archive):
    media_id = archive.ids["LDC93S1.wav"]
    bodies = {}
    for fmt in ("srt", "vtt", "json", "txt"):
        status, headers, body = get(server, f"/media/{media_id}/transcript.{fmt}")
        assert status == 200, fmt
        assert headers["content-disposition"] == f"attachment; filename*=utf-8''LDC93S1.{fmt}"
        bodies[fmt] = body.decode()
    assert PHRASE in bodies["txt"].lower()
    assert bodies["vtt"].startswith("WEBVTT") and " --> " in bodies["vtt"]
    assert bodies["srt"].startswith("1\n") and " --> " in bodies["srt"]
    doc = json.loads(bodies["json"])
    assert doc["model"] == "tiny.en" and doc["segments"] and "greasy" in doc["text"].lower()
    status, headers, body = get(server, f"/media/{media_id}/subtitles.vtt")
    assert status == 200 and headers["content-type"].startswith("text/vtt") and body.decode() == bodies["vtt"]
    assert get(server, f"/media/{media_id}/transcript.exe")[0] == 404
    assert get(server, f"/media/{archive.ids['tape.wav']}/transcript.srt")[0] == 404  # failed: no transcript


def _search(server, **params) -> str:
    from urllib.parse import urlencode

    status, _, body = get(server, "/search?" + urlencode(params))
    assert status == 200
    return body.decode()


def test_search_filters(server, archive):
    import datetime as dt

    today = dt.datetime.now(dt.timezone.utc).date()
    assert "LDC93S1.wav" in _search(server, q=PHRASE)
    assert "LDC93S1.wav" in _search(server, q=PHRASE, folder=str(archive.root / "interviews"), model="tiny.en")
    assert "No hits" in _search(server, q=PHRASE, folder=str(archive.root / "books"))
    assert "No hits" in _search(server, q=PHRASE, model="large-v3")
    assert "LDC93S1.wav" in _search(server, q=PHRASE, **{"from": today.isoformat(), "to": today.isoformat()})
    assert "No hits" in _search(server, q=PHRASE, **{"from": (today + dt.timedelta(days=1)).isoformat()})
    assert "No hits" in _search(server, q=PHRASE, to=(today - dt.timedelta(days=1)).isoformat())
    assert "LDC93S1.wav" in _search(server, q=PHRASE, **{"from": "not a date"})  # ignored
    hostile = _search(server, q='<script>alert(1)</script> " OR 1=1 --')
    assert "<script>alert(1)" not in hostile and "&lt;script&gt;" in hostile


def test_marked_text_is_escaped_and_brackets_in_the_text_survive():
    from runner.web.queries import marked_html

    assert marked_html(" a <b> c", " a <[b]> c") == " a &lt;<mark>b</mark>&gt; c"
    assert marked_html("[x] y", "[x] [y]") == "[x] <mark>y</mark>"
    assert marked_html("see [note] here", "see [note] [here]") == "see [note] <mark>here</mark>"
    ambiguous = marked_html("[x] y", "[[x]] y")  # either reading shows the same characters, x marked
    assert ambiguous.replace("<mark>", "").replace("</mark>", "") == "[x] y" and "<mark>x" in ambiguous
    assert marked_html("abc", "zzz") == "abc"  # not lined up: plain text


def test_retry_marks_failed_files_queued_and_refuses_other_sites(server, archive):
    tape = archive.ids["tape.wav"]

    def status_of() -> Status:
        with archive.catalog.read() as session:
            return session.get(m.MediaFile, tape).status

    try:
        status, _, _ = get(server, "/backlog/retry", {"Origin": "http://evil.example"}, method="POST", body=b"")
        assert status == 403 and status_of() == Status.failed
        assert get(server, "/backlog/retry")[0] == 405
        host = server.removeprefix("http://")
        status, headers, _ = get(server, "/backlog/retry", {"Origin": server, "Host": host}, method="POST", body=b"")
        assert status == 303 and headers["location"] == "/backlog?retried=1&enqueued=0"
        assert status_of() == Status.queued
        page = get(server, headers["location"])[2].decode()
        assert "1 file marked queued" in page and "scriptorium run" in page
    finally:
        archive.catalog.record_failure(tape, "ffmpeg: Invalid data found when processing input", True, 3)


def _retry_with(archive, redis_url: str) -> tuple[str, str]:
    """POST the retry button of an app given `redis_url`; (redirect location, backlog page). Re-fails the file."""
    from runner.web.app import create_app

    try:
        with serving(create_app(archive.catalog, redis_url=redis_url, queue_name="web-test")) as base:
            status, headers, _ = get(base, "/backlog/retry", {"Origin": base}, method="POST", body=b"")
            assert status == 303
            return headers["location"], get(base, headers["location"])[2].decode()
    finally:
        archive.catalog.record_failure(archive.ids["tape.wav"], "ffmpeg: Invalid data found", True, 3)


def test_retry_enqueues_when_a_redis_queue_is_given(archive, redis_db_url):  # noqa: F811
    from rq import Queue

    from runner.queue.jobqueue import connect, job_id

    location, page = _retry_with(archive, redis_db_url)
    assert location == "/backlog?retried=1&enqueued=1"
    assert "1 file queued again and sent to the workers" in page
    assert Queue("web-test", connection=connect(redis_db_url)).job_ids == [job_id(archive.ids["tape.wav"])]


def test_retry_with_redis_down_leaves_files_queued_and_says_so(archive):
    location, page = _retry_with(archive, f"redis://127.0.0.1:{free_port()}/0")
    assert location == "/backlog?retried=1&enqueued=0&queue_error=QueueUnreachable"
    assert "could not be reached: QueueUnreachable" in page and "scriptorium run" in page


def test_other_host_names_are_refused(server):
    """Bound to loopback, a page asked for under another name (DNS rebinding) is refused."""
    assert get(server, "/", {"Host": "evil.example"})[0] == 400
    status, headers, _ = get(server, "/")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]


def test_serve_command_listens_on_loopback(archive, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTORIUM_")}
    # --data: serve keeps uploads and its embedded Redis (the /v1 API's queue) in a data folder
    proc = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "serve", "--db",
                             archive.catalog.url.render_as_string(hide_password=False),
                             "--data", str(tmp_path / "data"), "--port", str(port)], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = get(f"http://127.0.0.1:{port}", "/backlog")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
                time.sleep(0.1)
        assert status == 200 and b"Backlog" in body
        if not Path("/proc/net/tcp").is_file():
            return
        with open("/proc/net/tcp") as fh:  # listening on 127.0.0.1 only (hex 0100007F)
            listening = [line.split()[1] for line in fh if line.split()[3] == "0A"]
        assert f"0100007F:{port:04X}" in listening and f"00000000:{port:04X}" not in listening
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_search_by_date_scanned_on_both_backends(catalog):
    """The date filter behind the search page, on SQLite and PostgreSQL: from inclusive, before exclusive, in UTC."""
    import datetime as dt

    from runner.catalog.search import search
    from tests.test_catalog import MODEL, add_media, make_segment, start

    utc, plus2 = dt.timezone.utc, dt.timezone(dt.timedelta(hours=2))
    for path, scanned in (("/archive/old.wav", dt.datetime(2023, 1, 5, 23, 30, tzinfo=utc)),
                          ("/archive/new.wav", dt.datetime(2024, 6, 1, 10, 0, tzinfo=plus2))):  # 08:00 UTC
        media_id = add_media(catalog, path, scanned_at=scanned)
        tid = start(catalog, media_id)[0]
        catalog.add_window(tid, 0, 480000, [make_segment("harbour lights at night", 0.0)])
        catalog.finish_transcript(tid, "en", 0.99, {}, 1.0, 10.0)

    def paths(**kw) -> list[str]:
        return sorted(h.path for h in search(catalog, "harbour", **kw))

    day = dt.datetime(2023, 1, 5, tzinfo=utc)
    assert paths() == ["/archive/new.wav", "/archive/old.wav"]
    assert paths(scanned_from=day, scanned_before=day + dt.timedelta(days=1)) == ["/archive/old.wav"]
    assert paths(scanned_before=dt.datetime(2023, 1, 5, 23, 30, tzinfo=utc)) == []
    assert paths(scanned_from=dt.datetime(2024, 6, 1, 8, 0, tzinfo=utc)) == ["/archive/new.wav"]
    assert paths(scanned_from=dt.datetime(2024, 6, 1, 8, 0, 1, tzinfo=utc)) == []
    assert paths(scanned_from=day, folder="/archive", model=MODEL["model_name"]) == ["/archive/new.wav",
                                                                                     "/archive/old.wav"]
    assert paths(scanned_from=day, model="not-" + MODEL["model_name"]) == []  # filters combine
