"""`scriptorium serve`: the web page and the HTTP API over the catalog and the queue."""

from __future__ import annotations

from pathlib import Path

import click

from runner.commands.common import data_options, has_gpu, runtime_options, settings_for


@click.command()
@data_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (the default lets only this machine in; any other needs --token).")
@click.option("--port", type=int, default=8765, show_default=True, help="Port to listen on.")
@click.option("--token", default=None, envvar="SCRIPTORIUM_API_TOKEN",
              help="Bearer token every request must carry (required off loopback; also SCRIPTORIUM_API_TOKEN).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes to start with serve (and stop with it); 0: run `scriptorium worker` yourself.")
@click.option("--model", default=None, envvar="SCRIPTORIUM_MODEL", help="Model of the started workers.")
@click.option("--compute", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="Where the started workers run the model.")
@runtime_options
@click.option("--max-upload", default="2G", show_default=True, help="Largest upload accepted (bytes, or 500M, 2G).")
@click.option("--webhook-secret", default=None, envvar="SCRIPTORIUM_WEBHOOK_SECRET",
              help="Secret that signs job callbacks (HMAC-SHA256); jobs with a callback_url need it.")
@click.option("--wait-timeout", type=float, default=600.0, show_default=True,
              help="Seconds /v1/audio/* waits for a transcript before answering 504 with the job id.")
@click.option("--root", "roots", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder whose files POST /v1/jobs may name by path (repeatable).")
def serve(data, db, redis_url, host, port, token, workers, model, compute, runtime, keep_heap, max_upload,
          webhook_secret, wait_timeout, roots):
    """Browse the archive in a web page, and transcribe over HTTP (OpenAI's audio API, jobs with callbacks).

    Media are served only from the folders they were scanned in. The queue is --redis, or the
    embedded Redis of the data folder. Any address other than loopback needs --token.

    Example:

        scriptorium serve --data ~/archive-data --port 8765 --workers 1
    """
    from runner.web.api_config import parse_size
    from runner.web.auth import TokenRequired, check_bind
    from runner.web.serve import ServeOptions, serve as run_serve

    try:
        check_bind(host, token)
        limit = parse_size(max_upload)
    except TokenRequired as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-upload") from None
    compute = "cpu" if compute == "auto" and not (workers and has_gpu()) else ("gpu" if compute == "auto" else compute)
    run_serve(settings_for(data, db, redis_url), ServeOptions(
        host=host, port=port, workers=workers, compute=compute, model=model, runtime=runtime, keep_heap=keep_heap,
        token=token, max_upload=limit,
        webhook_secret=webhook_secret, wait_timeout=wait_timeout, roots=tuple(Path(r) for r in roots)))
