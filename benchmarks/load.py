"""Load curves of issue 7: scan + enqueue time and memory vs files, search and status time vs segments.

    python benchmarks/load.py scan   [--sizes 1000,5000,20000]
    python benchmarks/load.py search [--sizes 10000,100000,1000000]

`scan` generates N distinct short WAV files (0.2 s tones, each with its own frequency and
noise, so no two share bytes or an inode), scans them into a fresh SQLite catalog with
`Scanner(catalog).scan([root])` and enqueues every file on an embedded Redis (unix socket in
the temp folder). Each size runs in its own process, so its peak RSS is its own.

`search` bulk-inserts N segments (words from the shared corpus's reference transcripts) into a
fresh SQLite catalog through SQLAlchemy core, then times `runner.search.search` over 200 queries
of 1-3 words (p50/p95) and `runner.catalog.report.build_report` with and without the file list.
Everything lives in a temp folder that is removed afterwards; nothing is written to the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "audio"
SEGMENTS_PER_TRANSCRIPT = 200  # ~ an hour of speech at 18 s a segment would be 200 segments
QUERIES = 200


# --------------------------------------------------------------------------- scan + enqueue


def make_archive(root: Path, n: int, per_dir: int = 500) -> None:
    """n distinct 0.2 s 16 kHz mono WAVs in folders of per_dir, dated an hour ago (past the settle time)."""
    rng = np.random.default_rng(0)
    t = np.arange(3200) / 16000.0
    past = time.time() - 3600
    for i in range(n):
        folder = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        tone = 0.3 * np.sin(2 * np.pi * (200 + i % 3000) * t) + 0.01 * rng.standard_normal(t.size)
        path = folder / f"f{i:06d}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((tone * 32767).astype("<i2").tobytes())
        os.utime(path, (past, past))


def scan_one(n: int) -> dict:
    """Generate, scan and enqueue n files in a temp folder; the numbers as a dict."""
    from runner.config import sqlite_url_for
    from runner.catalog.db import Catalog
    from runner.queue.embedded_redis import EmbeddedRedis
    from runner.queue.jobqueue import connect, enqueue, job_queue
    from runner.queue.scanner import Scanner

    with tempfile.TemporaryDirectory(prefix="scriptorium-load-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_archive(tmp / "archive", n)
        gen_s = time.perf_counter() - t0
        catalog = Catalog.open(sqlite_url_for(tmp / "data"))
        redis_server = EmbeddedRedis(tmp / "redis")
        redis_server.start()
        try:
            queue = job_queue(connect(redis_server.url), "load")
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            summary = Scanner(catalog).scan([tmp / "archive"])
            scan_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for media_id, duration in summary.to_queue:
                enqueue(queue, media_id, {}, None, duration)
            enqueue_s = time.perf_counter() - t0
            queued = queue.count
            # a second scan finds everything unchanged (the nightly case)
            t0 = time.perf_counter()
            again = Scanner(catalog).scan([tmp / "archive"])
            rescan_s = time.perf_counter() - t0
        finally:
            redis_server.stop()
            catalog.close()
    return {"files": n, "generate_s": gen_s, "scan_s": scan_s, "enqueue_s": enqueue_s,
            "total_s": scan_s + enqueue_s, "rescan_s": rescan_s, "new": summary.new, "queued": queued,
            "rescan_unchanged": again.unchanged, "rss_before_mib": rss0 / 1024,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --------------------------------------------------------------------------- search + status


def vocabulary() -> list[str]:
    """Words of the shared corpus's reference transcripts (with repeats: common words stay common)."""
    words: list[str] = []
    manifest = SHARED / "manifest.json"
    if manifest.is_file():
        for entry in json.loads(manifest.read_text(encoding="utf-8")):
            words += [w.strip(".,;:!?\"'()").lower() for w in (entry.get("reference") or "").split()]
    words = [w for w in words if w and any(c.isalnum() for c in w)]
    return words or "the archive holds many hours of spoken words from old tapes".split()


