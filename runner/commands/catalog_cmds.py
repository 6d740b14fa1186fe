"""The commands that read or fix the catalog: `status`, `search`, `export`, `retry` and `db`."""

from __future__ import annotations

from pathlib import Path

import click

from runner.commands.common import claimed_queue, clock, data_options, open_catalog, overwrite_option, redis_or_embedded, settings_for


@click.command()
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(data, db, redis_url, as_json):
    """Counts by state, audio hours done and left, speed, ETA, workers, failures.

    Example:

        scriptorium status --json | jq '.files[] | select(.status=="failed")'
    """
    import json

    from runner.catalog.report import build_report, format_report

    settings = settings_for(data, db, redis_url)
    report = build_report(open_catalog(settings), max_attempts=settings.max_attempts)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))


@click.command()
@click.argument("query")
@data_options
@click.option("--limit", type=int, default=20, show_default=True, help="At most this many hits.")
@click.option("--folder", default=None, help="Only files under this folder.")
@click.option("--model", default=None, help="Only transcripts made by this model.")
@click.option("--raw", is_flag=True, help="Use the database's full-text syntax (FTS5 / websearch).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of hits.")
def search(query, data, db, redis_url, limit, folder, model, raw, as_json):
    """Full-text search over every transcribed segment.

    Example:

        scriptorium search "election day" --limit 5
    """
    import dataclasses
    import json

    from runner.catalog.search import search as run_search

    hits = run_search(open_catalog(settings_for(data, db, redis_url)), query, limit=limit, folder=folder, model=model,
                      raw=raw)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(h) for h in hits], indent=2))
        return
    for h in hits:
        click.echo(f"{h.path} [{clock(h.start)} - {clock(h.end)}] {h.marked}")
    if not hits:
        click.echo("no hits", err=True)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@data_options
@click.option("--format", "fmt", type=click.Choice(["txt", "srt", "vtt", "json", "all"]), default="all",
              show_default=True, help="Output format(s).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), required=True,
              help="Where to write (same tree as under DATA/outputs).")
@overwrite_option
def export(paths, data, db, redis_url, fmt, output_dir, overwrite):
    """Rewrite outputs of done files from the catalog (all files, or those under PATHS). A file
    already there that Scriptorium did not write is left alone and named, unless --overwrite.

    Example:

        scriptorium export ~/podcasts/2024 --format srt -o ~/subs
    """
    from runner.catalog.export import export_outputs
    from runner.commands.transcribe_cmd import resolve_formats

    settings = settings_for(data, db, redis_url)
    count = export_outputs(open_catalog(settings), Path(output_dir), resolve_formats(fmt), [Path(p) for p in paths],
                           overwrite)
    click.echo(f"exported {count} files")


@click.command()
@data_options
def retry(data, db, redis_url):
    """Queue failed files again (their attempt count starts over).

    Example:

        scriptorium retry
    """
    from runner.catalog.export import failed_to_queued
    from runner.queue.submit import resubmit

    settings = settings_for(data, db, redis_url)
    catalog = open_catalog(settings)
    settings, embedded = redis_or_embedded(settings)
    queue = claimed_queue(settings, catalog)
    ids = failed_to_queued(catalog)
    resubmit(catalog, queue, [media_id for media_id, _ in ids])  # with the options each was queued with
    click.echo(f"queued {len(ids)} failed files again")


@click.group()
def db():
    """Catalog schema: upgrade and check migrations.

    Example:

        scriptorium db upgrade --db postgresql://scriptorium@db-host/scriptorium
    """


@db.command()
@data_options
def upgrade(data, db, redis_url):
    """Apply Alembic migrations up to head.

    Example:

        scriptorium db upgrade --db postgresql://scriptorium@db-host/scriptorium
    """
    from runner.catalog.db import upgrade as do_upgrade

    do_upgrade(settings_for(data, db, redis_url).db_url)
    click.echo("catalog at head")


@db.command()
@data_options
def check(data, db, redis_url):
    """Fail (exit 1) if the schema is behind or differs from the code.

    Example:

        scriptorium db check
    """
    from runner.catalog.db import check as do_check

    do_check(settings_for(data, db, redis_url).db_url)
    click.echo("catalog schema matches the code")
