"""`scriptorium models convert`: a CTranslate2 Whisper model to WhisperKit's Core ML layout."""

from __future__ import annotations

from pathlib import Path

import click

from engine.errors import BackendUnavailable, ModelError


@click.command()
@click.argument("src")
@click.option("--to", "target", type=click.Choice(["coreml"]), default="coreml", show_default=True,
              help="Format to write.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="Folder to write (default: NAME-coreml in the models folder).")
@click.option("--palettize", type=click.Choice(["1", "2", "3", "4", "6", "8"]), default=None,
              help="Compress encoder and decoder weights to this many bits per weight (a lookup table).")
@click.option("--models-dir", type=click.Path(file_okay=False), default=None, envvar="SCRIPTORIUM_MODELS",
              help="Models folder (default: $SCRIPTORIUM_MODELS, else ~/.cache/scriptorium/models).")
def convert(src, target, output_dir, palettize, models_dir):
    """Convert a CTranslate2 Whisper model (a name or a folder) to Core ML, without PyTorch.

    Writes MelSpectrogram, AudioEncoder and TextDecoder .mlpackage with config.json and
    tokenizer.json, the folder layout of WhisperKit's published models, so `--model` loads
    converted and downloaded models alike. Needs coremltools (pip install 'scriptorium[coreml]');
    it runs on Linux too, but only macOS can run the result. The first Neural Engine load of a
    model can take minutes while macOS compiles it.

    Example:

        scriptorium models convert tiny.en --to coreml --output-dir ./tiny.en-coreml --palettize 6
    """
    from engine.backends.coreml.convert import convert_model
    from engine.models import default_models_dir, resolve_model

    try:
        spec = resolve_model(src, Path(models_dir) if models_dir else None)
        if spec.format != "ctranslate2":
            raise click.ClickException(f"{src} is already a {spec.format} model")
        out = Path(output_dir) if output_dir else \
            Path(models_dir or default_models_dir()) / f"{spec.name}-{target}"
        convert_model(spec.path, out, palettize_bits=int(palettize) if palettize else None,
                      progress=lambda stage: click.echo(f"building {stage} ...", err=True))
    except (ModelError, BackendUnavailable, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(out))
