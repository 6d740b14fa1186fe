"""`scriptorium bench` (Scriptorium vs faster-whisper on a folder) and `scriptorium eval` (WER, RTF and QoI on a manifest)."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

import click

from engine.backends.ctranslate2_backend import default_replicas
from engine.errors import ScriptoriumError
from bench.items import BenchError, folder_items, read_manifest
from bench.harness import (PEER, bench_data, effective_threads, eval_data, eval_side, format_bench, format_eval,
                           markdown_report, peer_available, scriptorium_runner, timed)
from bench.peer import PeerProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO_ROOT.parent / "shared" / "audio"


def _log(message: str) -> None:
    click.echo(message, err=True)


def _fail(exc: Exception):
    raise click.ClickException(str(exc)) from exc


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise click.BadParameter(f"must be >= {minimum}", param_hint=name)


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]}, short_help="Speed and WER vs faster-whisper on a folder.")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--model", default=None, envvar="SCRIPTORIUM_MODEL",
              help="Model name or CTranslate2 Whisper folder, used by both engines (default: packaged tiny.en).")
@click.option("--compute", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="Where both engines run (gpu = CUDA).")
@click.option("--threads", type=int, default=0,
              help="CPU threads for both engines (0: every core this process may use).")
@click.option("--beam-size", type=int, default=5, show_default=True, help="Beam size at temperature 0, both engines.")
@click.option("--batch", type=int, default=8, show_default=True,
              help="Files Scriptorium decodes together (also the chunk batch of --fw-batched).")
@click.option("--compute-type", default=None,
              help="CTranslate2 compute type for both engines (default: int8 on CPU, float16 on GPU).")
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Timed runs per engine, taking turns; wall time is their median.")
@click.option("--scored-only", is_flag=True, help="Only transcribe files that have a reference transcript.")
@click.option("--fw-batched", is_flag=True, help="Also run faster-whisper's BatchedInferencePipeline.")
@click.option("--per-file", is_flag=True, help="Also print each file's WER per engine.")
@click.option("--no-peer", is_flag=True, help="Run Scriptorium only, even when faster-whisper is installed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (progress goes to stderr).")
def bench(folder, model, compute, threads, beam_size, batch, compute_type, repeats, scored_only, fw_batched,
          per_file, no_peer, as_json):
    """Time Scriptorium against faster-whisper on every media file in FOLDER.

    Both engines use the same model folder, device, compute type, beam size and threads;
    faster-whisper runs in its own process, as users run it. Models load (and each transcribes
    one short file) before the clock starts. Prints audio minutes, wall time, throughput (x real
    time), the ratio to faster-whisper's sequential transcribe, and Whisper-normalized WER with
    substitutions/deletions/insertions where references exist: a manifest.json in FOLDER (the
    shared corpus format), LibriSpeech *.trans.txt files, or a NAME.txt beside NAME.wav. FOLDER
    defaults to ../shared/audio next to the repository when it exists. Without faster-whisper
    installed (or with --no-peer) only Scriptorium runs.

    Example:

        scriptorium bench ~/archive-sample --threads 2 --compute-type int8 --beam-size 5 --batch 8

        scriptorium bench --scored-only --fw-batched --json > bench.json
    """
    from engine.api import Transcriber
    from engine.options import RuntimeOptions, TranscribeOptions

    _positive("--beam-size", beam_size)
    _positive("--batch", batch)
    _positive("--repeats", repeats)
    if folder is None:
        if not (SHARED_AUDIO / "manifest.json").is_file():
            raise click.UsageError("give FOLDER (no ../shared/audio next to the repository)")
        folder = SHARED_AUDIO
    threads = effective_threads(threads)
    peers = ExitStack()  # the peer's process, ended however the bench ends
    try:
        items = folder_items(Path(folder), scored_only)
        transcriber = Transcriber(model=model, compute=compute, threads=threads, compute_type=compute_type,
                                  runtime=RuntimeOptions(replicas=default_replicas(compute, threads, batch)))
        backend = transcriber.backend
        resolved_type = getattr(backend, "compute_type", compute_type or "")
        runners = {"scriptorium": scriptorium_runner(transcriber, TranscribeOptions(beam_size=beam_size), batch)}
        peer_note = None
        if no_peer:
            peer_note = f"{PEER}: not run (--no-peer)"
        elif not peer_available():
            peer_note = f"{PEER}: not installed, not run (pip install faster-whisper)"
        elif transcriber.model.format != "ctranslate2":
            peer_note = f"{PEER}: not run ({transcriber.model.name} is not a CTranslate2 model)"
        else:
            _log(f"loading {PEER} on {transcriber.model.path}")
            try:
                peer = peers.enter_context(PeerProcess(
                    transcriber.model.path, "cuda" if backend.compute == "gpu" else "cpu", resolved_type, threads))
            except BenchError as exc:
                peer_note = f"not run: {exc}"
                _log(peer_note)
            else:
                runners.update(peer.runners(beam_size, batch if fw_batched else None))
        _log(f"{len(items)} files from {folder}")
        runs = timed(runners, items, repeats, log=_log)
    except (BenchError, ScriptoriumError) as exc:
        _fail(exc)
    finally:
        peers.close()
    config = {"folder": str(folder), "model": transcriber.model.name, "model_path": str(transcriber.model.path),
              "device": backend.compute, "compute_type": resolved_type, "threads": threads, "beam_size": beam_size,
              "batch_size": batch, "repeats": repeats, "peer": PEER in runs, "peer_note": peer_note}
    data = bench_data(config, items, runs, PEER if PEER in runs else None)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(format_bench(data, per_file))
    if any(e["failed"] for e in data["engines"].values()):
        sys.exit(1)


def _engine(model, backend_name, compute, threads, compute_type, beam_size, batch, language, stack: ExitStack):
    """(runner, description) for a model on a backend; faster-whisper runs sequential transcribe, in a
    process of its own that ends with stack."""
    from engine.api import Transcriber
    from engine.models import resolve_model
    from engine.options import TranscribeOptions
    from bench.harness import peer_device

    spec = resolve_model(model)
    if backend_name == PEER:
        if spec.format != "ctranslate2":
            raise BenchError(f"{PEER} needs a CTranslate2 model; {spec.name} is {spec.format}")
        device = peer_device(compute)
        ctype = compute_type or ("float16" if device == "cuda" else "int8")
        _log(f"loading {PEER} on {spec.path}")
        runner = stack.enter_context(PeerProcess(spec.path, device, ctype, threads)).runners(beam_size)[PEER]
        return runner, {"model": spec.name, "model_path": str(spec.path), "backend": PEER,
                        "device": "gpu" if device == "cuda" else "cpu", "compute_type": ctype}
    transcriber = Transcriber(model=spec, compute=compute, backend=backend_name, threads=threads,
                              compute_type=compute_type)
    options = TranscribeOptions(beam_size=beam_size, language=language)
    return scriptorium_runner(transcriber, options, batch), {
        "model": spec.name, "model_path": str(spec.path), "backend": transcriber.backend.name,
        "device": transcriber.backend.compute, "compute_type": getattr(transcriber.backend, "compute_type", "")}


def _check_backend(name: str | None, option: str) -> None:
    from engine.backends import REGISTRY

    if name is not None and name != PEER and name not in REGISTRY:
        known = ", ".join(sorted([*REGISTRY, PEER]))
        raise click.BadParameter(f"unknown backend {name!r} (known: {known})", param_hint=option)


@click.command("eval", context_settings={"help_option_names": ["-h", "--help"]}, short_help="WER with S/D/I, RTF and QoI on a manifest.")
@click.argument("manifest", type=click.Path(exists=True))
@click.option("--model", default=None, envvar="SCRIPTORIUM_MODEL",
              help="Model name or CTranslate2 Whisper folder (default: packaged tiny.en).")
@click.option("--backend", default="ctranslate2", show_default=True,
              help=f"How the model runs: ctranslate2 (Scriptorium), {PEER} (its sequential transcribe), "
                   "or another registered backend.")
@click.option("--compare-model", default=None,
              help="A second model (name or folder) to compare against the first: WER of both and QoI.")
@click.option("--compare-backend", default=None,
              help=f"Compare the same model on another backend (e.g. {PEER}): WER of both and QoI.")
@click.option("--compute", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="Where the models run (gpu = CUDA).")
@click.option("--threads", type=int, default=0, help="CPU threads for the model (0: every core this process may use).")
@click.option("--compute-type", default=None, help="CTranslate2 compute type (default: int8 on CPU, float16 on GPU).")
@click.option("--beam-size", type=int, default=5, show_default=True, help="Beam size at temperature 0.")
@click.option("--batch", type=int, default=8, show_default=True,
              help="Files Scriptorium decodes together (results equal batch 1's at temperature 0).")
@click.option("--language", default=None, help="Language code (multilingual models; default: detect).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (progress goes to stderr).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Also write the evaluation as a markdown report to this file.")
def eval_(manifest, model, backend, compare_model, compare_backend, compute, threads, compute_type, beam_size,
          batch, language, as_json, report):
    """Score a model on your own files: WER (with S/D/I), real-time factor, and QoI between two models.

    MANIFEST lists files and their reference texts: a JSON list of {"file": ..., "reference":
    ...} objects ("path"/"audio" and "text" work too), a CSV or TSV with a header
    (path,reference), JSON lines, or a LibriSpeech-style folder (*.trans.txt files of `ID TEXT`
    lines next to ID.flac). Relative paths are resolved against the manifest's folder. Text is
    Whisper-normalized before scoring; the total WER is all errors over all reference words.
    With --compare-model or --compare-backend, the same files run through the second one (B) and
    QoI is the share of files whose WER did not get worse than with the first (A). Exit code 1
    if a file failed to transcribe.

    Example:

        scriptorium eval refs.csv --report eval.md

        scriptorium eval LibriSpeech/test-clean --compare-model base.en --json > eval.json

        scriptorium eval refs.json --compare-backend faster-whisper
    """
    _positive("--beam-size", beam_size)
    _positive("--batch", batch)
    if compare_model and compare_backend:
        raise click.UsageError("give --compare-model or --compare-backend, not both")
    _check_backend(backend, "--backend")
    _check_backend(compare_backend, "--compare-backend")
    threads = effective_threads(threads)
    try:
        items = read_manifest(Path(manifest))
        _log(f"{len(items)} files from {manifest}")
        setups = [(model, backend)]
        if compare_model:
            setups.append((compare_model, backend))
        elif compare_backend:
            setups.append((model, compare_backend))
        sides, runs, described = [], [], []
        for k, (m, b) in enumerate(setups):
            with ExitStack() as stack:  # one side at a time: the first's model is gone before the second loads
                runner, desc = _engine(m, b, compute, threads, compute_type, beam_size, batch, language, stack)
                tag = "AB"[k] if len(setups) > 1 else desc["model"]
                run = timed({tag: runner}, items, log=_log)[tag]
            del runner
            runs.append(run)
            described.append(desc)
    except (BenchError, ScriptoriumError) as exc:
        _fail(exc)
    for desc, run in zip(described, runs):
        sides.append(eval_side(desc["model"], desc, items, run))
    config = {"manifest": str(manifest), "beam_size": beam_size, "batch_size": batch, "threads": threads}
    data = eval_data(config, items, sides, runs)
    if report:
        Path(report).write_text(markdown_report(data), encoding="utf-8")
        _log(f"report written to {report}")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(format_eval(data))
    if any(s["failed"] for s in sides):
        sys.exit(1)


__all__ = ["bench", "eval_"]
