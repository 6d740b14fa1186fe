"""Whisper models with random weights in CTranslate2's format, built here without PyTorch or a hub:
the shapes of real checkpoints (tiny, large-v3, large-v3-turbo), for throughput and memory on a
device, and tiny ones for tests. Their text is noise; their tensor shapes, vocabulary layout and
special tokens are a real model's, so everything around the model runs as it would.

    python benchmarks/random_whisper.py OUT --shape large-v3     # a folder CTranslate2 loads
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shape:
    """A Whisper architecture: model width, encoder and decoder layers, heads, mel bins."""

    d: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    n_mels: int = 80


SHAPES = {  # the real checkpoints' dimensions (openai/whisper's ModelDimensions)
    "test": Shape(64, 2, 2, 2),
    "tiny": Shape(384, 4, 4, 6),
    "large-v3": Shape(1280, 32, 32, 20, 128),
    "large-v3-turbo": Shape(1280, 32, 4, 20, 128),
}


def build(folder: Path, shape: Shape, multilingual: bool = True, seed: int = 0, dtype=None) -> Path:
    """Write a random-weight model of `shape` and a matching tokenizer.json into `folder` (float16
    weights for the large shapes, as those checkpoints are shipped, else float32). The vocabulary is tiny.en's with the multilingual layout
    (one more text token, so <|endoftext|> is 50257 and the languages 50259-50357); CTranslate2 knows
    a multilingual vocabulary by its empty token."""
    from ctranslate2.specs import whisper_spec

    from engine.models import packaged_model_dir

    rng = np.random.default_rng(seed)
    d = shape.d
    dtype = dtype or (np.float16 if d >= 1024 else np.float32)

    def rand(*dims):
        return (rng.standard_normal(dims, dtype=np.float32) * 0.2).astype(dtype)

    def linear(spec, rows, cols):
        spec.weight, spec.bias = rand(rows, cols), rand(rows)

    def norm(spec):
        spec.gamma, spec.beta = (1 + rand(d)).astype(dtype), rand(d)

    def attention_and_ffn(layer, cross: bool):
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d)
        norm(layer.self_attention.layer_norm)
        if cross:
            for linear_spec, rows in zip(layer.attention.linear, (d, 2 * d, d)):
                linear(linear_spec, rows, d)
            norm(layer.attention.layer_norm)
        linear(layer.ffn.linear_0, 4 * d, d)
        linear(layer.ffn.linear_1, d, 4 * d)
        norm(layer.ffn.layer_norm)

    source = packaged_model_dir()
    english = (source / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:51864]
    vocabulary = english[:50256] + [""] + english[50256:] if multilingual else english
    spec = whisper_spec.WhisperSpec(shape.encoder_layers, shape.heads, shape.decoder_layers, shape.heads)
    encoder, decoder = spec.encoder, spec.decoder
    encoder.conv1.weight, encoder.conv1.bias = rand(d, shape.n_mels, 3), rand(d)
    encoder.conv2.weight, encoder.conv2.bias = rand(d, d, 3), rand(d)
    encoder.position_encodings.encodings = rand(1500, d)
    norm(encoder.layer_norm)
    for layer in encoder.layer:
        attention_and_ffn(layer, cross=False)
    decoder.embeddings.weight = rand(len(vocabulary), d)
    decoder.projection.weight = decoder.embeddings.weight
    decoder.position_encodings.encodings = rand(448, d)
    norm(decoder.layer_norm)
    for layer in decoder.layer:
        attention_and_ffn(layer, cross=True)
    ids = {token: i for i, token in enumerate(vocabulary)}
    if multilingual:
        spec.config.lang_ids = list(range(ids["<|en|>"], ids["<|translate|>"]))
    spec.config.suppress_ids = [1, 2, 7]
    spec.config.suppress_ids_begin = [220, ids["<|endoftext|>"]]
    spec.config.alignment_heads = [[shape.decoder_layers - 1, h] for h in range(min(2, shape.heads))]
    spec.register_vocabulary(vocabulary)
    spec.validate()
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    tokenizer = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    if multilingual:
        tokenizer["model"]["vocab"]["<|text50256|>"] = tokenizer["model"]["vocab"].pop("<|endoftext|>")
        for added in tokenizer["added_tokens"]:
            added["id"] += 1
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    (folder / "preprocessor_config.json").write_text(json.dumps({"feature_size": shape.n_mels}), encoding="utf-8")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--english-only", action="store_true")
    args = parser.parse_args()
    folder = build(Path(args.out), SHAPES[args.shape], multilingual=not args.english_only)
    size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    print(f"{args.shape}: {folder} ({size:.0f} MiB)")


if __name__ == "__main__":
    main()
