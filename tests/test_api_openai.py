"""The official `openai` client against `scriptorium serve --workers 1`: json, text, verbose_json with
segments and words, srt and vtt (parsed by `srt` and `webvtt-py`), translations, bad requests, and the
end-to-end latency of one 11 s clip with a warm worker. serve stops its worker when it stops."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

import httpx
import openai
import pytest
import srt
import webvtt
from sqlalchemy.exc import OperationalError

from bench.wer import word_errors
from runner.config import sqlite_url_for
from runner.catalog.db import Catalog
from tests.test_api_auth import REPO, env, free_port, leftovers
from tests.test_faults import claim_redis_db

pytestmark = pytest.mark.slow
CLIP = "jfk.flac"


class Serve:
    def __init__(self, url: str, data, catalog: Catalog, proc: subprocess.Popen):
        self.url, self.data, self.catalog, self.proc = url, data, catalog, proc
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed-on-loopback", max_retries=0)


def alive(catalog: Catalog) -> bool:
    """A worker has beaten its heart (False while serve is still creating the tables)."""
    try:
        return bool(catalog.alive_workers(30))
    except OperationalError:
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`scriptorium serve --workers 1` on a claimed Redis database and a fresh data folder, its worker up."""
    redis_url, conn = claim_redis_db()
    data, port = tmp_path_factory.mktemp("serve") / "data", free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runner.commands.cli", "serve", "--data", str(data), "--redis", redis_url,
                             "--port", str(port), "--workers", "1", "--wait-timeout", "120"],
                            cwd=REPO, env=env(), stdin=subprocess.DEVNULL)
    catalog = None
    try:
        deadline = time.monotonic() + 120
        while catalog is None or not alive(catalog):
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "no worker came up within 120 s"
            time.sleep(0.2)
            if catalog is None and (data / "catalog.db").exists():
                catalog = Catalog.open(sqlite_url_for(data), migrate=False)
        yield Serve(f"http://127.0.0.1:{port}", data, catalog, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        if catalog is not None:
            catalog.close()
        conn.flushdb()
        conn.close()


def reference(manifest_by_file, name: str = CLIP) -> str:
    return manifest_by_file[name]["reference"]


def wer(ref: str, hyp: str) -> float:
    errors = word_errors(ref, hyp)
    return (errors.substitutions + errors.deletions + errors.insertions) / errors.reference_words


def seconds(clock: str) -> float:
    """'00:01:02.345' -> 62.345"""
    h, m, s = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_json_transcript_matches_the_reference(served, shared_audio_dir, manifest_by_file):
    with open(shared_audio_dir / CLIP, "rb") as fh:
        result = served.client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert wer(reference(manifest_by_file), result.text) < 0.1, result.text
    assert result.usage.seconds == 11


def test_verbose_json_has_segments_and_words_in_order(served, shared_audio_dir, manifest_by_file):
    result = served.client.audio.transcriptions.create(
        model="whisper-1", file=shared_audio_dir / CLIP, response_format="verbose_json",
        timestamp_granularities=["segment", "word"])
    assert abs(result.duration - 11.0) < 0.05 and result.language == "en"
    assert result.segments and result.words
    last = 0.0
    for seg in result.segments:
        assert last <= seg.start <= seg.end <= result.duration + 1e-3
        assert seg.tokens and -5 < seg.avg_logprob <= 0 and 0 <= seg.no_speech_prob <= 1
        last = seg.start
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(w.start <= w.end <= result.duration + 1e-3 for w in result.words)
    joined = " ".join(w.word for w in result.words)
    assert word_errors(" ".join(s.text for s in result.segments), joined).errors == 0, joined
    assert wer(reference(manifest_by_file), result.text) < 0.1
    words_only = served.client.audio.transcriptions.create(
        model="whisper-1", file=shared_audio_dir / CLIP, response_format="verbose_json",
        timestamp_granularities=["word"])
    assert words_only.words and not words_only.segments


def test_srt_and_vtt_parse_and_follow_the_speech(served, shared_audio_dir, manifest_by_file):
    text = {fmt: served.client.audio.transcriptions.create(model="whisper-1", file=shared_audio_dir / CLIP,
                                                           response_format=fmt) for fmt in ("srt", "vtt", "text")}
    assert all(isinstance(t, str) for t in text.values())
    subs = list(srt.parse(text["srt"]))
    captions = webvtt.from_string(text["vtt"]).captions
    assert len(subs) >= 2 and len(captions) == len(subs)
    for cue, caption in zip(subs, captions):
        assert cue.start < cue.end and abs(cue.start.total_seconds() - seconds(caption.start)) < 0.002
        assert cue.end.total_seconds() <= 11.0
    for later, earlier in zip(subs[1:], subs):
        assert later.start >= earlier.end
    ref = reference(manifest_by_file)
    assert wer(ref, " ".join(c.content for c in subs)) < 0.1
    assert wer(ref, " ".join(c.text for c in captions)) < 0.1
    assert wer(ref, text["text"]) < 0.1


def test_translation_of_english_speech_is_english_text(served, shared_audio_dir, manifest_by_file):
    result = served.client.audio.translations.create(model="whisper-1", file=shared_audio_dir / CLIP)
    assert wer(reference(manifest_by_file), result.text) < 0.1
    jobs = httpx.get(f"{served.url}/v1/jobs", params={"limit": 1}).json()["data"]
    assert jobs[0]["kind"] == "translation" and jobs[0]["options"]["task"] == "translate"


def test_prompt_and_language_reach_the_workers_job(served, shared_audio_dir):
    prompt = "President Kennedy's inaugural address."
    served.client.audio.transcriptions.create(model="whisper-1", file=shared_audio_dir / "LDC93S1.wav",
                                              language="en", prompt=prompt, temperature=0.3)
    job = httpx.get(f"{served.url}/v1/jobs", params={"limit": 1}).json()["data"][0]
    info = served.catalog.transcript_info(job["media_id"])
    assert info.options["initial_prompt"] == prompt and info.options["language"] == "en"
    assert info.options["temperatures"] == [0.3]


def test_bad_requests_are_400_and_leave_no_upload(served, shared_audio_dir, tmp_path):
    before = leftovers(served.data)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        served.client.audio.transcriptions.create(model="whisper-1", file=shared_audio_dir / CLIP,
                                                  response_format="diarized_json")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        served.client.audio.transcriptions.create(model="whisper-1", file=shared_audio_dir / CLIP, temperature=1.5)
    noise = tmp_path / "notes.mp3"
    noise.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(openai.BadRequestError, match="not an audio"):
        served.client.audio.transcriptions.create(model="whisper-1", file=noise)
    assert leftovers(served.data) == before


def test_latency_of_one_clip_with_a_warm_worker(served, shared_audio_dir):
    """End to end (upload, catalogue, queue, decode, answer) for an 11 s clip: median of 5."""
    served.client.audio.transcriptions.create(model="whisper-1", file=shared_audio_dir / CLIP)  # warm
    took = []
    for _ in range(5):
        started = time.perf_counter()
        served.client.audio.transcriptions.create(model="whisper-1", file=shared_audio_dir / CLIP)
        took.append(time.perf_counter() - started)
    print(f"\nPOST /v1/audio/transcriptions {CLIP}: median {statistics.median(took):.2f} s of "
          f"{', '.join(f'{t:.2f}' for t in took)}")
    assert statistics.median(took) < 10


def test_serve_stops_the_workers_it_started(served):
    pids = [w.pid for w in served.catalog.alive_workers(60)]
    assert pids
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(60) == 0
    time.sleep(0.5)
    for pid in set(pids):
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
