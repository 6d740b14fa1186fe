"""`scriptorium run`: embedded Redis, a pool of workers, scan, one progress bar, a summary.

The pool starts as soon as Redis is up, before this process imports the catalog code (SQLAlchemy,
Alembic: ~0.5 s): the workers import and load the model while the run opens the catalog and scans,
and a hold on the queue keeps them waiting until the jobs are queued.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from engine.models import resolve_model
from engine.options import RuntimeOptions, TranscribeOptions
from runner.config import Settings
from runner.queue.embedded_redis import ensure_redis
from runner.queue.pool import PoolPlan, plan_pool, start_pool, stop_pool
from runner.queue.jobqueue import claim_queue, connect, held, job_queue

SETTLE_WAIT_S = 600.0  # how long `run` waits for files still being written before it leaves them


def run(settings: Settings, paths: list[Path], workers: int | None = None, threads: int | None = None,
        compute: str = "cpu", model: str | None = None, options: TranscribeOptions | None = None,
        batch: int | None = None, settle_wait: float = SETTLE_WAIT_S, runtime: RuntimeOptions | None = None,
        keep_heap: bool = True) -> int:
    """Do the whole job on this machine; returns the exit code (1 if any file failed or was left).
    `runtime` and `keep_heap` go to the workers' command lines."""
    options = options or TranscribeOptions()
    settings, embedded = ensure_redis(settings)
    try:
        plan = plan_pool(workers, threads, compute, batch, runtime, keep_heap)
        return _run(settings, paths, plan, model, options, settle_wait)
    finally:
        if embedded is not None:
            embedded.stop()


def _run(settings: Settings, paths: list[Path], plan: PoolPlan, model: str | None, options: TranscribeOptions,
         settle_wait: float) -> int:
    started, tty = time.monotonic(), sys.stderr.isatty()
    spec = resolve_model(model, settings.models_dir)
    queue = job_queue(connect(settings.redis_url), settings.queue_name)
    with contextlib.ExitStack() as stack:
        with held(queue.connection, settings.queue_name):
            pool = start_pool(settings, plan, model)
            try:
                # imported here, while the workers start (see the module docstring)
                from runner.catalog.db import Catalog
                from runner.catalog.reconcile import requeue_orphans
                from runner.commands.run_progress import summarize, watch
                from runner.queue.scanner import Scanner
                from runner.queue.submit import submit

                catalog = stack.enter_context(contextlib.closing(Catalog.open(settings.db_url)))
                claim_queue(queue.connection, settings.queue_name, catalog.identity(),
                            catalog.url.render_as_string(hide_password=True))
                scanner = Scanner(catalog, spec.sha256)
                summary = scanner.scan(paths, progress=tty)
                print(f"scan: {summary.line()}", file=sys.stderr)
                # longest first: the long files start together and the short ones fill the batch around them
                submit(catalog, queue, sorted(summary.to_queue, key=lambda item: -(item[1] or 0)),
                       options.to_dict(), model)
                if summary.busy:  # copied in just before: wait for them while the workers start on the rest
                    _take_settled(scanner, summary, catalog, queue, options, model, settle_wait)
                requeue_orphans(catalog, queue)
            except BaseException:
                stop_pool(pool)
                raise
        ids = [i for i, _ in summary.to_queue]
        if not (len(queue) or ids):
            stop_pool(pool)  # nothing to do: the workers need not finish loading the model
        try:
            watch(catalog, ids, pool, tty)
        except KeyboardInterrupt:
            stop_pool(pool)
            print("interrupted: run again to finish (nothing done is lost)", file=sys.stderr)
            return 130
        return summarize(catalog, ids, time.monotonic() - started, summary)


def _take_settled(scanner, summary, catalog, queue, options: TranscribeOptions, model: str | None,
                  wait: float) -> None:
    """Queue the files still being written once each has settled (waiting up to `wait` s)."""
    from runner.queue.scanner import SETTLE_SECONDS
    from runner.queue.submit import submit

    print(f"waiting for {summary.busy} file(s) still being written (no change for "
          f"{SETTLE_SECONDS:.0f} s counts as complete)", file=sys.stderr)
    known = len(summary.to_queue)
    scanner.take_settled(summary, wait)
    submit(catalog, queue, summary.to_queue[known:], options.to_dict(), model)
    if summary.busy:
        print(f"{summary.busy} file(s) still changing after {wait:.0f} s, left for the next run: "
              + ", ".join(str(p) for p, _ in summary.busy_paths[:3]), file=sys.stderr)
