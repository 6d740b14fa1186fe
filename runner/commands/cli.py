"""The `scriptorium` command: thin click commands over the engine and the runner."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

from engine.errors import ScriptoriumError
from runner.errors import RunnerError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def exit_now(code: int) -> None:
    """End a finished `run` or `worker` without the interpreter's teardown, which freed the model and
    the catalog code object by object: 0.33 s against 0.05 s after a worker's last file, and a `run`
    waits for its worker's exit. Everything is committed by then; atexit handlers (the VAD helpers'
    shutdown, logging) still run and output is flushed."""
    import atexit
    import os

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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


def model_options(func):
    """--model, --compute, --threads: shared by every command that runs the model."""
    func = click.option("--model", default=None, envvar="SCRIPTORIUM_MODEL",
                        help="Model name or CTranslate2 Whisper folder (default: packaged tiny.en).")(func)
    func = click.option("--compute", type=click.Choice(["auto", "cpu", "gpu", "ane", "all"]), default="auto",
                        show_default=True, help="Where the model runs (gpu = CUDA on Linux).")(func)
    func = click.option("--threads", type=int, default=0, help="CPU threads for the model (0: all cores).")(func)
    return func


# (flag, parameter, click keywords): how each file is to be decoded (see _options)
DECODE_FLAGS = (
    ("--language", "language", dict(default=None, envvar="SCRIPTORIUM_LANGUAGE",
                                    help="Language code (multilingual models; default: detect).")),
    ("--task", "task", dict(type=click.Choice(["transcribe", "translate"]), default="transcribe", show_default=True,
                            envvar="SCRIPTORIUM_TASK", help="translate: English text from speech in any language "
                                                             "(multilingual models).")),
    ("--beam-size", "beam_size", dict(type=int, default=5, show_default=True, envvar="SCRIPTORIUM_BEAM_SIZE",
                                      help="Beam size at temperature 0.")),
    ("--temperatures", "temperatures", dict(default=None, envvar="SCRIPTORIUM_TEMPERATURES", metavar="T,T,...",
                                            help="Fallback ladder (default 0,0.2,0.4,0.6,0.8,1; '0': no fallback).")),
    ("--initial-prompt", "initial_prompt", dict(default=None, envvar="SCRIPTORIUM_INITIAL_PROMPT",
                                                help="Text the first window is conditioned on: names, jargon, style.")),
    ("--hotwords", "hotwords", dict(default=None, envvar="SCRIPTORIUM_HOTWORDS",
                                    help="Words to favour (names, terms), given to every window.")),
    ("--no-previous-text", "no_previous_text", dict(is_flag=True, envvar="SCRIPTORIUM_NO_PREVIOUS_TEXT",
                                                    help="Do not condition each window on the text before it.")),
    ("--no-vad", "no_vad", dict(is_flag=True, help="Decode every window, even without detected speech.")),
    ("--no-word-timestamps", "no_word_timestamps", dict(is_flag=True,
                                                        help="Skip word alignment (segment times only).")),
)


def decode_options(func):
    """The DECODE_FLAGS, handed to the command as one `options` (engine.options.TranscribeOptions):
    what every file is decoded with, recorded with its job and its transcript."""

    @functools.wraps(func)
    def wrapper(*args, **kw):
        kw["options"] = _options(**{name: kw.pop(name) for _, name, _ in DECODE_FLAGS})
        return func(*args, **kw)

    for flag, name, extra in reversed(DECODE_FLAGS):
        wrapper = click.option(flag, name, **extra)(wrapper)
    return wrapper


def _options(language=None, task="transcribe", beam_size=5, temperatures=None, initial_prompt=None, hotwords=None,
              no_previous_text=False, no_vad=False, no_word_timestamps=False):
    """TranscribeOptions from the decode flags; a bad value is a usage error naming the flag."""
    from engine.options import TranscribeOptions

    kw = {}
    if temperatures:
        try:
            kw["temperatures"] = tuple(float(t) for t in temperatures.split(","))
        except ValueError:
            raise click.BadParameter(f"{temperatures!r}: expected numbers like 0,0.2,0.4", param_hint="--temperatures")
    try:
        return TranscribeOptions(language=language, task=task, beam_size=beam_size,
                                 initial_prompt=initial_prompt, hotwords=hotwords,
                                 condition_on_previous_text=not no_previous_text,
                                 vad=not no_vad, word_timestamps=not no_word_timestamps, **kw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@model_options
@decode_options
@click.option("--format", "fmt", type=click.Choice(["txt", "srt", "vtt", "json", "all"]), default="all",
              show_default=True, help="Output format(s).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where outputs go, named after each input's stem (talk.mp3 -> DIR/talk.srt).")
@click.option("--batch", type=int, default=1, show_default=True, help="Files decoded together.")
def transcribe(files, model, compute, threads, options, fmt, output_dir, batch):
    """Transcribe FILES directly (no queue, no catalog).

    A file that cannot be read is reported on one line naming it; the other files are
    still transcribed, and the exit code is 1 if any failed.

    Example:

        scriptorium transcribe talk.mp3 lecture.mp4 --format srt -o subs/
    """
    from engine.api import Transcriber
    from runner.commands.transcribe_cmd import resolve_formats, transcribe_files

    check_task(options, model)
    transcriber = Transcriber(model=model, compute=compute, threads=threads)
    failed = transcribe_files(list(files), transcriber, options, resolve_formats(fmt), Path(output_dir), batch)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def data_options(func):
    """--data, --db, --redis: where the catalog and the queue are (also SCRIPTORIUM_DB, SCRIPTORIUM_REDIS)."""
    func = click.option("--data", type=click.Path(file_okay=False), default=None, envvar="SCRIPTORIUM_DATA",
                        help="Data folder (default ./scriptorium-data): catalog.db, outputs/, redis/.")(func)
    func = click.option("--db", default=None, envvar="SCRIPTORIUM_DB",
                        help="Catalog SQLAlchemy URL (default: SQLite in the data folder).")(func)
    func = click.option("--redis", "redis_url", default=None, envvar="SCRIPTORIUM_REDIS",
                        help="Redis URL (redis://, rediss://, unix://); default: an embedded Redis.")(func)
    return func


def check_task(options, model: str | None, models_dir=None) -> None:
    """--task translate needs a multilingual model: refused at once (exit 2), not after the model loads."""
    if options.task != "translate":
        return
    from engine.models import resolve_model

    spec = resolve_model(model, models_dir)
    if not spec.multilingual:
        raise click.UsageError(f"--task translate needs a multilingual model; {spec.name} is English-only")


def batch_option(func):
    """--batch: files decoded together in one worker process."""
    from runner.queue.pool import DEFAULT_BATCH

    return click.option("--batch", type=int, default=DEFAULT_BATCH, show_default=True,
                        help="Files decoded together in one worker process (jobs run in 2 x N threads; "
                             "8 was the fastest of 1/8/32 on CPU and GPU).")(func)


def overwrite_option(func):
    """--overwrite: replace output files Scriptorium did not write."""
    return click.option("--overwrite", is_flag=True,
                        help="Replace existing subtitle/text files Scriptorium did not write (by default they are "
                             "left alone and named in the log).")(func)


def path_map_option(func):
    """--path-map SRC=DST, repeatable."""
    return click.option("--path-map", "path_map", multiple=True, metavar="SRC=DST",
                        callback=lambda _c, _p, v: _path_map(v),
                        help="Media under SRC in the catalog are at DST on this host (repeatable).")(func)


def _path_map(values) -> tuple[tuple[str, str], ...]:
    """SRC=DST options as (SRC, DST) pairs of absolute paths."""
    pairs = []
    for value in values:
        src, sep, dst = value.partition("=")
        if not sep or not src.startswith("/") or not dst.startswith("/"):
            raise click.BadParameter(f"{value!r}: expected SRC=DST, two absolute paths", param_hint="--path-map")
        pairs.append((src, dst))
    return tuple(pairs)


def _settings(data, db, redis_url, **kw):
    from runner.config import Settings

    return Settings.resolve(data, db, redis_url, **kw)


def _catalog(settings):
    from runner.catalog.db import Catalog

    return Catalog.open(settings.db_url)


def _claimed_queue(settings, catalog):
    """The job queue, refused if it already serves another catalog."""
    from runner.queue.jobqueue import claim_queue, connect, job_queue

    queue = job_queue(connect(settings.redis_url), settings.queue_name)
    claim_queue(queue.connection, settings.queue_name, catalog.identity(),
                catalog.url.render_as_string(hide_password=True))
    return queue


def _redis_or_embedded(settings):
    """The configured Redis, or the embedded one under DATA (started if needed)."""
    from runner.queue.embedded_redis import ensure_redis

    return ensure_redis(settings)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@data_options
@model_options
@decode_options
@click.option("--workers", type=int, default=None, help="Worker processes (default: sized to the machine).")
@click.option("--batch", type=int, default=None,
              help="Files decoded together per worker (default: 8, the fastest measured on CPU and GPU).")
@click.option("--outputs", type=click.Choice(["data", "beside"]), default="data", show_default=True,
              help="Write subtitles under DATA/outputs/ (mirroring folders) or next to each media file.")
@overwrite_option
@click.option("--wait-for-writes", "settle_wait", type=float, default=600, show_default=True, metavar="SECONDS",
              help="How long to wait for files still being written (copied in just before) before leaving them.")
def run(paths, data, db, redis_url, model, compute, threads, options, workers, batch, outputs, overwrite,
        settle_wait):
    """Scan PATHS, transcribe everything new, and wait until done.

    Starts its own Redis (unless --redis is given), a pool of workers, shows one progress
    bar in audio minutes, and prints a summary. Run it again: nothing done is redone.
    Interrupted (Ctrl-C or kill -9)? Run it again; it resumes from the last finished window.
    Files still being written (copied in just before) are taken once they stop changing.
    Exit code 0 when every media file found is done; 1 if any failed or was left, each
    reason printed.

    Example:

        scriptorium run ~/podcasts --data ~/archive-data
    """
    from runner.commands.run import run as run_all

    settings = _settings(data, db, redis_url, outputs=outputs, overwrite=overwrite)
    check_task(options, model, settings.models_dir)
    compute = "cpu" if compute == "auto" and not _has_gpu() else ("gpu" if compute == "auto" else compute)
    code = run_all(settings, [Path(p) for p in paths], workers, threads or None, compute, model,
                   options, batch, settle_wait)
    exit_now(code)


@main.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@data_options
@model_options
@decode_options
@click.option("--workers", type=int, default=None, help="Worker processes (default: one using every core).")
@click.option("--batch", type=int, default=None, help="Files decoded together per worker (default: 8).")
@click.option("--outputs", type=click.Choice(["data", "beside"]), default="data", show_default=True,
              help="Write subtitles under DATA/outputs/ (mirroring folders) or next to each media file.")
@click.option("--rescan", "rescan_s", type=float, default=60, show_default=True, metavar="SECONDS",
              help="Scan every folder this often too, for changes no event reported (network mounts).")
@click.option("--settle", "settle_s", type=float, default=2, show_default=True, metavar="SECONDS",
              help="A file is taken once it has not changed for this long (raise it for writers that pause).")
@click.option("--poll", is_flag=True, help="Poll the folders for changes instead of inotify (NFS, SMB).")
def watch(folders, data, db, redis_url, model, compute, threads, options, workers, batch, outputs, rescan_s,
          settle_s, poll):
    """Transcribe what lands in FOLDERS, seconds after each file stops changing, until stopped.

    Scans once, then takes every new or changed media file once it has not changed for
    --settle seconds (never a half-written one), with a full rescan every --rescan seconds
    as a safety net. Prints a line per file queued, done or failed. SIGTERM or Ctrl-C stops
    the workers between windows (exit 0); the next start resumes what was in flight.

    Example:

        scriptorium watch ~/podcasts ~/recordings --data ~/archive-data
    """
    from runner.queue.pool import plan_pool
    from runner.commands.watch import WatchOptions, watch as watch_folders

    try:
        wopts = WatchOptions(rescan_s=rescan_s, settle_s=settle_s, poll=poll)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = _settings(data, db, redis_url, outputs=outputs)
    compute = "cpu" if compute == "auto" and not _has_gpu() else ("gpu" if compute == "auto" else compute)
    exit_now(watch_folders(settings, [Path(f) for f in folders], plan_pool(workers, threads or None, compute, batch),
                           model, options, wopts))


def _has_gpu() -> bool:
    from engine.backends.ctranslate2_backend import cuda_available

    return cuda_available()


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@data_options
@click.option("--model", default=None, envvar="SCRIPTORIUM_MODEL",
              help="Model the jobs ask for; files whose transcript came from another model are queued again.")
@decode_options
@click.option("--no-queue", is_flag=True, help="Only record files in the catalog.")
def scan(paths, data, db, redis_url, model, options, no_queue):
    """Find media under PATHS and queue each new or changed file, with the decode options given.

    Files are recognised by probing, not by extension; unreadable and non-media files are
    recorded with the reason. Unchanged files that are done are skipped. Files modified in the
    last seconds may still be being written: they are left for the next scan, which says so.

    Example:

        scriptorium scan /mnt/archive --redis redis://queue-host:6379/0 --db postgresql://...
    """
    from engine.models import resolve_model
    from runner.catalog.outputs import write_pending
    from runner.queue.scanner import Scanner
    from runner.queue.submit import submit

    settings = _settings(data, db, redis_url)
    check_task(options, model, settings.models_dir)
    catalog = _catalog(settings)
    spec = resolve_model(model, settings.models_dir) if model else None
    summary = Scanner(catalog, spec.sha256 if spec else None).scan([Path(p) for p in paths],
                                                                    progress=sys.stderr.isatty())
    if not no_queue and summary.to_queue:
        settings, embedded = _redis_or_embedded(settings)
        queue = _claimed_queue(settings, catalog)
        submit(catalog, queue, summary.to_queue, options.to_dict(), model)
    written = write_pending(catalog, settings)  # finished files whose worker died before their outputs
    click.echo(summary.line() + (f"; wrote the pending outputs of {written} file(s)" if written else ""))


@main.command()
@data_options
@model_options
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--outputs", type=click.Choice(["data", "beside"]), default="data", show_default=True,
              help="Write subtitles under DATA/outputs/ or next to each media file.")
@overwrite_option
@batch_option
@path_map_option
def worker(data, db, redis_url, model, compute, threads, burst, outputs, overwrite, batch, path_map):
    """Take transcription jobs from the queue until stopped.

    The model is loaded once. Each job is decoded with the options it was queued with (by `run`,
    `scan` or the API), and files with the same options share model calls. SIGTERM stops after
    the current window; the file goes back to the queue and resumes there. A compute kind this
    machine lacks exits at once (code 1).

    Example:

        scriptorium worker --compute gpu --redis redis://queue-host:6379/0 --db postgresql://...
    """
    from engine.backends import check_compute
    from runner.queue.worker import run_worker

    check_compute(compute)  # a kind this machine lacks is refused before anything starts
    settings = _settings(data, db, redis_url, outputs=outputs, path_map=path_map, overwrite=overwrite)
    settings, embedded = _redis_or_embedded(settings)
    try:
        run_worker(settings, compute=compute, threads=threads, model=model, burst=burst, batch=batch)
    finally:
        if embedded is not None:
            embedded.stop()
    exit_now(EXIT_OK)


@main.command()
@data_options
@click.option("--cpu", "n_cpu", type=int, default=0, help="CPU workers.")
@click.option("--gpu", "n_gpu", type=int, default=0, help="GPU (CUDA) workers.")
@click.option("--ane", "n_ane", type=int, default=0, help="Neural Engine workers (macOS).")
@click.option("--threads", type=int, default=0, help="Threads per CPU worker (0: cores / workers).")
@click.option("--model", default=None, envvar="SCRIPTORIUM_MODEL",
              help="Model name or CTranslate2 Whisper folder (default: packaged tiny.en).")
@click.option("--outputs", type=click.Choice(["data", "beside"]), default="data", show_default=True,
              help="Write subtitles under DATA/outputs/ or next to each media file.")
@overwrite_option
@batch_option
@path_map_option
@click.option("--burst", is_flag=True, help="Workers exit once the queue is empty.")
def workers(data, db, redis_url, n_cpu, n_gpu, n_ane, threads, model, outputs, overwrite, batch, path_map, burst):
    """Start a pool of workers of mixed kinds and wait for them.

    Each child is a `scriptorium worker` with these options; the catalog and Redis URLs reach it
    through its environment, never its command line (where `ps` would show their passwords).

    Example:

        scriptorium workers --cpu 2 --gpu 1 --batch 8
    """
    import os

    from runner.queue.pool import PoolPlan, start_pool

    settings = _settings(data, db, redis_url, outputs=outputs, path_map=path_map, overwrite=overwrite)
    settings, embedded = _redis_or_embedded(settings)
    kinds = ("cpu",) * n_cpu + ("gpu",) * n_gpu + ("ane",) * n_ane
    if not kinds:
        raise click.UsageError("ask for at least one worker: --cpu N, --gpu N or --ane N")
    per = threads or max(1, (os.cpu_count() or 1) // max(1, n_cpu))
    procs = start_pool(settings, PoolPlan(kinds, per, batch), model, burst=burst)
    codes = [p.wait() for p in procs]
    if embedded is not None:
        embedded.stop()
    sys.exit(max(codes))


@main.command()
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(data, db, redis_url, as_json):
    """Counts by state, audio hours done and left, speed, ETA, workers, failures.

    Example:

        scriptorium status --json | jq '.files[] | select(.status=="failed")'
    """
    import json

    from runner.catalog.report import build_report, format_report

    settings = _settings(data, db, redis_url)
    report = build_report(_catalog(settings), max_attempts=settings.max_attempts)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))


@main.command()
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

    hits = run_search(_catalog(_settings(data, db, redis_url)), query, limit=limit, folder=folder, model=model,
                      raw=raw)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(h) for h in hits], indent=2))
        return
    for h in hits:
        click.echo(f"{h.path} [{_clock(h.start)} - {_clock(h.end)}] {h.marked}")
    if not hits:
        click.echo("no hits", err=True)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:d}:{whole % 3600 // 60:02d}:{whole % 60:02d}.{int((seconds - whole) * 10)}"


@main.command()
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

    settings = _settings(data, db, redis_url)
    count = export_outputs(_catalog(settings), Path(output_dir), resolve_formats(fmt), [Path(p) for p in paths],
                           overwrite)
    click.echo(f"exported {count} files")


@main.command()
@data_options
def retry(data, db, redis_url):
    """Queue failed files again (their attempt count starts over).

    Example:

        scriptorium retry
    """
    from runner.catalog.export import failed_to_queued
    from runner.queue.submit import resubmit

    settings = _settings(data, db, redis_url)
    catalog = _catalog(settings)
    settings, embedded = _redis_or_embedded(settings)
    queue = _claimed_queue(settings, catalog)
    ids = failed_to_queued(catalog)
    resubmit(catalog, queue, [media_id for media_id, _ in ids])  # with the options each was queued with
    click.echo(f"queued {len(ids)} failed files again")


@main.group()
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

    do_upgrade(_settings(data, db, redis_url).db_url)
    click.echo("catalog at head")


@db.command()
@data_options
def check(data, db, redis_url):
    """Fail (exit 1) if the schema is behind or differs from the code.

    Example:

        scriptorium db check
    """
    from runner.catalog.db import check as do_check

    do_check(_settings(data, db, redis_url).db_url)
    click.echo("catalog schema matches the code")


from runner.commands.models_cmd import models  # noqa: E402 - registered after the other commands

main.add_command(models)

from runner.commands.convert_cmd import convert  # noqa: E402

models.add_command(convert)

@main.command()
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
@click.option("--max-upload", default="2G", show_default=True, help="Largest upload accepted (bytes, or 500M, 2G).")
@click.option("--webhook-secret", default=None, envvar="SCRIPTORIUM_WEBHOOK_SECRET",
              help="Secret that signs job callbacks (HMAC-SHA256); jobs with a callback_url need it.")
@click.option("--wait-timeout", type=float, default=600.0, show_default=True,
              help="Seconds /v1/audio/* waits for a transcript before answering 504 with the job id.")
@click.option("--root", "roots", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder whose files POST /v1/jobs may name by path (repeatable).")
def serve(data, db, redis_url, host, port, token, workers, model, compute, max_upload, webhook_secret,
          wait_timeout, roots):
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
    compute = "cpu" if compute == "auto" and not (workers and _has_gpu()) else ("gpu" if compute == "auto" else compute)
    run_serve(_settings(data, db, redis_url), ServeOptions(
        host=host, port=port, workers=workers, compute=compute, model=model, token=token, max_upload=limit,
        webhook_secret=webhook_secret, wait_timeout=wait_timeout, roots=tuple(Path(r) for r in roots)))


from bench.commands import bench, eval_  # noqa: E402 - registered after the core commands

main.add_command(bench)
main.add_command(eval_)

from runner.commands.doctor_cmd import doctor  # noqa: E402

main.add_command(doctor)


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
