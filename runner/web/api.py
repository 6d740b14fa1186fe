"""The /v1 API on the web app: its routes, its queue connection, and the background monitor that
settles finished jobs and delivers their callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from runner.queue.jobqueue import connect, job_queue
from runner.web import api_jobs, api_openai
from runner.web.api_store import settle_jobs
from runner.web.uploads import remove_stale_partials
from runner.web.webhooks import Deliverer

log = logging.getLogger(__name__)


def routes() -> list[Route]:
    return [*api_openai.routes(), *api_jobs.routes()]


async def monitor(app) -> None:
    """Every ApiConfig.monitor_every seconds: settle jobs whose file ended, send the callbacks now due."""
    config, catalog = app.state.api, app.state.catalog
    deliverer = Deliverer(catalog, config.webhook_secret, config.webhooks)
    try:
        while True:
            try:
                await run_in_threadpool(settle_jobs, catalog)
                await deliverer.send_due()
            except Exception:  # noqa: BLE001 - a catalog hiccup must not end the monitor
                log.exception("API monitor: this round failed; trying again")
            await asyncio.sleep(config.monitor_every)
    finally:
        await deliverer.close()


@contextlib.asynccontextmanager
async def lifespan(app):
    """Connect to the queue, clear partial uploads of a killed serve, run the monitor while the app serves."""
    config = app.state.api
    await run_in_threadpool(remove_stale_partials, config.uploads_dir)
    app.state.queue = await run_in_threadpool(lambda: job_queue(connect(config.redis_url), config.queue_name))
    task = asyncio.create_task(monitor(app))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        app.state.queue.connection.close()
