"""A numpy reference of WhisperKit's three Core ML models, built from a CTranslate2 model.bin.

Same names, shapes, layout and dtypes as the Core ML packages (see `contract`), float32
arithmetic inside. The leading dimension may exceed the contract's 1: rows are independent,
which lets the host loop decode every beam of every window in one call. It is what makes the
Linux tests meaningful and serves as a pure-numpy fallback runtime.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.backends.coreml.contract import DECODER, ENCODER, MEL, MASKED, Dims
from engine.ct2_weights import CT2Weights, read_model_bin
from engine.errors import ModelError
from engine.features import log_mel_spectrogram

_EPS = 1e-5


def erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, below float32 resolution near 1)."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as Whisper and CTranslate2 use."""
    return 0.5 * x * (1.0 + erf(x * np.float32(1 / math.sqrt(2))))


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, -1, keepdims=True)
    return centered / np.sqrt(var + _EPS) * gamma + beta


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@dataclass
class Linear:
    weight_t: np.ndarray  # [in, out]
    bias: np.ndarray | None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight_t
        return y + self.bias if self.bias is not None else y


class WhisperWeights:
    """The float32 weights of one Whisper model, named by what they do."""

    def __init__(self, w: CT2Weights, alignment_heads: list[tuple[int, int]] | None = None):
        if w.spec and w.spec != "WhisperSpec":
            raise ModelError(w.spec, "the numpy reference reads Whisper models only")
        self.raw = w
        f = w.dequantized
        self.conv1_w, self.conv1_b = f("encoder/conv1/weight"), f("encoder/conv1/bias")
        self.conv2_w, self.conv2_b = f("encoder/conv2/weight"), f("encoder/conv2/bias")
        self.enc_pos = f("encoder/position_encodings/encodings")
        self.embedding = f("decoder/embeddings/weight")
        self.embedding_t = np.ascontiguousarray(self.embedding.T)
        self.dec_pos = f("decoder/position_encodings/encodings")
        self.heads = int(w.scalar("encoder/num_heads", 0) or w.scalar("decoder/num_heads"))
        self.enc_layers = [self._layer(f"encoder/layer_{i}") for i in range(self._count("encoder"))]
        self.dec_layers = [self._layer(f"decoder/layer_{i}") for i in range(self._count("decoder"))]
        self.enc_ln = (f("encoder/layer_norm/gamma"), f("encoder/layer_norm/beta"))
        self.dec_ln = (f("decoder/layer_norm/gamma"), f("decoder/layer_norm/beta"))
        self.alignment_heads = [tuple(h) for h in alignment_heads] if alignment_heads else \
            [(layer, head) for layer in range(len(self.dec_layers) // 2, len(self.dec_layers))
             for head in range(self.heads)]
        d = self.embedding.shape[1]
        self.dims = Dims(self.conv1_w.shape[1], d, len(self.enc_layers), len(self.dec_layers), self.heads,
                         self.embedding.shape[0])

    @classmethod
    def from_folder(cls, folder: str | Path) -> "WhisperWeights":
        """model.bin and the alignment heads of config.json in a CTranslate2 Whisper folder."""
        import json

        folder = Path(folder)
        config = folder / "config.json"
        heads = json.loads(config.read_text()).get("alignment_heads") if config.is_file() else None
        return cls(read_model_bin(folder / "model.bin"), heads)

    def _count(self, side: str) -> int:
        n = 0
        while f"{side}/layer_{n}/ffn/linear_0/weight" in self.raw:
            n += 1
        return n

    def _linear(self, name: str) -> Linear:
        bias = self.raw.dequantized(f"{name}/bias") if f"{name}/bias" in self.raw else None
        return Linear(np.ascontiguousarray(self.raw.dequantized(f"{name}/weight").T), bias)

    def _norm(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.raw.dequantized(f"{name}/gamma"), self.raw.dequantized(f"{name}/beta")

    def _layer(self, scope: str) -> dict:
        layer = {"self_ln": self._norm(f"{scope}/self_attention/layer_norm"),
                 "self_qkv": self._linear(f"{scope}/self_attention/linear_0"),
                 "self_out": self._linear(f"{scope}/self_attention/linear_1"),
                 "ffn_ln": self._norm(f"{scope}/ffn/layer_norm"),
                 "ffn_in": self._linear(f"{scope}/ffn/linear_0"),
                 "ffn_out": self._linear(f"{scope}/ffn/linear_1")}
        if f"{scope}/attention/linear_0/weight" in self.raw:
            layer.update(cross_ln=self._norm(f"{scope}/attention/layer_norm"),
                         cross_q=self._linear(f"{scope}/attention/linear_0"),
                         cross_kv=self._linear(f"{scope}/attention/linear_1"),
                         cross_out=self._linear(f"{scope}/attention/linear_2"))
        return layer


def _conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """x [C_in, T], weight [C_out, C_in, 3], padding 1 -> [C_out, T // stride]."""
    padded = np.pad(x, ((0, 0), (1, 1)))
    t_out = (x.shape[1] + 2 - 3) // stride + 1
    cols = np.stack([padded[:, k:k + stride * (t_out - 1) + 1:stride] for k in range(3)], axis=1)  # [C_in, 3, T]
    return weight.reshape(weight.shape[0], -1) @ cols.reshape(-1, t_out) + bias[:, None]


class MelSpectrogram:
    """`audio` [480000] -> `melspectrogram_features` [1, n_mels, 1, 3000]."""

    def __init__(self, n_mels: int, io_dtype=np.float16):
        self.n_mels, self.io_dtype = n_mels, io_dtype

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        audio = np.asarray(inputs["audio"], dtype=np.float32).reshape(-1)
        mel = log_mel_spectrogram(audio, self.n_mels)
        return {"melspectrogram_features": mel[None, :, None, :].astype(self.io_dtype)}


class AudioEncoder:
    """`melspectrogram_features` [B, n_mels, 1, 3000] -> `encoder_output_embeds` [B, D, 1, 1500]."""

    def __init__(self, weights: WhisperWeights, io_dtype=np.float16):
        self.w, self.io_dtype = weights, io_dtype

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mel = np.asarray(inputs["melspectrogram_features"], dtype=np.float32)
        out = np.stack([self.encode_one(m[:, 0, :]) for m in mel])  # [B, 1500, D]
        return {"encoder_output_embeds": out.transpose(0, 2, 1)[:, :, None, :].astype(self.io_dtype)}

    def encode_one(self, mel: np.ndarray) -> np.ndarray:
        """[n_mels, 3000] -> [1500, D] float32."""
        w = self.w
        x = gelu(_conv1d(mel, w.conv1_w, w.conv1_b, 1))
        x = gelu(_conv1d(x, w.conv2_w, w.conv2_b, 2)).T
        x = x + w.enc_pos[: x.shape[0]]
        for layer in w.enc_layers:
            x = x + self._attention(layer, layer_norm(x, *layer["self_ln"]))
            x = x + layer["ffn_out"](gelu(layer["ffn_in"](layer_norm(x, *layer["ffn_ln"]))))
        return layer_norm(x, *w.enc_ln).astype(np.float32)

    def _attention(self, layer: dict, h: np.ndarray) -> np.ndarray:
        t, d = h.shape
        heads = self.w.heads
        q, k, v = np.split(layer["self_qkv"](h), 3, axis=-1)
        q, k, v = (a.reshape(t, heads, d // heads).transpose(1, 0, 2) for a in (q, k, v))
        weights = softmax(q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(d // heads)))
        return layer["self_out"]((weights @ v).transpose(1, 0, 2).reshape(t, d))


class TextDecoder:
    """One token per row and call, WhisperKit's TextDecoder contract (see `contract`).

    Cross-attention keys and values depend only on `encoder_output_embeds`; they are kept
    for the last few distinct windows (keyed by a hash of every 7th value of the row), so a
    window costs one projection however many tokens and beams decode it.
    """

    def __init__(self, weights: WhisperWeights, io_dtype=np.float16, kv_slots: int | None = None,
                 cross_cache_size: int = 8):
        self.w, self.io_dtype = weights, io_dtype
        self.dims = weights.dims if kv_slots is None else Dims(**{**weights.dims.__dict__, "kv_slots": kv_slots})
        self._cross: OrderedDict[bytes, list[tuple[np.ndarray, np.ndarray]]] = OrderedDict()
        self._cross_size = cross_cache_size
        self._align = {}
        for layer, head in weights.alignment_heads:
            self._align.setdefault(layer, []).append(head)

    def cross_kv(self, embeds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer (K [H, hd, 1500], V [H, 1500, hd]) of one window's [D, 1, 1500] embeddings."""
        key = hashlib.blake2b(np.ascontiguousarray(embeds.reshape(-1)[::7]).tobytes(), digest_size=16).digest()
        if key in self._cross:
            self._cross.move_to_end(key)
            return self._cross[key]
        x = np.asarray(embeds, dtype=np.float32)[:, 0, :].T  # [1500, D]
        heads, d = self.w.heads, x.shape[1]
        out = []
        for layer in self.w.dec_layers:
            k, v = np.split(layer["cross_kv"](x), 2, axis=-1)
            out.append((np.ascontiguousarray(k.reshape(-1, heads, d // heads).transpose(1, 2, 0)),
                        np.ascontiguousarray(v.reshape(-1, heads, d // heads).transpose(1, 0, 2))))
        self._cross[key] = out
        while len(self._cross) > self._cross_size:
            self._cross.popitem(last=False)
        return out

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        w, dims = self.w, self.dims
        d, heads = dims.d_model, w.heads
        hd = d // heads
        ids = np.asarray(inputs["input_ids"]).reshape(-1).astype(np.int64)
        pos = np.asarray(inputs["cache_length"]).reshape(-1).astype(np.int64)
        rows = len(ids)
        keys = np.asarray(inputs["key_cache"], dtype=np.float32)[:, :, 0, :]  # [B, D*L, S]
        values = np.asarray(inputs["value_cache"], dtype=np.float32)[:, :, 0, :]
        update = np.asarray(inputs["kv_cache_update_mask"], dtype=np.float32).reshape(rows, 1, -1)
        padding = np.asarray(inputs["decoder_key_padding_mask"], dtype=np.float32).reshape(rows, 1, -1)
        embeds = np.asarray(inputs["encoder_output_embeds"])
        groups = self._groups(embeds)
        x = w.embedding[ids] + w.dec_pos[pos]
        new_k, new_v = [], []
        align = np.zeros((rows, embeds.shape[-1]), dtype=np.float32)
        scale = np.float32(1 / math.sqrt(hd))
        for i, layer in enumerate(w.dec_layers):
            q, k, v = np.split(layer["self_qkv"](layer_norm(x, *layer["self_ln"])), 3, axis=-1)
            new_k.append(k)
            new_v.append(v)
            cache_k = keys[:, i * d:(i + 1) * d] * (1 - update) + k[:, :, None] * update  # [B, D, S]
            cache_v = values[:, i * d:(i + 1) * d] * (1 - update) + v[:, :, None] * update
            scores = np.einsum("bhd,bhds->bhs", q.reshape(rows, heads, hd), cache_k.reshape(rows, heads, hd, -1))
            attn = softmax(scores * scale + padding)
            out = np.einsum("bhs,bhds->bhd", attn, cache_v.reshape(rows, heads, hd, -1)).reshape(rows, d)
            x = x + layer["self_out"](out)
            q = layer["cross_q"](layer_norm(x, *layer["cross_ln"])).reshape(rows, heads, hd)
            out = np.empty((rows, heads, hd), dtype=np.float32)
            for members, cross in groups:
                ck, cv = cross[i]
                attn = softmax(np.einsum("rhd,hds->rhs", q[members], ck) * scale)
                out[members] = np.einsum("rhs,hsd->rhd", attn, cv)
                for head in self._align.get(i, ()):
                    align[members] += attn[:, head]
            x = x + layer["cross_out"](out.reshape(rows, d))
            x = x + layer["ffn_out"](gelu(layer["ffn_in"](layer_norm(x, *layer["ffn_ln"]))))
        logits = layer_norm(x, *w.dec_ln) @ w.embedding_t
        align /= max(len(w.alignment_heads), 1)
        column = (rows, dims.kv_channels, 1, 1)
        return {"logits": logits[:, None, :].astype(self.io_dtype),
                "key_cache_updates": np.concatenate(new_k, axis=1).reshape(column).astype(self.io_dtype),
                "value_cache_updates": np.concatenate(new_v, axis=1).reshape(column).astype(self.io_dtype),
                "alignment_heads_weights": align.astype(self.io_dtype)}

    def _groups(self, embeds: np.ndarray) -> list[tuple[np.ndarray, list]]:
        """Rows that share a window, with that window's cross keys and values."""
        by_key: dict[int, list[int]] = {}
        crosses = []
        for row in range(embeds.shape[0]):
            cross = self.cross_kv(embeds[row])
            slot = next((j for j, c in enumerate(crosses) if c is cross), None)
            if slot is None:
                crosses.append(cross)
                slot = len(crosses) - 1
            by_key.setdefault(slot, []).append(row)
        return [(np.asarray(members), crosses[slot]) for slot, members in by_key.items()]


@dataclass
class ReferenceModels:
    """The three numpy models of one Whisper, by stage name."""

    weights: WhisperWeights
    io_dtype: type = np.float16
    kv_slots: int | None = None

    def __post_init__(self):
        self.stages = {MEL: MelSpectrogram(self.weights.dims.n_mels, self.io_dtype),
                       ENCODER: AudioEncoder(self.weights, self.io_dtype),
                       DECODER: TextDecoder(self.weights, self.io_dtype, self.kv_slots)}

    @classmethod
    def from_folder(cls, folder: str | Path, io_dtype=np.float16, kv_slots: int | None = None) -> "ReferenceModels":
        return cls(WhisperWeights.from_folder(folder), io_dtype, kv_slots)

    @property
    def dims(self) -> Dims:
        return self.stages[DECODER].dims


def padding_mask(lengths: np.ndarray, slots: int) -> np.ndarray:
    """decoder_key_padding_mask rows: 0 up to and including each row's cache_length."""
    return np.where(np.arange(slots)[None, :] <= np.asarray(lengths)[:, None], 0.0, MASKED)
