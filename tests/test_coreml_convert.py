"""The converter: MIL programs built from numpy weights, saved as WhisperKit's packages, checked by
reading the saved specs back (Linux cannot run them: coremltools predicts on macOS only), and by
running the programs as built in a small numpy MIL interpreter against the numpy reference
(measured: mel 4.8e-4, encoder 9.8e-4 max abs, both the fp16 rounding of the outputs).

The spec tests use a small random Whisper (d_model 64, 2 + 2 layers, vocab 120) written in
CTranslate2's model.bin format, so that they take seconds; the slow test converts tiny.en.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from engine.backends.coreml.contract import DECODER, ENCODER, MEL, STAGES, Dims, io_spec
from engine.models import packaged_model_dir, resolve_model

ct = pytest.importorskip("coremltools")
convert = pytest.importorskip("engine.backends.coreml.convert")

SMALL = Dims(n_mels=80, d_model=64, encoder_layers=2, decoder_layers=2, heads=2, vocab=120)
DTYPES = {65552: np.float16, 65568: np.float32, 131104: np.int32}  # ArrayFeatureType.ArrayDataType


def _write_model_bin(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """CTranslate2's binary format, version 6 (see engine.ct2_weights)."""
    def string(s):
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    types = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}
    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(arrays))]
    for name, value in sorted(arrays.items()):
        value = np.ascontiguousarray(value)
        out += [string(name), struct.pack("<B", value.ndim), *(struct.pack("<I", d) for d in value.shape),
                struct.pack("<B", types[value.dtype]), struct.pack("<I", value.nbytes), value.tobytes()]
    out.append(struct.pack("<I", 0))
    path.write_bytes(b"".join(out))


def small_whisper(folder: Path, dims: Dims = SMALL) -> Path:
    """A random Whisper folder with the variable names of CTranslate2's WhisperSpec."""
    rng = np.random.default_rng(0)
    d, f = dims.d_model, 4 * dims.d_model

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float16)

    a = {"encoder/num_heads": np.array(dims.heads, np.int16), "decoder/num_heads": np.array(dims.heads, np.int16),
         "encoder/conv1/weight": rand(d, dims.n_mels, 3), "encoder/conv1/bias": rand(d),
         "encoder/conv2/weight": rand(d, d, 3), "encoder/conv2/bias": rand(d),
         "encoder/position_encodings/encodings": rand(1500, d), "decoder/embeddings/weight": rand(dims.vocab, d),
         "decoder/position_encodings/encodings": rand(448, d)}
    for side in ("encoder", "decoder"):
        a[f"{side}/layer_norm/gamma"], a[f"{side}/layer_norm/beta"] = rand(d) + 1, rand(d)
        for i in range(2):
            s = f"{side}/layer_{i}"
            names = [("self_attention/linear_0", 3 * d, d), ("self_attention/linear_1", d, d),
                     ("ffn/linear_0", f, d), ("ffn/linear_1", d, f)]
            if side == "decoder":
                names += [("attention/linear_0", d, d), ("attention/linear_1", 2 * d, d), ("attention/linear_2", d, d)]
            for name, rows, cols in names:
                a[f"{s}/{name}/weight"], a[f"{s}/{name}/bias"] = rand(rows, cols), rand(rows)
            for norm in ("self_attention", "ffn") + (("attention",) if side == "decoder" else ()):
                a[f"{s}/{norm}/layer_norm/gamma"], a[f"{s}/{norm}/layer_norm/beta"] = rand(d) + 1, rand(d)
    folder.mkdir(parents=True, exist_ok=True)
    _write_model_bin(folder / "model.bin", a)
    (folder / "config.json").write_text(json.dumps({"alignment_heads": [[1, 0], [1, 1]], "suppress_ids": [5],
                                                    "suppress_ids_begin": [7]}))
    return folder


def read_spec(package: Path):
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()

    def tensors(features):
        return {t.name: (tuple(t.type.multiArrayType.shape), DTYPES[t.type.multiArrayType.dataType])
                for t in features}

    main = spec.mlProgram.functions["main"]
    ops = Counter(op.type for op in main.block_specializations[main.opset].operations)
    return tensors(spec.description.input), tensors(spec.description.output), ops


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    source = small_whisper(root / "small")
    return source, convert.convert_model(source, root / "small-coreml")


def test_packages_follow_whisperkit_contract(converted):
    _, out = converted
    contract = io_spec(SMALL)
    for stage in STAGES:
        inputs, outputs, _ = read_spec(out / f"{stage}.mlpackage")
        want_in, want_out = contract[stage]
        assert inputs == {t.name: (t.shape, t.dtype) for t in want_in}, stage
        assert outputs == {t.name: (t.shape, t.dtype) for t in want_out}, stage


