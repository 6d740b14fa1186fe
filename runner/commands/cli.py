"""The `scriptorium` command: thin click commands over the engine and the runner."""

from __future__ import annotations

import logging
import sys

import click

from bench.commands import bench, eval_
from engine.errors import ScriptoriumError
from runner.commands.archive_cmds import run, scan, transcribe, watch, worker, workers
from runner.commands.catalog_cmds import db, export, retry, search, status
from runner.commands.common import EXIT_FAILED
from runner.commands.convert_cmd import convert
from runner.commands.doctor_cmd import doctor
from runner.commands.models_cmd import models
from runner.commands.serve_cmd import serve
from runner.errors import RunnerError


class Group(click.Group):
    """Turns the engine's and runner's typed errors into one line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ScriptoriumError, RunnerError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Scriptorium: batch transcription of media archives with Whisper.

    Point it at folders of audio and video; it transcribes every file into a searchable
    catalog plus SRT, WebVTT, JSON and text files.

    Example:

        scriptorium run ~/podcasts
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


models.add_command(convert)
for command in (transcribe, run, watch, scan, worker, workers, status, search, export, retry, db, models, serve,
                bench, eval_, doctor):
    main.add_command(command)


def _help_everywhere(group: click.Group) -> None:
    """-h on every command, also one invoked on its own (click >= 8.2 caches a command's help option
    from the first context it sees: a standalone invocation made it --help only)."""
    for command in group.commands.values():
        command.context_settings.setdefault("help_option_names", ["-h", "--help"])
        if isinstance(command, click.Group):
            _help_everywhere(command)


_help_everywhere(main)


if __name__ == "__main__":  # pragma: no cover
    main()
