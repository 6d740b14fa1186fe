"""WhisperKit's Core ML I/O contract: model names, tensor names, shapes and dtypes.

Layout is (batch, channels, 1, sequence), fp16 for every float tensor, as in the models
Argmax publishes (`argmaxinc/whisperkit-coreml`). The decoder runs one token per call:
the host owns `key_cache`/`value_cache` ([1, D*L, 1, S], channel = layer * D + d), writes
the returned column at `cache_length`, and keeps the two masks:

- `kv_cache_update_mask` [1, S] int32: one-hot at the slot being written (= cache_length);
- `decoder_key_padding_mask` [1, S] fp16: 0 for slots 0..cache_length, -10000 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.constants import N_FRAMES, N_SAMPLES

MEL, ENCODER, DECODER = "MelSpectrogram", "AudioEncoder", "TextDecoder"
STAGES = (MEL, ENCODER, DECODER)
KV_SLOTS = 224  # WhisperKit's Constants.maxTokenContext
MASKED = -10000.0
N_POSITIONS = N_FRAMES // 2  # encoder positions per window (1500)


@dataclass(frozen=True)
class Dims:
    """Sizes of one Whisper model, as the contract needs them."""

    n_mels: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    vocab: int
    kv_slots: int = KV_SLOTS

    @property
    def kv_channels(self) -> int:
        return self.d_model * self.decoder_layers


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: type


def io_spec(dims: Dims) -> dict[str, tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]:
    """(inputs, outputs) of each of the three models."""
    f16, i32 = np.float16, np.int32
    mel = Tensor("melspectrogram_features", (1, dims.n_mels, 1, N_FRAMES), f16)
    embeds = Tensor("encoder_output_embeds", (1, dims.d_model, 1, N_POSITIONS), f16)
    cache = (1, dims.kv_channels, 1, dims.kv_slots)
    column = (1, dims.kv_channels, 1, 1)
    return {
        MEL: ((Tensor("audio", (N_SAMPLES,), f16),), (mel,)),
        ENCODER: ((mel,), (embeds,)),
        DECODER: (
            (Tensor("input_ids", (1,), i32), Tensor("cache_length", (1,), i32),
             Tensor("key_cache", cache, f16), Tensor("value_cache", cache, f16),
             Tensor("kv_cache_update_mask", (1, dims.kv_slots), i32), embeds,
             Tensor("decoder_key_padding_mask", (1, dims.kv_slots), f16)),
            (Tensor("logits", (1, 1, dims.vocab), f16), Tensor("key_cache_updates", column, f16),
             Tensor("value_cache_updates", column, f16),
             Tensor("alignment_heads_weights", (1, N_POSITIONS), f16)),
        ),
    }


def package_path(folder, stage: str):
    """The compiled (.mlmodelc) or source (.mlpackage) model of `stage` in a WhisperKit folder, or None."""
    from pathlib import Path

    for suffix in (".mlmodelc", ".mlpackage"):
        path = Path(folder) / f"{stage}{suffix}"
        if path.exists():
            return path
    return None
