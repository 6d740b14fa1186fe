"""Build WhisperKit's three Core ML packages from a CTranslate2 Whisper folder, without PyTorch.

The programs are written with coremltools' MIL builder from the numpy weights, in the Neural
Engine friendly layout of Apple's ml-ane-transformers: every tensor is (batch, channels, 1,
sequence), linear layers are 1x1 convolutions, layer norms run over the channel axis, and
attention is computed one head at a time on channel slices. Inputs and outputs are declared
fp16 in the program itself (coremltools ignores I/O dtypes passed to `convert` for a MIL
program); each program is built afresh for every conversion (`convert` mutates it).

The numpy reference (`reference`) computes the same functions; Linux can build, save and
inspect these packages but cannot run them.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from engine.backends.coreml.contract import DECODER, ENCODER, MEL, N_POSITIONS, Dims
from engine.backends.coreml.reference import WhisperWeights
from engine.constants import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES
from engine.errors import BackendUnavailable, ModelError
from engine.features import mel_filters

MIN_TARGET = "macOS13"


def _ct():
    try:
        import coremltools as ct
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types
    except ImportError as exc:
        raise BackendUnavailable("coreml", "converting needs coremltools (pip install 'scriptorium[coreml]')") from exc
    return ct, mb, types


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


class _Graph:
    """Layer helpers on (1, C, 1, S) tensors inside a MIL program."""

    def __init__(self, mb, w: WhisperWeights):
        self.mb, self.w = mb, w

    def linear(self, x, linear):
        weight = linear.weight_t.T  # [out, in]
        bias = linear.bias if linear.bias is not None else np.zeros(weight.shape[0], np.float32)
        return self.mb.conv(x=x, weight=_f32(weight[:, :, None, None]), bias=_f32(bias))

    def norm(self, x, gamma_beta):
        gamma, beta = gamma_beta
        return self.mb.layer_norm(x=x, axes=[1], gamma=_f32(gamma), beta=_f32(beta), epsilon=1e-5)

    def heads(self, x):
        return self.mb.split(x=x, num_splits=self.w.heads, axis=1)

    def attention(self, q, k, v, mask=None, keep_weights: list[int] | None = None):
        """softmax(q·k / sqrt(hd) + mask) · v, head by head; q [1,D,1,Tq], k and v [1,D,1,Tk]."""
        mb = self.mb
        d = q.shape[1]
        scale = np.float32(1 / math.sqrt(d // self.w.heads))
        outs, kept = [], []
        for h, (qh, kh, vh) in enumerate(zip(self.heads(q), self.heads(k), self.heads(v))):
            scores = mb.matmul(x=mb.squeeze(x=qh, axes=[2]), y=mb.squeeze(x=kh, axes=[2]), transpose_x=True)
            scores = mb.mul(x=scores, y=scale)  # [1, Tq, Tk]
            if mask is not None:
                scores = mb.add(x=scores, y=mask)
            weights = mb.softmax(x=scores, axis=-1)
            if keep_weights is not None and h in keep_weights:
                kept.append(weights)
            out = mb.matmul(x=mb.squeeze(x=vh, axes=[2]), y=weights, transpose_y=True)  # [1, hd, Tq]
            outs.append(mb.expand_dims(x=out, axes=[2]))
        return mb.concat(values=outs, axis=1), kept

    def ffn(self, x, layer):
        h = self.mb.gelu(x=self.linear(self.norm(x, layer["ffn_ln"]), layer["ffn_in"]), mode="EXACT")
        return self.mb.add(x=x, y=self.linear(h, layer["ffn_out"]))

    def self_attention_qkv(self, x, layer):
        qkv = self.linear(self.norm(x, layer["self_ln"]), layer["self_qkv"])
        return self.mb.split(x=qkv, num_splits=3, axis=1)


def mel_program(dims: Dims):
    ct, mb, types = _ct()
    n_bins = N_FFT // 2 + 1
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    angles = 2 * np.pi * np.outer(np.arange(n_bins), np.arange(N_FFT)) / N_FFT
    real = _f32((window * np.cos(angles))[:, None, None, :])  # [201, 1, 1, 400]
    imag = _f32((-window * np.sin(angles))[:, None, None, :])
    filters = _f32(mel_filters(dims.n_mels))

    @mb.program(input_specs=[mb.TensorSpec(shape=(N_SAMPLES,), dtype=types.fp16)], opset_version=ct.target.macOS13)
    def program(audio):
        x = mb.reshape(x=mb.cast(x=audio, dtype="fp32"), shape=[1, 1, 1, N_SAMPLES])
        x = mb.pad(x=x, pad=[0, 0, 0, 0, 0, 0, N_FFT // 2, N_FFT // 2], mode="reflect")
        re = mb.conv(x=x, weight=real, strides=[1, HOP_LENGTH])  # [1, 201, 1, 3001]
        im = mb.conv(x=x, weight=imag, strides=[1, HOP_LENGTH])
        power = mb.add(x=mb.mul(x=re, y=re), y=mb.mul(x=im, y=im))
        power = mb.slice_by_size(x=power, begin=[0, 0, 0, 0], size=[1, n_bins, 1, N_FRAMES])
        mel = mb.matmul(x=filters, y=mb.reshape(x=power, shape=[n_bins, N_FRAMES]))  # [n_mels, 3000]
        log = mb.mul(x=mb.log(x=mb.maximum(x=mel, y=np.float32(1e-10))), y=np.float32(1 / math.log(10)))
        log = mb.maximum(x=log, y=mb.sub(x=mb.reduce_max(x=log), y=np.float32(8.0)))
        log = mb.mul(x=mb.add(x=log, y=np.float32(4.0)), y=np.float32(0.25))
        log = mb.reshape(x=log, shape=[1, dims.n_mels, 1, N_FRAMES])
        return mb.cast(x=log, dtype="fp16", name="melspectrogram_features")

    return program


def encoder_program(w: WhisperWeights):
    ct, mb, types = _ct()
    g, dims = _Graph(mb, w), w.dims

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, dims.n_mels, 1, N_FRAMES), dtype=types.fp16)],
                opset_version=ct.target.macOS13)
    def program(melspectrogram_features):
        x = mb.cast(x=melspectrogram_features, dtype="fp32")
        x = mb.conv(x=x, weight=_f32(w.conv1_w[:, :, None, :]), bias=_f32(w.conv1_b), pad_type="custom",
                    pad=[0, 0, 1, 1])
        x = mb.gelu(x=x, mode="EXACT")
        x = mb.conv(x=x, weight=_f32(w.conv2_w[:, :, None, :]), bias=_f32(w.conv2_b), pad_type="custom",
                    pad=[0, 0, 1, 1], strides=[1, 2])
        x = mb.gelu(x=x, mode="EXACT")
        x = mb.add(x=x, y=_f32(w.enc_pos[:N_POSITIONS].T[None, :, None, :]))
        for layer in w.enc_layers:
            q, k, v = g.self_attention_qkv(x, layer)
            out, _ = g.attention(q, k, v)
            x = mb.add(x=x, y=g.linear(out, layer["self_out"]))
            x = g.ffn(x, layer)
        return mb.cast(x=g.norm(x, w.enc_ln), dtype="fp16", name="encoder_output_embeds")

    return program


def decoder_program(w: WhisperWeights, kv_slots: int):
    ct, mb, types = _ct()
    g, dims = _Graph(mb, w), w.dims
    d, channels = dims.d_model, dims.d_model * dims.decoder_layers
    fp16, i32 = types.fp16, types.int32
    specs = [mb.TensorSpec(shape=(1,), dtype=i32), mb.TensorSpec(shape=(1,), dtype=i32),
             mb.TensorSpec(shape=(1, channels, 1, kv_slots), dtype=fp16),
             mb.TensorSpec(shape=(1, channels, 1, kv_slots), dtype=fp16),
             mb.TensorSpec(shape=(1, kv_slots), dtype=i32),
             mb.TensorSpec(shape=(1, d, 1, N_POSITIONS), dtype=fp16),
             mb.TensorSpec(shape=(1, kv_slots), dtype=fp16)]
    align: dict[int, list[int]] = {}
    for layer, head in w.alignment_heads:
        align.setdefault(layer, []).append(head)

    @mb.program(input_specs=specs, opset_version=ct.target.macOS13)
    def program(input_ids, cache_length, key_cache, value_cache, kv_cache_update_mask, encoder_output_embeds,
                decoder_key_padding_mask):
        table = _f32(w.embedding)
        token = mb.gather(x=table, indices=input_ids, axis=0)  # [1, D]
        position = mb.gather(x=_f32(w.dec_pos[:kv_slots]), indices=cache_length, axis=0)
        x = mb.reshape(x=mb.add(x=token, y=position), shape=[1, d, 1, 1])
        update = mb.reshape(x=mb.cast(x=kv_cache_update_mask, dtype="fp32"), shape=[1, 1, 1, kv_slots])
        keep = mb.sub(x=np.float32(1.0), y=update)
        padding = mb.reshape(x=mb.cast(x=decoder_key_padding_mask, dtype="fp32"), shape=[1, 1, kv_slots])
        keys, values = mb.cast(x=key_cache, dtype="fp32"), mb.cast(x=value_cache, dtype="fp32")
        memory = mb.cast(x=encoder_output_embeds, dtype="fp32")
        new_k, new_v, kept = [], [], []
        for i, layer in enumerate(w.dec_layers):
            q, k, v = g.self_attention_qkv(x, layer)
            new_k.append(k)
            new_v.append(v)
            begin, end = [0, i * d, 0, 0], [1, (i + 1) * d, 1, kv_slots]
            cache_k = mb.add(x=mb.mul(x=mb.slice_by_index(x=keys, begin=begin, end=end), y=keep),
                             y=mb.mul(x=k, y=update))
            cache_v = mb.add(x=mb.mul(x=mb.slice_by_index(x=values, begin=begin, end=end), y=keep),
                             y=mb.mul(x=v, y=update))
            out, _ = g.attention(q, cache_k, cache_v, mask=padding)
            x = mb.add(x=x, y=g.linear(out, layer["self_out"]))
            q = g.linear(g.norm(x, layer["cross_ln"]), layer["cross_q"])
            ck, cv = mb.split(x=g.linear(memory, layer["cross_kv"]), num_splits=2, axis=1)
            out, weights = g.attention(q, ck, cv, keep_weights=align.get(i, []))
            kept += weights
            x = mb.add(x=x, y=g.linear(out, layer["cross_out"]))
            x = g.ffn(x, layer)
        x = mb.reshape(x=g.norm(x, w.dec_ln), shape=[1, d])
        logits = mb.matmul(x=x, y=table, transpose_y=True)  # the embedding, stored once
        logits = mb.reshape(x=logits, shape=[1, 1, dims.vocab])
        alignment = mb.mul(x=_sum(mb, kept), y=np.float32(1 / len(kept)))
        alignment = mb.reshape(x=alignment, shape=[1, N_POSITIONS])
        return (mb.cast(x=logits, dtype="fp16", name="logits"),
                mb.cast(x=mb.concat(values=new_k, axis=1), dtype="fp16", name="key_cache_updates"),
                mb.cast(x=mb.concat(values=new_v, axis=1), dtype="fp16", name="value_cache_updates"),
                mb.cast(x=alignment, dtype="fp16", name="alignment_heads_weights"))

    return program


def _sum(mb, values):
    total = values[0]
    for value in values[1:]:
        total = mb.add(x=total, y=value)
    return total


def convert_program(program, precision: str = "fp16", palettize_bits: int | None = None):
    """A saved-ready MLModel from a MIL program (fp16 compute unless `precision` is fp32)."""
    ct, _, _ = _ct()
    model = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, MIN_TARGET),
                       compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)
    if palettize_bits:
        from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

        config = OptimizationConfig(global_config=OpPalettizerConfig(nbits=palettize_bits, mode="uniform",
                                                                     weight_threshold=2048))
        model = palettize_weights(model, config)
    return model


def convert_model(source: str | Path, output_dir: str | Path, palettize_bits: int | None = None,
                  kv_slots: int = 224, progress=None) -> Path:
    """Write MelSpectrogram, AudioEncoder and TextDecoder .mlpackage, config.json, generation_config.json
    and tokenizer.json of the CTranslate2 Whisper folder `source` into `output_dir`."""
    source, out = Path(source), Path(output_dir)
    if not (source / "model.bin").is_file():
        raise ModelError(str(source), "is not a CTranslate2 Whisper folder (no model.bin)")
    if palettize_bits is not None and palettize_bits not in (1, 2, 3, 4, 6, 8):
        raise ValueError(f"palettize bits must be 1, 2, 3, 4, 6 or 8, got {palettize_bits}")
    weights = WhisperWeights.from_folder(source)
    out.mkdir(parents=True, exist_ok=True)
    builds = ((MEL, lambda: mel_program(weights.dims), "fp32", None),
              (ENCODER, lambda: encoder_program(weights), "fp16", palettize_bits),
              (DECODER, lambda: decoder_program(weights, kv_slots), "fp16", palettize_bits))
    for stage, build, precision, bits in builds:
        if progress:
            progress(stage)
        target = out / f"{stage}.mlpackage"
        if target.exists():
            shutil.rmtree(target)
        convert_program(build(), precision, bits).save(str(target))
    _write_configs(source, out, weights, kv_slots)
    return out


def _write_configs(source: Path, out: Path, w: WhisperWeights, kv_slots: int) -> None:
    dims = w.dims
    ct2_config = json.loads((source / "config.json").read_text()) if (source / "config.json").is_file() else {}
    config = {"model_type": "whisper", "d_model": dims.d_model, "encoder_layers": dims.encoder_layers,
              "decoder_layers": dims.decoder_layers, "encoder_attention_heads": dims.heads,
              "decoder_attention_heads": dims.heads, "num_mel_bins": dims.n_mels, "vocab_size": dims.vocab,
              "max_source_positions": N_POSITIONS, "max_target_positions": int(w.dec_pos.shape[0]),
              "kv_cache_slots": kv_slots, "alignment_heads": [list(h) for h in w.alignment_heads],
              "converted_from": str(source.name), "converter": "scriptorium (coremltools MIL builder)"}
    generation = {"alignment_heads": [list(h) for h in w.alignment_heads],
                  "suppress_tokens": ct2_config.get("suppress_ids", []),
                  "begin_suppress_tokens": ct2_config.get("suppress_ids_begin", [])}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    for name in ("tokenizer.json", "preprocessor_config.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