def test_programs_use_the_neural_engine_layout(converted):
    _, out = converted
    ops = {stage: read_spec(out / f"{stage}.mlpackage")[2] for stage in STAGES}
    encoder, decoder, mel = ops[ENCODER], ops[DECODER], ops[MEL]
    # linear layers are 1x1 convolutions: 2 stem convs + 4 per encoder layer (qkv, out, ffn in/out)
    assert encoder["conv"] == 2 + 4 * SMALL.encoder_layers and "linear" not in encoder
    assert encoder["split"] >= 3 * SMALL.encoder_layers  # heads split on channels
    assert encoder["softmax"] == SMALL.heads * SMALL.encoder_layers  # one attention per head
    assert {"layer_norm", "gelu", "matmul"} <= set(encoder)
    assert decoder["conv"] == 7 * SMALL.decoder_layers and "linear" not in decoder
    assert decoder["gather"] == 2 and decoder["softmax"] == 2 * SMALL.heads * SMALL.decoder_layers
    assert {"slice_by_index", "concat", "layer_norm"} <= set(decoder)
    assert {"pad", "conv", "log", "reduce_max", "matmul"} <= set(mel)


def test_folder_loads_as_a_coreml_model(converted):
    source, out = converted
    config = json.loads((out / "config.json").read_text())
    assert (config["d_model"], config["decoder_layers"], config["vocab_size"]) == (64, 2, 120)
    assert json.loads((out / "generation_config.json").read_text())["suppress_tokens"] == [5]
    spec = resolve_model(out)
    assert spec.format == "coreml" and spec.n_mels == 80


def test_palettized_weights_use_a_lookup_table(tmp_path, converted):
    source, plain = converted
    out = convert.convert_model(source, tmp_path / "p4", palettize_bits=4)
    ops = read_spec(out / f"{ENCODER}.mlpackage")[2]
    assert ops["constexpr_lut_to_dense"] >= 4 * SMALL.encoder_layers
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
    assert size(out / f"{DECODER}.mlpackage") < 0.5 * size(plain / f"{DECODER}.mlpackage")