def fill_catalog(url: str, n_segments: int, words: list[str]) -> tuple[int, int]:
    """Bulk-insert media files, done transcripts and n_segments segments; (files, transcripts)."""
    import sqlalchemy as sa

    from runner.catalog import models as m
    from runner.catalog.db import Catalog
    from runner.catalog.status import Status

    rng = random.Random(1)
    n_files = max(1, n_segments // SEGMENTS_PER_TRANSCRIPT)
    statuses = [Status.done] * 8 + [Status.queued, Status.failed]
    with Catalog.open(url) as cat, cat.engine.begin() as conn:
        now = m.utcnow()
        media = [{"id": i + 1, "path": f"/archive/box{i // 100:04d}/tape{i:06d}.wav", "scan_root": "/archive",
                  "size": 1000 + i, "mtime": 1.0e9, "content_hash": f"{i:064x}", "duration": 3600.0,
                  "codec": "pcm_s16le", "status": Status.done if i < n_files * 0.9 else rng.choice(statuses),
                  "error": None, "attempts": 0, "errors_log": [], "created_at": now, "updated_at": now,
                  "scanned_at": now} for i in range(n_files)]
        conn.execute(sa.insert(m.MediaFile), media)
        conn.execute(sa.insert(m.Transcript), [
            {"id": i + 1, "media_id": i + 1, "model_name": "tiny.en", "model_hash": "h", "backend": "ct2",
             "compute": "cpu", "options": {}, "engine_version": "x", "language": "en", "language_probability": 1.0,
             "status": Status.done if media[i]["status"] == Status.done else Status.running, "next_window": 0,
             "next_seek": 0, "started_at": now, "finished_at": now, "timings": {}, "wall_seconds": 100.0,
             "audio_seconds": 3600.0, "rtf": 100 / 3600} for i in range(n_files)])
        batch: list[dict] = []
        for s in range(n_segments):
            tid, idx = s // SEGMENTS_PER_TRANSCRIPT + 1, s % SEGMENTS_PER_TRANSCRIPT
            if tid > n_files:
                tid, idx = n_files, s  # the remainder goes to the last transcript
            text = " ".join(rng.choices(words, k=rng.randint(6, 24)))
            batch.append({"transcript_id": tid, "window": idx // 6, "idx": idx, "seek": 0, "start": idx * 18.0,
                          "end": idx * 18.0 + 17.5, "text": text, "tokens": [], "avg_logprob": -0.3,
                          "no_speech_prob": 0.01, "compression_ratio": 1.4, "temperature": 0.0})
            if len(batch) == 20000:
                conn.execute(sa.insert(m.Segment), batch)
                batch.clear()
        if batch:
            conn.execute(sa.insert(m.Segment), batch)
    return n_files, n_files


def search_one(n: int) -> dict:
    from runner.config import sqlite_url_for
    from runner.catalog.db import Catalog
    from runner.catalog.report import build_report
    from runner.catalog.search import search

    words = vocabulary()
    rng = random.Random(2)
    queries = [" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(QUERIES)]
    with tempfile.TemporaryDirectory(prefix="scriptorium-load-") as tmp:
        url = sqlite_url_for(tmp)
        t0 = time.perf_counter()
        n_files, _ = fill_catalog(url, n, words)
        fill_s = time.perf_counter() - t0
        with Catalog.open(url) as cat:
            search(cat, "warm up")
            times, hits = [], 0
            for q in queries:
                t0 = time.perf_counter()
                hits += len(search(cat, q))
                times.append(time.perf_counter() - t0)
            times.sort()
            slowest = max(zip(times, queries))  # noqa: F841
            report = {}
            for with_files in (False, True):
                t0 = time.perf_counter()
                build_report(cat, with_files=with_files)
                report[with_files] = time.perf_counter() - t0
        size_mib = Path(tmp, "catalog.db").stat().st_size / 2**20
    return {"segments": n, "files": n_files, "fill_s": fill_s, "db_mib": size_mib,
            "p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * times[int(0.95 * len(times)) - 1],
            "max_ms": 1000 * times[-1], "mean_hits": hits / len(queries),
            "status_s": report[False], "status_files_s": report[True]}


# --------------------------------------------------------------------------- driver


def run_child(kind: str, n: int) -> dict:
    """One size in a fresh process, so its peak memory is not the previous size's."""
    out = subprocess.run([sys.executable, __file__, "_one", kind, str(n)], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["scan", "search", "_one"])
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--sizes", default=None)
    args = parser.parse_args()
    if args.kind == "_one":
        kind, n = args.rest[0], int(args.rest[1])
        print(json.dumps(scan_one(n) if kind == "scan" else search_one(n)))
        return
    default = "1000,5000,20000" if args.kind == "scan" else "10000,100000,1000000"
    sizes = [int(s) for s in (args.sizes or default).split(",")]
    if args.kind == "scan":
        print(f"{'files':>7} {'scan s':>8} {'enqueue s':>9} {'total s':>8} {'files/s':>8} {'rescan s':>8} "
              f"{'peak RSS MiB':>12}")
    else:
        print(f"{'segments':>9} {'files':>6} {'db MiB':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} "
              f"{'status s':>8} {'status+files s':>14}")
    for n in sizes:
        r = run_child(args.kind, n)
        if args.kind == "scan":
            print(f"{r['files']:>7} {r['scan_s']:>8.1f} {r['enqueue_s']:>9.1f} {r['total_s']:>8.1f} "
                  f"{r['files'] / r['total_s']:>8.0f} {r['rescan_s']:>8.1f} {r['peak_rss_mib']:>12.0f}", flush=True)
        else:
            print(f"{r['segments']:>9} {r['files']:>6} {r['db_mib']:>7.0f} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} "
                  f"{r['max_ms']:>7.1f} {r['status_s']:>8.3f} {r['status_files_s']:>14.3f}", flush=True)


if __name__ == "__main__":
    main()
