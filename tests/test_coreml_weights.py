"""engine.ct2_weights: CTranslate2's model.bin read without CTranslate2."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ct2_weights import read_model_bin
from engine.errors import ModelError
from engine.models import packaged_model_dir


def test_packaged_tiny_en_reads_as_whisper_spec():
    weights = read_model_bin(packaged_model_dir())
    assert weights.spec == "WhisperSpec" and weights.binary_version >= 5
    assert weights["encoder/conv1/weight"].shape == (384, 80, 3)
    assert weights["decoder/embeddings/weight"].shape == (51864, 384)
    assert weights["decoder/embeddings/weight"].dtype == np.float16
    assert weights.scalar("encoder/num_heads") == 6
    # the output projection is stored once, as an alias of the embedding
    assert weights.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    assert weights["decoder/projection/weight"] is weights["decoder/embeddings/weight"]
    assert np.isfinite(weights.dequantized("encoder/layer_0/ffn/linear_0/weight")).all()


def _tiny_spec(quantization: str | None):
    model_spec = pytest.importorskip("ctranslate2.specs.model_spec")
    common_spec = pytest.importorskip("ctranslate2.specs.common_spec")

    class Tiny(model_spec.ModelSpec):
        def __init__(self):
            super().__init__()
            self.dense = common_spec.LinearSpec()
            self.twin = common_spec.LinearSpec()

        @property
        def name(self):
            return "TinySpec"

        @property
        def revision(self):
            return 7

    weight = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    spec = Tiny()
    spec.dense.weight, spec.dense.bias = weight.copy(), np.arange(8, dtype=np.float32)
    spec.twin.weight, spec.twin.bias = weight.copy(), np.ones(8, dtype=np.float32)
    spec.validate()
    spec.optimize(quantization=quantization)
    return spec, weight


@pytest.mark.parametrize("quantization", ["int8", "int16", "float16", "float32"])
def test_round_trip_of_a_spec_written_by_ctranslate2(tmp_path, quantization):
    spec, weight = _tiny_spec(quantization)
    spec._serialize(str(tmp_path / "model.bin"))  # CTranslate2's own writer
    read = read_model_bin(tmp_path)
    assert (read.spec, read.revision) == ("TinySpec", 7)
    assert read.aliases == {"twin/weight": "dense/weight"}
    step = np.abs(weight).max() / {"int8": 127, "int16": 1024}.get(quantization, 1e6)
    for name in ("dense/weight", "twin/weight"):
        np.testing.assert_allclose(read.dequantized(name), weight, atol=max(step, 2e-3))
    np.testing.assert_array_equal(read.dequantized("dense/bias"), np.arange(8))


def test_truncated_or_unknown_files_raise_model_error(tmp_path):
    data = (packaged_model_dir() / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:5000])
    with pytest.raises(ModelError, match="truncated"):
        read_model_bin(tmp_path)
    (tmp_path / "model.bin").write_bytes((99).to_bytes(4, "little") + data[4:100])
    with pytest.raises(ModelError, match="binary version 99"):
        read_model_bin(tmp_path)