def test_cli_convert(tmp_path, converted):
    from runner.commands.convert_cmd import convert as command

    source, _ = converted
    result = CliRunner().invoke(command, [str(source), "--to", "coreml", "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "TextDecoder.mlpackage").is_dir()
    again = CliRunner().invoke(command, [str(tmp_path / "o"), "--output-dir", str(tmp_path / "x")])
    assert again.exit_code != 0 and "already a coreml model" in again.output


@pytest.mark.slow
def test_tiny_en_converts(tmp_path):
    out = convert.convert_model(packaged_model_dir(), tmp_path / "tiny.en-coreml")
    inputs, outputs, _ = read_spec(out / f"{DECODER}.mlpackage")
    assert inputs["key_cache"] == ((1, 384 * 4, 1, 224), np.float16)
    assert outputs["logits"] == ((1, 1, 51864), np.float16)
    assert (out / "tokenizer.json").is_file() and resolve_model(out).format == "coreml"


# -- the MIL programs, run by a small numpy interpreter ---------------------------------------------
# Linux has no Core ML runtime, so the programs (as built, before coremltools' passes) are run op by
# op in numpy and compared with the numpy reference: this checks what the converter wrote.

def _conv(x, weight, bias=None, strides=(1, 1), pad_type="valid", pad=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    assert x.shape[2] == 1 and weight.shape[2] == 1 and groups == 1 and tuple(dilations) == (1, 1)
    if pad_type == "custom":
        x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    k, stride = weight.shape[3], strides[1]
    t = (x.shape[3] - k) // stride + 1
    cols = np.stack([x[0, :, 0, j:j + stride * (t - 1) + 1:stride] for j in range(k)], axis=1)  # [C, k, T]
    out = weight.reshape(weight.shape[0], -1) @ cols.reshape(-1, t)
    return (out + (bias[:, None] if bias is not None else 0))[None, :, None, :]


def _layer_norm(x, axes, gamma, beta, epsilon):
    axes = tuple(a % x.ndim for a in axes)
    mean = x.mean(axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axes, keepdims=True)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    return (x - mean) / np.sqrt(var + epsilon) * gamma.reshape(shape) + beta.reshape(shape)


def _matmul(x, y, transpose_x=False, transpose_y=False):
    return np.matmul(np.swapaxes(x, -1, -2) if transpose_x else x, np.swapaxes(y, -1, -2) if transpose_y else y)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _gelu(x, mode):
    from engine.backends.coreml.reference import gelu

    assert mode == "EXACT"
    return gelu(x)


MIL_OPS = {
    "cast": lambda x, dtype: x.astype({"fp32": np.float32, "fp16": np.float16, "int32": np.int32}[dtype]),
    "conv": _conv, "layer_norm": _layer_norm, "gelu": _gelu, "matmul": _matmul, "softmax": _softmax,
    "split": lambda x, num_splits, axis: np.split(x, num_splits, axis=axis),
    "squeeze": lambda x, axes: np.squeeze(x, tuple(axes)),
    "expand_dims": lambda x, axes: np.expand_dims(x, tuple(axes)),
    "reshape": lambda x, shape: x.reshape(shape), "concat": lambda values, axis, interleave=False:
        np.concatenate(values, axis=axis),
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "maximum": lambda x, y: np.maximum(x, y), "log": lambda x, epsilon: np.log(x),
    "reduce_max": lambda x, axes=None, keep_dims=False: np.max(x, axis=None if axes is None else tuple(axes),
                                                               keepdims=keep_dims),
    "gather": lambda x, indices, axis, batch_dims=0, validate_indices=False: np.take(x, indices, axis=axis),
    "slice_by_index": lambda x, begin, end, **_: x[tuple(slice(b, e) for b, e in zip(begin, end))],
    "slice_by_size": lambda x, begin, size: x[tuple(slice(b, b + s) for b, s in zip(begin, size))],
    "pad": lambda x, pad, mode, constant_val=0.0: np.pad(x, np.asarray(pad).reshape(-1, 2), mode=mode),
}


def run_mil(program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    main = program.functions["main"]
    env = {name: np.asarray(value) for name, value in inputs.items()}

    def value(var):
        return env[var.name] if var.name in env else var.val

    for op in main.operations:
        if op.op_type == "const":
            env[op.outputs[0].name] = op.outputs[0].val
            continue
        args = {k: [value(x) for x in v] if isinstance(v, (list, tuple)) else value(v) for k, v in op.inputs.items()}
        result = MIL_OPS[op.op_type](**{k: v for k, v in args.items() if v is not None})
        for var, out in zip(op.outputs, result if isinstance(result, list) else [result]):
            env[var.name] = np.asarray(out)
    return {var.name: env[var.name] for var in main.outputs}


def test_programs_compute_what_the_reference_computes(converted, shared_audio_dir):
    """MelSpectrogram on real speech, AudioEncoder and one TextDecoder step of the small model."""
    from engine.audio import load_audio
    from engine.backends.coreml.reference import ReferenceModels, padding_mask
    from engine.constants import N_SAMPLES
    from engine.features import log_mel_spectrogram

    source, _ = converted
    models = ReferenceModels.from_folder(source, io_dtype=np.float32)
    w = models.weights
    audio = np.zeros(N_SAMPLES, np.float32)
    clip = load_audio(str(shared_audio_dir / "jfk.flac"))[:N_SAMPLES]
    audio[:len(clip)] = clip
    audio16 = audio.astype(np.float16)
    mel = run_mil(convert.mel_program(w.dims), {"audio": audio16})["melspectrogram_features"]
    expected = log_mel_spectrogram(audio16.astype(np.float32), 80)
    assert mel.dtype == np.float16 and np.abs(mel[0, :, 0, :].astype(np.float32) - expected).max() < 2e-3

    features = mel.astype(np.float32)
    embeds = run_mil(convert.encoder_program(w), {"melspectrogram_features": features})["encoder_output_embeds"]
    want = models.stages[ENCODER].predict({"melspectrogram_features": features})["encoder_output_embeds"]
    assert np.abs(embeds.astype(np.float32) - want).max() < 2e-3 * max(1.0, np.abs(want).max())  # fp16 output

    slots, channels = 224, SMALL.d_model * SMALL.decoder_layers
    rng = np.random.default_rng(3)
    step = {"input_ids": np.array([17], np.int32), "cache_length": np.array([3], np.int32),
            "key_cache": rng.standard_normal((1, channels, 1, slots)).astype(np.float16),
            "value_cache": rng.standard_normal((1, channels, 1, slots)).astype(np.float16),
            "kv_cache_update_mask": np.eye(slots, dtype=np.int32)[3][None],
            "encoder_output_embeds": want.astype(np.float16),
            "decoder_key_padding_mask": padding_mask(np.array([3]), slots).astype(np.float16)}
    got = run_mil(convert.decoder_program(w, slots), step)
    ref = models.stages[DECODER].predict(step)
    for name in ("logits", "key_cache_updates", "value_cache_updates", "alignment_heads_weights"):
        assert got[name].dtype == np.float16 and got[name].shape == ref[name].shape, name
        np.testing.assert_allclose(got[name].astype(np.float32), ref[name], atol=5e-3, rtol=5e-3, err_msg=name)
