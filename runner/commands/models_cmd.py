"""`scriptorium models ...`: list, download, verify, remove and import Whisper models."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from engine.errors import HubError, ModelError


def models_dir_option(func):
    return click.option("--models-dir", type=click.Path(file_okay=False), default=None, envvar="SCRIPTORIUM_MODELS",
                        help="Models folder (default: $SCRIPTORIUM_MODELS, else ~/.cache/scriptorium/models).")(func)


def endpoint_option(func):
    return click.option("--endpoint", default=None, envvar="HF_ENDPOINT",
                        help="Hugging Face–compatible hub or mirror (default: $HF_ENDPOINT, else "
                             "https://huggingface.co).")(func)


def _size(n: int | None) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _retry(*words: str, endpoint: str | None, models_dir: str | None) -> str:
    args = ["scriptorium", "models", *words]
    if endpoint:
        args += ["--endpoint", endpoint]
    if models_dir:
        args += ["--models-dir", models_dir]
    return shlex.join(args)


@click.group()
def models():
    """Whisper models: list, download from a hub, verify, remove, import.

    Models live in the models folder (--models-dir, $SCRIPTORIUM_MODELS, else
    ~/.cache/scriptorium/models), one folder per name; `--model NAME` on the other commands
    finds them there. The packaged tiny.en is always there and needs no network.

    Example:

        scriptorium models list --remote
    """


@models.command("list")
@click.option("--remote", is_flag=True, help="Also list the variants the hub offers (needs the network).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@models_dir_option
@endpoint_option
def list_models(remote, as_json, models_dir, endpoint):
    """Installed models (name, format, size, languages, content hash); with --remote, the hub's variants.

    The content hash is what each transcript records as its model_hash.

    Example:

        scriptorium models list

        scriptorium models list --remote --json | jq '.remote[] | select(.languages == "en")'
    """
    from engine.hub import Hub
    from engine.model_store import installed, remote_variants

    rows = installed(models_dir)
    out: dict = {"installed": [r.to_dict() for r in rows]}
    if remote:
        hub = Hub(endpoint)
        try:
            variants = remote_variants(hub)
        except HubError as exc:
            raise HubError(exc.url, exc.reason, _retry("list", "--remote", endpoint=endpoint,
                                                       models_dir=models_dir)) from exc
        names = {r.name for r in rows}
        out["endpoint"] = hub.endpoint
        out["remote"] = [{"name": v.name, "repo": v.repo, "folder": v.folder or None, "format": v.format,
                          "size": v.size, "languages": v.languages, "available": ok, "installed": v.name in names}
                         for v, ok in variants]
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{'NAME':<40} {'FORMAT':<12} {'SIZE':>9}  {'LANGUAGES':<12} {'HASH':<12}  SOURCE")
    for r in rows:
        click.echo(f"{r.name:<40} {r.format:<12} {_size(r.size):>9}  {r.languages:<12} {r.sha256[:12]:<12}  {r.source}")
    if remote:
        click.echo(f"\navailable on {out['endpoint']}:")
        click.echo(f"{'NAME':<40} {'FORMAT':<12} {'SIZE':>9}  {'LANGUAGES':<12} REPO")
        for v in out["remote"]:
            if v["available"]:
                mark = "  (installed)" if v["installed"] else ""
                click.echo(f"{v['name']:<40} {v['format']:<12} {_size(v['size']):>9}  {v['languages']:<12} "
                           f"{v['repo']}{mark}")


@models.command()
@click.argument("name")
@endpoint_option
@models_dir_option
def download(name, endpoint, models_dir):
    """Download model NAME from the hub into the models folder (resumable, checked, atomic).

    NAME is a variant from `models list --remote` (tiny, base.en, large-v3, distil-large-v3,
    large-v3-turbo, openai_whisper-tiny.en ...) or an owner/repo of CTranslate2 weights.
    Files are assembled in MODELS/.partial/NAME and checked against the hub's sha256; the
    model appears only once complete. Interrupted? Run the same command again: it resumes.

    Example:

        scriptorium models download base.en

        scriptorium models download large-v3 --endpoint https://hf-mirror.example.org
    """
    from engine.hub import Hub, known_variant
    from engine.model_store import download as do_download
    from engine.model_store import models_root

    variant = known_variant(name)
    if variant is not None and (models_root(models_dir) / variant.name).exists():
        click.echo(f"{variant.name} is already installed in {models_root(models_dir)}")
        return
    bar = None

    def start(total, done):
        nonlocal bar
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total or None, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=name, file=sys.stderr)

    def progress(n):
        if bar is not None:
            bar.update(n)

    try:
        spec = do_download(name, models_dir, Hub(endpoint), progress=progress, start=start)
    except HubError as exc:
        raise HubError(exc.url, exc.reason, _retry("download", name, endpoint=endpoint,
                                                   models_dir=models_dir)) from exc
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"installed {spec.name} ({spec.format}, {'multilingual' if spec.multilingual else 'en'}) "
               f"at {spec.path}, content hash {spec.sha256[:12]}")


@models.command()
@click.argument("name")
@models_dir_option
def verify(name, models_dir):
    """Recompute the sha256 of every file of model NAME against its manifest; exit 1 on a mismatch.

    Example:

        scriptorium models verify base.en
    """
    from engine.model_store import verify as do_verify

    spec, problems, has_manifest = do_verify(name, models_dir)
    if problems:
        for p in problems:
            click.echo(f"{spec.name}: {p}", err=True)
        raise ModelError(spec.name, f"fails verification ({len(problems)} problem(s)); download or import it again")
    note = "" if has_manifest else " (no manifest: packaged or placed by hand, trusted as is)"
    click.echo(f"{spec.name}: ok{note}, content hash {spec.sha256[:12]}")


@models.command()
@click.argument("name")
@models_dir_option
def remove(name, models_dir):
    """Delete model NAME (and any half-finished download of it) from the models folder.

    A model imported with --link loses only its links; the original folder stays.

    Example:

        scriptorium models remove base.en
    """
    from engine.model_store import remove as do_remove

    click.echo(f"removed {do_remove(name, models_dir)}")


@models.command("import")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--name", default=None, help="Name to register it under (default: the folder's name).")
@click.option("--link", is_flag=True, help="Symlink the files instead of copying them.")
@models_dir_option
def import_model(path, name, link, models_dir):
    """Register a local CTranslate2 or Core ML Whisper folder under a name.

    A CTranslate2 folder holds model.bin, config.json, tokenizer.json and vocabulary.*; a Core
    ML one AudioEncoder, TextDecoder and MelSpectrogram (.mlmodelc or .mlpackage). To convert
    an OpenAI or Hugging Face checkpoint, see "Models" in the README (ct2-transformers-converter).

    Example:

        scriptorium models import ./whisper-base-ct2 --name base-int8
    """
    from engine.model_store import import_model as do_import

    spec = do_import(Path(path), models_dir, name=name, link=link)
    click.echo(f"imported {spec.name} ({spec.format}, {'multilingual' if spec.multilingual else 'en'}) "
               f"at {spec.path}, content hash {spec.sha256[:12]}")
