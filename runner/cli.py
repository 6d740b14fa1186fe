"""The `scriptorium` command: thin click commands over the engine and the runner."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from engine.errors import ScriptoriumError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Group(click.Group):
    """Turns the engine's and runner's typed errors into one line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ScriptoriumError as exc:
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


def model_options(func):
    """--model, --compute, --threads, --beam-size: shared by every command that runs the model."""
    func = click.option("--model", default=None, envvar="SCRIPTORIUM_MODEL",
                        help="Model name or CTranslate2 Whisper folder (default: packaged tiny.en).")(func)
    func = click.option("--compute", type=click.Choice(["auto", "cpu", "gpu", "ane", "all"]), default="auto",
                        show_default=True, help="Where the model runs (gpu = CUDA on Linux).")(func)
    func = click.option("--threads", type=int, default=0, help="CPU threads for the model (0: all cores).")(func)
    func = click.option("--beam-size", type=int, default=5, show_default=True, help="Beam size at temperature 0.")(func)
    func = click.option("--language", default=None, help="Language code (multilingual models; default: detect).")(func)
    return func


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@model_options
@click.option("--format", "fmt", type=click.Choice(["txt", "srt", "vtt", "json", "all"]), default="all",
              show_default=True, help="Output format(s).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where outputs go, named after each input's stem (talk.mp3 -> DIR/talk.srt).")
@click.option("--batch", type=int, default=1, show_default=True, help="Files decoded together.")
@click.option("--no-vad", is_flag=True, help="Decode every window, even without detected speech.")
@click.option("--no-word-timestamps", is_flag=True, help="Skip word alignment (segment times only).")
def transcribe(files, model, compute, threads, beam_size, language, fmt, output_dir, batch, no_vad,
               no_word_timestamps):
    """Transcribe FILES directly (no queue, no catalog).

    A file that cannot be read is reported on one line naming it; the other files are
    still transcribed, and the exit code is 1 if any failed.

    Example:

        scriptorium transcribe talk.mp3 lecture.mp4 --format srt -o subs/
    """
    from engine.api import Transcriber
    from engine.options import TranscribeOptions
    from runner.transcribe_cmd import resolve_formats, transcribe_files

    options = TranscribeOptions(beam_size=beam_size, language=language, vad=not no_vad,
                                word_timestamps=not no_word_timestamps)
    transcriber = Transcriber(model=model, compute=compute, threads=threads)
    failed = transcribe_files(list(files), transcriber, options, resolve_formats(fmt), Path(output_dir), batch)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
