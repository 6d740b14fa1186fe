"""`scriptorium serve`: the web app and its /v1 API on uvicorn, with the queue's Redis (the configured
one or the embedded one) and, with --workers N, N worker processes, all stopped when serve stops."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

from engine.options import RuntimeOptions
from runner.config import Settings
from runner.queue.embedded_redis import ensure_redis
from runner.web.auth import check_bind


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """Where to listen and what to start besides the app."""

    host: str = "127.0.0.1"
    port: int = 8765
    workers: int = 0  # worker processes started (and stopped) by serve
    compute: str = "cpu"
    threads: int | None = None
    model: str | None = None
    runtime: RuntimeOptions = RuntimeOptions()  # the started workers' --replicas and --vad-processes
    keep_heap: bool = True  # False: the started workers get --no-keep-heap
    token: str | None = None
    max_upload: int | None = None
    webhook_secret: str | None = None
    wait_timeout: float = 600.0
    roots: tuple[Path, ...] = ()

    def __post_init__(self):
        if self.workers < 0:
            raise ValueError("workers must be >= 0")


def serve(settings: Settings, options: ServeOptions) -> None:
    """Serve until interrupted; refuses a non-loopback address without a token before starting anything."""
    import uvicorn

    from runner.catalog.db import Catalog
    from runner.queue.pool import plan_pool, start_pool, stop_pool
    from runner.queue.jobqueue import claim_queue, connect
    from runner.web.api_config import DEFAULT_MAX_UPLOAD, ApiConfig
    from runner.web.app import create_app

    check_bind(options.host, options.token)
    settings, embedded = ensure_redis(settings)
    pool: list = []
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: embedded.stop() if embedded is not None else None)
        catalog = stack.enter_context(contextlib.closing(Catalog.open(settings.db_url)))
        connection = connect(settings.redis_url)
        claim_queue(connection, settings.queue_name, catalog.identity(),
                    catalog.url.render_as_string(hide_password=True))
        connection.close()
        config = ApiConfig(settings.data_dir, settings.redis_url, settings.queue_name, model=options.model,
                           token=options.token, max_upload=options.max_upload or DEFAULT_MAX_UPLOAD,
                           webhook_secret=options.webhook_secret, wait_timeout=options.wait_timeout,
                           roots=tuple(Path(r).expanduser().resolve() for r in options.roots))
        app = create_app(catalog, settings.redis_url, settings.queue_name, options.host, api=config)
        if options.workers:
            plan = plan_pool(options.workers, options.threads, options.compute, runtime=options.runtime,
                             keep_heap=options.keep_heap)
            pool = start_pool(settings, plan, options.model, burst=False)
            stack.callback(stop_pool, pool)
        print(f"Scriptorium on http://{options.host}:{options.port}/ (API under /v1; Ctrl-C stops)", file=sys.stderr)
        uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
