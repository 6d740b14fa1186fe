"""`scriptorium doctor`: the click command over runner.catalog.doctor ."""

from __future__ import annotations

import sys

import click

from runner.commands.common import data_options


@click.command()
@data_options
@click.option("--outputs", type=click.Choice(["data", "beside"]), default="data", show_default=True,
              help="Where the outputs were written: under DATA/outputs/ or next to each media file.")
@click.option("--repair", is_flag=True, help="Fix what is safe to fix, and say what was done.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def doctor(data, db, redis_url, outputs, repair, as_json):
    """Check the catalog against the queue and the output files; with --repair, fix what is safe.

    Finds jobs of workers that are gone, queued or running files without a job, jobs of files
    that are done or unknown, files deleted from the archive or changed since the scan,
    left-over running transcripts, and done files whose subtitles are missing. Without
    --repair nothing is changed. Exit code 1 while problems remain.

    Example:

        scriptorium doctor --repair --db postgresql://db-host/scriptorium --redis redis://queue-host:6379/0
    """
    import json

    from runner.config import Settings
    from runner.catalog.db import Catalog
    from runner.catalog.doctor import diagnose
    from runner.queue.embedded_redis import ensure_redis

    settings = Settings.resolve(data, db, redis_url, outputs=outputs)
    settings, embedded = ensure_redis(settings)
    catalog = Catalog.open(settings.db_url)
    try:
        report = diagnose(catalog, settings, settings.redis_url, repair=repair)
    finally:
        catalog.close()
        if embedded is not None:
            embedded.stop()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for finding in report.findings:
            click.echo(finding.line())
        click.echo(report.summary())
    sys.exit(1 if report.remaining else 0)
