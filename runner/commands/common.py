"""What the commands share: exit codes, the option groups (model, decode, data, batch, outputs) and
the catalog, queue and settings they open."""

from __future__ import annotations

import functools
import sys

import click


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


def model_options(func):
    """--model, --compute, --threads: shared by every command that runs the model."""
    func = click.option("--model", default=None, envvar="SCRIPTORIUM_MODEL",
                        help="Model name or CTranslate2 Whisper folder (default: packaged tiny.en).")(func)
    func = click.option("--compute", type=click.Choice(["auto", "cpu", "gpu", "ane", "all"]), default="auto",
                        show_default=True, help="Where the model runs (gpu = CUDA on Linux).")(func)
    func = click.option("--threads", type=int, default=0, help="CPU threads for the model (0: all cores).")(func)
    return func


def runtime_options(func):
    """--replicas, --vad-processes (handed to the command as one `runtime`, engine.options.RuntimeOptions)
    and --keep-heap/--no-keep-heap: how a process runs the model. They change no text, so they are
    never recorded with a job; a command that starts workers passes them on their command lines."""

    @functools.wraps(func)
    def wrapper(*args, **kw):
        from engine.options import RuntimeOptions

        kw["runtime"] = RuntimeOptions(replicas=kw.pop("replicas"), vad_processes=kw.pop("vad_processes"))
        return func(*args, **kw)

    wrapper = click.option("--keep-heap/--no-keep-heap", "keep_heap", default=True, show_default=True,
                           help="Keep freed memory in the process that runs the model (glibc, CPU): 40% of an encoder "
                                "call was page faults without it. --no-keep-heap leaves the allocator alone.")(wrapper)
    wrapper = click.option("--vad-processes", type=click.IntRange(min=0), default=None, metavar="N",
                           help="Voice activity helper processes per worker (default: half the cores, 1 to 8; "
                                "0: in the worker process).")(wrapper)
    wrapper = click.option("--replicas", type=click.IntRange(min=1), default=None, metavar="N",
                           help="Model copies per worker whose calls run at once (default: 2 on a CPU with 2+ "
                                "threads, 4 on a GPU, 1 without batching or for `transcribe`).")(wrapper)
    return wrapper


def tune_heap(keep: bool, compute: str) -> None:
    """In a process that runs the model itself, before it loads: keep freed memory (engine.heap) where
    the model re-allocates its activations on the CPU every call. Never done by the library."""
    if not keep:
        return
    from engine.backends.ctranslate2_backend import reuses_host_buffers
    from engine.heap import keep_heap

    if reuses_host_buffers(compute):
        keep_heap()


# (flag, parameter, click keywords): how each file is to be decoded (see options_from_flags)
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
        kw["options"] = options_from_flags(**{name: kw.pop(name) for _, name, _ in DECODE_FLAGS})
        return func(*args, **kw)

    for flag, name, extra in reversed(DECODE_FLAGS):
        wrapper = click.option(flag, name, **extra)(wrapper)
    return wrapper


def options_from_flags(language=None, task="transcribe", beam_size=5, temperatures=None, initial_prompt=None, hotwords=None,
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
                        callback=lambda _c, _p, v: parse_path_map(v),
                        help="Media under SRC in the catalog are at DST on this host (repeatable).")(func)


def parse_path_map(values) -> tuple[tuple[str, str], ...]:
    """SRC=DST options as (SRC, DST) pairs of absolute paths."""
    pairs = []
    for value in values:
        src, sep, dst = value.partition("=")
        if not sep or not src.startswith("/") or not dst.startswith("/"):
            raise click.BadParameter(f"{value!r}: expected SRC=DST, two absolute paths", param_hint="--path-map")
        pairs.append((src, dst))
    return tuple(pairs)


def settings_for(data, db, redis_url, **kw):
    from runner.config import Settings

    return Settings.resolve(data, db, redis_url, **kw)


def open_catalog(settings):
    from runner.catalog.db import Catalog

    return Catalog.open(settings.db_url)


def claimed_queue(settings, catalog):
    """The job queue, refused if it already serves another catalog."""
    from runner.queue.jobqueue import claim_queue, connect, job_queue

    queue = job_queue(connect(settings.redis_url), settings.queue_name)
    claim_queue(queue.connection, settings.queue_name, catalog.identity(),
                catalog.url.render_as_string(hide_password=True))
    return queue


def redis_or_embedded(settings):
    """The configured Redis, or the embedded one under DATA (started if needed)."""
    from runner.queue.embedded_redis import ensure_redis

    return ensure_redis(settings)


def has_gpu() -> bool:
    from engine.backends.ctranslate2_backend import cuda_available

    return cuda_available()


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:d}:{whole % 3600 // 60:02d}:{whole % 60:02d}.{int((seconds - whole) * 10)}"
