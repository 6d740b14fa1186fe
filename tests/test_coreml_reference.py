"""The numpy reference of WhisperKit's models against CTranslate2 (float32) on real speech.

Measured on jfk.flac with tiny.en (see the asserts for the limits):
- float32 I/O: encoder output max |diff| 2.8e-5; next-token log-probabilities max |diff| 1.8e-5;
- fp16 I/O (the Core ML contract): encoder 4.7e-3 (values up to ~12); log-probabilities 1.7e-2;
  the top-1 token agrees at every step.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio import load_audio
from engine.backends.coreml.contract import DECODER, ENCODER, MEL, io_spec
from engine.backends.coreml.reference import ReferenceModels, WhisperWeights, padding_mask
from engine.constants import N_SAMPLES
from engine.features import window_features
from engine.models import packaged_model_dir

ctranslate2 = pytest.importorskip("ctranslate2")
MASKED_BY_CT2 = -1e30  # CTranslate2 marks filtered logits with the lowest float


@pytest.fixture(scope="module")
def weights():
    return WhisperWeights.from_folder(packaged_model_dir())


@pytest.fixture(scope="module")
def ct2():
    return ctranslate2.models.Whisper(str(packaged_model_dir()), compute_type="float32", intra_threads=2)


@pytest.fixture(scope="module")
def jfk(shared_audio_dir, ct2):
    features = window_features(load_audio(str(shared_audio_dir / "jfk.flac"))[:N_SAMPLES], 80)
    encoded = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(features[None]), to_cpu=True))[0]
    return features, encoded


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def teacher_forced_logits(models: ReferenceModels, encoded: np.ndarray, tokens: list[int]) -> np.ndarray:
    """Logits after each token, one decoder call per token as the host loop makes them."""
    dims, dtype = models.dims, models.io_dtype
    slots = dims.kv_slots
    keys = np.zeros((1, dims.kv_channels, 1, slots), dtype)
    values = np.zeros_like(keys)
    embeds = encoded.T[None, :, None, :].astype(dtype)
    out = []
    for i, token in enumerate(tokens):
        update = np.zeros((1, slots), np.int32)
        update[0, i] = 1
        result = models.stages[DECODER].predict({
            "input_ids": np.array([token], np.int32), "cache_length": np.array([i], np.int32),
            "key_cache": keys, "value_cache": values, "kv_cache_update_mask": update,
            "encoder_output_embeds": embeds,
            "decoder_key_padding_mask": padding_mask(np.array([i]), slots).astype(dtype)})
        keys[0, :, 0, i] = result["key_cache_updates"][0, :, 0, 0]
        values[0, :, 0, i] = result["value_cache_updates"][0, :, 0, 0]
        out.append(result["logits"][0, 0].astype(np.float32))
    return np.array(out)


@pytest.mark.parametrize("io_dtype, limit", [(np.float32, 1e-4), (np.float16, 2e-2)])
def test_encoder_matches_ctranslate2(weights, jfk, io_dtype, limit):
    features, encoded = jfk
    models = ReferenceModels(weights, io_dtype)
    out = models.stages[ENCODER].predict({"melspectrogram_features": features[None, :, None, :].astype(io_dtype)})
    embeds = out["encoder_output_embeds"]
    assert embeds.shape == (1, 384, 1, 1500) and embeds.dtype == io_dtype
    assert np.abs(embeds[0, :, 0, :].T.astype(np.float32) - encoded).max() < limit


@pytest.mark.parametrize("io_dtype, limit", [(np.float32, 1e-4), (np.float16, 5e-2)])
def test_next_token_log_probabilities_match_ctranslate2(weights, ct2, jfk, io_dtype, limit):
    """Every step of CTranslate2's own greedy decode, from a bare and a conditioned prompt."""
    _, encoded = jfk
    models = ReferenceModels(weights, io_dtype)
    view = ctranslate2.StorageView.from_array(encoded[None])
    for prompt in ([50257], [50361, 843, 523, 616, 5891, 50257]):  # sot; sot_prev + text + sot
        result = ct2.generate(view, [prompt], beam_size=1, max_length=24, return_logits_vocab=True,
                              suppress_tokens=[], suppress_blank=False)[0]
        theirs = np.asarray(result.logits[0])
        mine = teacher_forced_logits(models, encoded, prompt + result.sequences_ids[0])[len(prompt) - 1:]
        mine = mine[:len(theirs)]
        masked = theirs < MASKED_BY_CT2
        a = log_softmax(np.where(masked, -np.inf, mine))
        b = log_softmax(np.where(masked, -np.inf, theirs))
        assert len(theirs) >= 10
        diff = np.subtract(a, b, out=np.zeros_like(a), where=~masked)
        assert np.abs(diff).max() < limit
        assert (a.argmax(-1) == b.argmax(-1)).all()


def test_outputs_follow_the_contract(weights):
    models = ReferenceModels(weights)
    spec = io_spec(models.dims)
    audio = np.zeros(N_SAMPLES, np.float16)
    mel = models.stages[MEL].predict({"audio": audio})
    inputs = {"melspectrogram_features": mel["melspectrogram_features"]}
    embeds = models.stages[ENCODER].predict(inputs)["encoder_output_embeds"]
    slots = models.dims.kv_slots
    decoder_inputs = {t.name: np.zeros(t.shape, t.dtype) for t in spec[DECODER][0]}
    decoder_inputs.update(encoder_output_embeds=embeds, input_ids=np.array([50257], np.int32),
                          decoder_key_padding_mask=padding_mask(np.array([0]), slots).astype(np.float16))
    decoder_inputs["kv_cache_update_mask"][0, 0] = 1
    produced = {MEL: mel, ENCODER: {"encoder_output_embeds": embeds},
                DECODER: models.stages[DECODER].predict(decoder_inputs)}
    for stage, (_, outputs) in spec.items():
        for tensor in outputs:
            value = produced[stage][tensor.name]
            assert value.shape == tensor.shape and value.dtype == tensor.dtype, (stage, tensor.name)
    weights_row = produced[DECODER]["alignment_heads_weights"].astype(np.float32)
    assert abs(weights_row.sum() - 1.0) < 1e-2  # a mean of softmax rows
