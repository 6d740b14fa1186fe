"""`scriptorium run`: embedded Redis, scan, a pool of workers, one progress bar, a summary."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from tqdm import tqdm

from engine.models import resolve_model
from engine.options import TranscribeOptions
from runner import catalog as m
from runner.config import Settings
from runner.db import Catalog
from runner.embedded_redis import ensure_redis
from runner.queue import claim_queue, connect, enqueue, held, job_queue
from runner.reconcile import requeue_orphans
from runner.scanner import Scanner
from runner.status import Status
from runner.worker import set_parent_death_signal


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """How many worker processes of which kind, and threads for each."""

    kinds: tuple[str, ...]
    threads: int
    batch: int = 8


DEFAULT_BATCH = 8  # fastest of 1/8/32 on 2 CPU cores (bench_engine.py) and on an H100/H200 (bench_gpu.py)


def plan_pool(workers: int | None, threads: int | None, compute: str = "cpu", batch: int | None = None) -> PoolPlan:
    """One process using every core, batching 8 files: CTranslate2 parallelises inside a call."""
    cores = os.cpu_count() or 1
    count = workers or 1
    return PoolPlan((compute,) * count, threads or max(1, cores // count), batch or DEFAULT_BATCH)


def worker_command(settings: Settings, compute: str, threads: int, model: str | None, batch: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "runner.cli", "worker", "--burst", "--data", str(settings.data_dir),
           "--db", settings.db_url, "--redis", settings.redis_url, "--compute", compute,
           "--threads", str(threads), "--outputs", settings.outputs, "--batch", str(batch)]
    return cmd + (["--model", model] if model else [])


def start_pool(settings: Settings, plan: PoolPlan, model: str | None) -> list[subprocess.Popen]:
    return [subprocess.Popen(worker_command(settings, kind, plan.threads, model, plan.batch), stdin=subprocess.DEVNULL,
                             preexec_fn=set_parent_death_signal) for kind in plan.kinds]


def _progress(catalog: Catalog, ids: list[int]) -> tuple[float, float]:
    """(audio seconds done, audio seconds in total) over the files this run queued."""
    if not ids:
        return 0.0, 0.0
    with catalog.read() as session:
        rows = session.execute(select(m.MediaFile.id, m.MediaFile.duration, m.MediaFile.status)
                               .where(m.MediaFile.id.in_(ids))).all()
        partial = dict(session.execute(select(m.Transcript.media_id, func.max(m.Transcript.next_seek))
                                       .where(m.Transcript.media_id.in_(ids), m.Transcript.status == Status.running)
                                       .group_by(m.Transcript.media_id)).all())
    total = sum(d or 0 for _, d, _ in rows)
    done = sum((d or 0) if s in (Status.done, Status.failed) else min(d or 0, partial.get(i, 0) / 16000)
               for i, d, s in rows)
    return done, total


def run(settings: Settings, paths: list[Path], workers: int | None = None, threads: int | None = None,
        compute: str = "cpu", model: str | None = None, options: TranscribeOptions | None = None,
        batch: int | None = None) -> int:
    """Do the whole job on this machine; returns the exit code (1 if any file failed)."""
    options = options or TranscribeOptions()
    settings, embedded = ensure_redis(settings)
    catalog = Catalog.open(settings.db_url)
    try:
        return _run(settings, catalog, paths, plan_pool(workers, threads, compute, batch), model, options)
    finally:
        catalog.close()
        if embedded is not None:
            embedded.stop()


def _run(settings, catalog, paths, plan: PoolPlan, model, options) -> int:
    started, tty = time.monotonic(), sys.stderr.isatty()
    spec = resolve_model(model, settings.models_dir)
    queue = job_queue(connect(settings.redis_url), settings.queue_name)
    claim_queue(queue.connection, settings.queue_name, catalog.identity(),
                catalog.url.render_as_string(hide_password=True))
    # the pool starts first and loads the model while the folder is scanned; the hold keeps the
    # burst workers waiting until the jobs are queued
    with held(queue.connection, settings.queue_name):
        pool = start_pool(settings, plan, model)
        try:
            summary = Scanner(catalog, spec.sha256).scan(paths, progress=tty)
            print(f"scan: {summary.line()}", file=sys.stderr)
            # longest first: the long files start together and the short ones fill the batch around them
            for media_id, duration in sorted(summary.to_queue, key=lambda item: -(item[1] or 0)):
                enqueue(queue, media_id, options.to_dict(), model, duration)
            requeue_orphans(catalog, queue, options.to_dict(), model)
        except BaseException:
            _stop(pool)
            raise
    ids = [i for i, _ in summary.to_queue]
    if not (len(queue) or ids):
        _stop(pool)  # nothing to do: the workers need not finish loading the model
    try:
        _watch(catalog, ids, pool, tty)
    except KeyboardInterrupt:
        _stop(pool)
        print("interrupted: run again to finish (nothing done is lost)", file=sys.stderr)
        return 130
    return _summarize(catalog, ids, time.monotonic() - started)


def _stop(pool: list[subprocess.Popen]) -> None:
    """SIGTERM every worker (each ends between windows; nothing committed is lost) and reap it."""
    for proc in pool:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in pool:
        proc.wait()


def _watch(catalog: Catalog, ids: list[int], pool: list[subprocess.Popen], tty: bool) -> None:
    """One progress bar in audio minutes until every worker has emptied the queue and exited."""
    done, total = _progress(catalog, ids)
    bar = tqdm(total=round(total / 60, 2), unit="audio min", disable=not tty or not ids, dynamic_ncols=True)
    last = 0.0
    while any(p.poll() is None for p in pool):
        time.sleep(0.2)  # notice the end quickly, but ask the catalog once a second
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            done, total = _progress(catalog, ids)
            bar.n = round(done / 60, 2)
            bar.refresh()
    bar.close()


def _summarize(catalog: Catalog, ids: list[int], wall: float) -> int:
    with catalog.read() as session:
        rows = session.execute(select(m.MediaFile.path, m.MediaFile.status, m.MediaFile.error, m.MediaFile.duration)
                               .where(m.MediaFile.id.in_(ids))).all() if ids else []
    done = [r for r in rows if r.status == Status.done]
    failed = [r for r in rows if r.status == Status.failed]
    unfinished = [r for r in rows if r.status in (Status.queued, Status.running)]
    audio = sum(r.duration or 0 for r in done)
    speed = f", {audio / wall:.1f}x real time" if wall > 0 and audio else ""
    print(f"done {len(done)}, failed {len(failed)}, unfinished {len(unfinished)}; "
          f"{audio / 3600:.2f} h of audio in {wall:.0f} s{speed}")
    for r in failed:
        print(f"failed: {r.path}: {r.error}", file=sys.stderr)
    return 1 if failed or unfinished else 0
