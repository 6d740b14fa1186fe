"""The commands that transcribe: `transcribe` (no queue), `run`, `watch`, `scan`, `worker` and `workers`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runner.commands.common import EXIT_FAILED, EXIT_OK, batch_option, check_task, claimed_queue, data_options, decode_options, exit_now, has_gpu, model_options, open_catalog, overwrite_option, path_map_option, redis_or_embedded, runtime_options, settings_for, tune_heap


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@model_options
@decode_options
@click.option("--format", "fmt", type=click.Choice(["txt", "srt", "vtt", "json", "all"]), default="all",
              show_default=True, help="Output format(s).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where outputs go, named after each input's stem (talk.mp3 -> DIR/talk.srt).")
@click.option("--batch", type=int, default=1, show_default=True, help="Files decoded together.")
@runtime_options
def transcribe(files, model, compute, threads, options, fmt, output_dir, batch, runtime, keep_heap):
    """Transcribe FILES directly (no queue, no catalog).

    A file that cannot be read is reported on one line naming it; the other files are
    still transcribed, and the exit code is 1 if any failed.

    Example:

        scriptorium transcribe talk.mp3 lecture.mp4 --format srt -o subs/
    """
    from engine.api import Transcriber
    from runner.commands.transcribe_cmd import resolve_formats, transcribe_files

    check_task(options, model)
    tune_heap(keep_heap, compute)  # this process runs the model: before it loads
    transcriber = Transcriber(model=model, compute=compute, threads=threads, runtime=runtime)
    failed = transcribe_files(list(files), transcriber, options, resolve_formats(fmt), Path(output_dir), batch)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@click.command()
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
@runtime_options
def run(paths, data, db, redis_url, model, compute, threads, options, workers, batch, outputs, overwrite,
        settle_wait, runtime, keep_heap):
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

    settings = settings_for(data, db, redis_url, outputs=outputs, overwrite=overwrite)
    check_task(options, model, settings.models_dir)
    compute = "cpu" if compute == "auto" and not has_gpu() else ("gpu" if compute == "auto" else compute)
    code = run_all(settings, [Path(p) for p in paths], workers, threads or None, compute, model,
                   options, batch, settle_wait, runtime=runtime, keep_heap=keep_heap)
    exit_now(code)


@click.command()
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
@runtime_options
def watch(folders, data, db, redis_url, model, compute, threads, options, workers, batch, outputs, rescan_s,
          settle_s, poll, runtime, keep_heap):
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
    settings = settings_for(data, db, redis_url, outputs=outputs)
    compute = "cpu" if compute == "auto" and not has_gpu() else ("gpu" if compute == "auto" else compute)
    plan = plan_pool(workers, threads or None, compute, batch, runtime, keep_heap)
    exit_now(watch_folders(settings, [Path(f) for f in folders], plan, model, options, wopts))


@click.command()
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

    settings = settings_for(data, db, redis_url)
    check_task(options, model, settings.models_dir)
    catalog = open_catalog(settings)
    spec = resolve_model(model, settings.models_dir) if model else None
    summary = Scanner(catalog, spec.sha256 if spec else None).scan([Path(p) for p in paths],
                                                                    progress=sys.stderr.isatty())
    if not no_queue and summary.to_queue:
        settings, embedded = redis_or_embedded(settings)
        queue = claimed_queue(settings, catalog)
        submit(catalog, queue, summary.to_queue, options.to_dict(), model)
    written = write_pending(catalog, settings)  # finished files whose worker died before their outputs
    click.echo(summary.line() + (f"; wrote the pending outputs of {written} file(s)" if written else ""))


@click.command()
@data_options
@model_options
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--outputs", type=click.Choice(["data", "beside"]), default="data", show_default=True,
              help="Write subtitles under DATA/outputs/ or next to each media file.")
@overwrite_option
@batch_option
@path_map_option
@runtime_options
def worker(data, db, redis_url, model, compute, threads, burst, outputs, overwrite, batch, path_map, runtime,
           keep_heap):
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
    tune_heap(keep_heap, compute)  # this process runs the model: before it loads
    settings = settings_for(data, db, redis_url, outputs=outputs, path_map=path_map, overwrite=overwrite)
    settings, embedded = redis_or_embedded(settings)
    try:
        run_worker(settings, compute=compute, threads=threads, model=model, burst=burst, batch=batch, runtime=runtime)
    finally:
        if embedded is not None:
            embedded.stop()
    exit_now(EXIT_OK)


@click.command()
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
@runtime_options
def workers(data, db, redis_url, n_cpu, n_gpu, n_ane, threads, model, outputs, overwrite, batch, path_map, burst,
            runtime, keep_heap):
    """Start a pool of workers of mixed kinds and wait for them.

    Each child is a `scriptorium worker` with these options; the catalog and Redis URLs reach it
    through its environment, never its command line (where `ps` would show their passwords).

    Example:

        scriptorium workers --cpu 2 --gpu 1 --batch 8
    """
    import os

    from runner.queue.pool import PoolPlan, start_pool

    settings = settings_for(data, db, redis_url, outputs=outputs, path_map=path_map, overwrite=overwrite)
    settings, embedded = redis_or_embedded(settings)
    kinds = ("cpu",) * n_cpu + ("gpu",) * n_gpu + ("ane",) * n_ane
    if not kinds:
        raise click.UsageError("ask for at least one worker: --cpu N, --gpu N or --ane N")
    per = threads or max(1, (os.cpu_count() or 1) // max(1, n_cpu))
    procs = start_pool(settings, PoolPlan(kinds, per, batch, runtime, keep_heap), model, burst=burst)
    codes = [p.wait() for p in procs]
    if embedded is not None:
        embedded.stop()
    sys.exit(max(codes))
