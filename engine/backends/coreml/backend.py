"""CoreMLBackend: the Backend protocol over WhisperKit's models, with the decoding loop on the host.

The encoder runs once per window. The decoder runs one token per call (WhisperKit's contract):
the host keeps each row's key/value cache and masks, feeds the prompt, applies Whisper's logit
rules and runs beam search or temperature sampling. A row is one hypothesis of one window; all
rows of all windows go to the predictor together (the numpy reference computes them as a batch,
Core ML runs them one by one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.backends.base import Alignment, Generation
from engine.backends.coreml.alignment import align_weights
from engine.backends.coreml.contract import DECODER, ENCODER, KV_SLOTS, Dims, package_path
from engine.backends.coreml.predictor import CoreMLPredictor, NumpyPredictor, Predictor, compute_units, on_macos
from engine.backends.coreml.reference import padding_mask
from engine.backends.coreml.search import Hypotheses, TokenRules, apply_rules, log_softmax, rank, sample
from engine.errors import BackendUnavailable, ModelError
from engine.models import ModelSpec
from engine.options import DecodeOptions
from engine.tokenizer import LANGUAGES, Tokenizer


@dataclass
class StagePredictors:
    """The encoder and decoder of one model behind the predictor interface, with their sizes."""

    encoder: Predictor
    decoder: Predictor
    dims: Dims
    float_dtype: type = np.float16
    runtime: str = "numpy"


def numpy_predictors(folder: str | Path, io_dtype=np.float16, kv_slots: int | None = None) -> StagePredictors:
    """The numpy reference of a CTranslate2 Whisper folder."""
    from engine.backends.coreml.reference import ReferenceModels

    models = ReferenceModels.from_folder(folder, io_dtype, kv_slots)
    return StagePredictors(NumpyPredictor(models.stages[ENCODER]), NumpyPredictor(models.stages[DECODER]),
                           models.dims, io_dtype, "numpy")


def coreml_predictors(folder: str | Path, units: dict[str, str]) -> StagePredictors:
    """WhisperKit packages in `folder`, loaded by Apple's runtime on the given compute units."""
    folder = Path(folder)
    paths = {stage: package_path(folder, stage) for stage in (ENCODER, DECODER)}
    missing = [stage for stage, path in paths.items() if path is None]
    if missing:
        raise ModelError(str(folder), f"no {' or '.join(missing)} .mlmodelc/.mlpackage")
    config = _read_json(folder / "config.json")
    d_model = int(config.get("d_model", 0))
    dims = Dims(int(config.get("num_mel_bins", 80)), d_model, int(config.get("encoder_layers", 0)),
                int(config.get("decoder_layers", 0)), int(config.get("decoder_attention_heads", 0)),
                int(config.get("vocab_size", 0)), int(config.get("kv_cache_slots", KV_SLOTS)))
    if not dims.kv_channels:
        raise ModelError(str(folder), "config.json lacks d_model and decoder_layers")
    return StagePredictors(CoreMLPredictor(paths[ENCODER], units[ENCODER]),
                           CoreMLPredictor(paths[DECODER], units[DECODER]), dims, np.float16, "coreml")


def default_predictors(model: ModelSpec, compute: str, overrides: dict[str, str] | None = None) -> StagePredictors:
    """Apple's runtime for Core ML packages on macOS; the numpy reference for CPU elsewhere."""
    units = compute_units(compute, overrides)
    if model.format == "coreml":
        if not on_macos():
            raise BackendUnavailable(compute, f"the Core ML model {model.name} runs only on macOS "
                                              "(on Linux use a CTranslate2 model with --compute cpu or gpu)")
        return coreml_predictors(model.path, units)
    if compute in ("ane", "gpu", "all"):
        where = "convert it first: scriptorium models convert" if on_macos() else "this machine is not a Mac"
        raise BackendUnavailable(compute, f"the Neural Engine and Apple GPU need macOS with Core ML and a Core ML "
                                          f"model ({where}); use --compute cpu")
    return numpy_predictors(model.path)


class _Rows:
    """Decoder state per row: key/value caches, filled length, window, tokens so far."""

    def __init__(self, keys, values, length, window, tokens, embeds):
        self.keys, self.values, self.length, self.window = keys, values, length, window
        self.tokens, self.embeds = tokens, embeds

    @classmethod
    def start(cls, embeds: np.ndarray, dims: Dims, dtype) -> "_Rows":
        n = embeds.shape[0]
        shape = (n, dims.kv_channels, 1, dims.kv_slots)
        return cls(np.zeros(shape, dtype), np.zeros(shape, dtype), np.zeros(n, np.int64), np.arange(n),
                   [[] for _ in range(n)], embeds)

    def take(self, index) -> "_Rows":
        index = np.asarray(index, dtype=np.int64)
        window = self.window[index]
        embeds = self.embeds if np.array_equal(window, self.window) else self.embeds[index]
        return _Rows(self.keys[index], self.values[index], self.length[index], window,
                     [list(self.tokens[i]) for i in index], embeds)


class CoreMLBackend:
    """Whisper on WhisperKit's Core ML models (or their numpy reference); see the module docstring."""

    name = "coreml"
    cuts_short = False  # DecodeOptions.max_new_tokens is not honoured: sampled attempts run to full length

    def __init__(self, model: ModelSpec, compute: str = "auto", threads: int = 0, compute_type: str | None = None,
                 predictors: StagePredictors | None = None, compute_units: dict[str, str] | None = None,
                 seed: int = 0):
        self.predictors = predictors or default_predictors(model, compute, compute_units)
        self.compute = ("all" if self.predictors.runtime == "coreml" else "cpu") if compute == "auto" else compute
        self.runtime = self.predictors.runtime
        self.dims, self.dtype = self.predictors.dims, self.predictors.float_dtype
        if not (model.path / "tokenizer.json").is_file():
            raise ModelError(model.name, "tokenizer.json is missing from the model folder")
        self.tokenizer = Tokenizer.from_model_dir(model.path, model.multilingual)
        self.rules = _token_rules(model.path, self.tokenizer)
        self.rng = np.random.default_rng(seed)

    # -- the protocol ----------------------------------------------------------------------------

    def encode(self, features: np.ndarray) -> np.ndarray:
        """[B, n_mels, 3000] -> [B, 1500, D] float32, through the AudioEncoder contract."""
        mel = np.asarray(features)[:, :, None, :].astype(self.dtype)
        out = self.predictors.encoder.predict({"melspectrogram_features": mel})["encoder_output_embeds"]
        return np.ascontiguousarray(out[:, :, 0, :].transpose(0, 2, 1), dtype=np.float32)

    def generate(self, encoded: np.ndarray, prompts: list[list[int]], options: DecodeOptions) -> list[Generation]:
        prompts = [self._fit(p) for p in prompts]
        rows, logits, no_speech = self._run_prompts(self._embeds(encoded), prompts)
        timestamps = not options.without_timestamps
        if options.temperature > 0:
            found = self._sample(rows, logits, prompts, options, timestamps)
        else:
            found = self._beam_search(rows, logits, prompts, options, timestamps)
        return [Generation(tokens, total, float(p)) for (tokens, total), p in zip(found, no_speech)]

    def detect_language(self, encoded: np.ndarray) -> list[list[tuple[str, float]]]:
        ids = {lang: self.tokenizer.hf.token_to_id(f"<|{lang}|>") for lang in LANGUAGES}
        ids = {lang: i for lang, i in ids.items() if i is not None}
        rows = _Rows.start(self._embeds(encoded), self.dims, self.dtype)
        logits, _ = self._step(rows, np.full(len(encoded), self.tokenizer.sot))
        codes, columns = list(ids), list(ids.values())
        probs = np.exp(log_softmax(logits[:, columns]))
        return [sorted(zip(codes, map(float, p)), key=lambda x: -x[1]) for p in probs]

    def align(self, encoded: np.ndarray, start_sequence: list[int], text_tokens: list[list[int]],
              num_frames: list[int]) -> list[Alignment]:
        """Teacher-force start, <|notimestamps|>, text, end of text; DTW over the alignment weights."""
        tok = self.tokenizer
        seqs = [[*start_sequence, tok.no_timestamps, *text, tok.eot] for text in text_tokens]
        if any(len(s) > self.dims.kv_slots for s in seqs):
            return [Alignment(np.zeros(0, np.int64), np.zeros(0, np.int64), ()) for _ in seqs]
        rows = _Rows.start(self._embeds(encoded), self.dims, self.dtype)
        weights = [np.zeros((len(s), encoded.shape[1]), np.float32) for s in seqs]
        probs: list[list[float]] = [[] for _ in seqs]
        first = len(start_sequence)
        for i in range(max(map(len, seqs))):
            active = np.array([r for r, s in enumerate(seqs) if i < len(s)])
            logits, align = self._step(rows, np.array([seqs[r][i] for r in active]), active)
            for j, r in enumerate(active):
                weights[r][i] = align[j]
                if first <= i < len(seqs[r]) - 2:
                    text_logprobs = log_softmax(logits[j, :tok.eot][None])[0]
                    probs[r].append(float(np.exp(text_logprobs[seqs[r][i + 1]])))
        out = []
        for r, s in enumerate(seqs):
            text_idx, time_idx = align_weights(weights[r], num_frames[r], slice(first, len(s) - 1))
            out.append(Alignment(text_idx, time_idx, tuple(probs[r])))
        return out

    # -- the decoder loop ------------------------------------------------------------------------

    def _embeds(self, encoded: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(encoded).transpose(0, 2, 1)[:, :, None, :], dtype=self.dtype)

    def _fit(self, prompt: list[int]) -> list[int]:
        """Keep the prompt within half the cache (WhisperKit's rule): trim the oldest previous text."""
        limit = self.dims.kv_slots // 2
        if len(prompt) <= limit or prompt[0] != self.tokenizer.sot_prev:
            return list(prompt)
        tail = prompt[prompt.index(self.tokenizer.sot):]
        keep = max(limit - 1 - len(tail), 0)
        return [prompt[0], *prompt[len(prompt) - len(tail) - keep:len(prompt) - len(tail)], *tail]

    def _step(self, rows: _Rows, tokens: np.ndarray, active: np.ndarray | None = None):
        """Feed one token to each active row; returns (logits [n, V] float32, alignment weights [n, 1500])."""
        every = active is None
        idx = np.arange(len(rows.length)) if every else np.asarray(active, dtype=np.int64)
        pos = rows.length[idx]
        slots = self.dims.kv_slots
        update = np.zeros((len(idx), slots), np.int32)
        update[np.arange(len(idx)), pos] = 1
        out = self.predictors.decoder.predict({
            "input_ids": np.asarray(tokens, np.int32), "cache_length": pos.astype(np.int32),
            "key_cache": rows.keys if every else rows.keys[idx],
            "value_cache": rows.values if every else rows.values[idx],
            "kv_cache_update_mask": update,
            "encoder_output_embeds": rows.embeds if every else rows.embeds[idx],
            "decoder_key_padding_mask": padding_mask(pos, slots).astype(self.dtype)})
        rows.keys[idx, :, 0, pos] = out["key_cache_updates"][:, :, 0, 0]
        rows.values[idx, :, 0, pos] = out["value_cache_updates"][:, :, 0, 0]
        rows.length[idx] += 1
        for i, token in zip(idx, np.asarray(tokens).tolist()):
            rows.tokens[i].append(token)
        return (out["logits"].reshape(len(idx), -1).astype(np.float32),
                out["alignment_heads_weights"].reshape(len(idx), -1).astype(np.float32))

    def _run_prompts(self, embeds: np.ndarray, prompts: list[list[int]]):
        """Feed every prompt; returns (rows, logits after each prompt, no-speech probability of each)."""
        rows = _Rows.start(embeds, self.dims, self.dtype)
        last = np.zeros((len(prompts), self.dims.vocab), np.float32)
        no_speech = np.zeros(len(prompts))
        # no-speech is read after <|startoftranscript|> (after the prompt when it has none)
        speech_at = [p.index(self.tokenizer.sot) if self.tokenizer.sot in p else len(p) - 1 for p in prompts]
        while True:
            active = np.array([r for r, p in enumerate(prompts) if rows.length[r] < len(p)], dtype=np.int64)
            if not len(active):
                break
            at = rows.length[active].copy()
            logits, _ = self._step(rows, np.array([prompts[r][i] for r, i in zip(active, at)]), active)
            for j, (r, i) in enumerate(zip(active, at)):
                if i == len(prompts[r]) - 1:
                    last[r] = logits[j]
                if i == speech_at[r]:
                    no_speech[r] = self._no_speech(logits[j])
        return rows, last, no_speech

    def _no_speech(self, logits: np.ndarray) -> float:
        token = self.tokenizer.no_speech
        return float(np.exp(log_softmax(logits[None])[0, token])) if token is not None else 0.0

    def _limit_reached(self, rows: _Rows, row: int, prompt_length: int, options: DecodeOptions) -> bool:
        return rows.length[row] >= self.dims.kv_slots or rows.length[row] + 1 - prompt_length >= options.max_length

    def _beam_search(self, rows: _Rows, logits: np.ndarray, prompts, options: DecodeOptions, timestamps: bool):
        beam, eot = options.beam_size, self.tokenizer.eot
        hyps = [Hypotheses(beam, max(1, round(beam * options.patience))) for _ in prompts]
        rows = rows.take(np.repeat(np.arange(len(prompts)), beam))
        logits, scores = np.repeat(logits, beam, axis=0), np.zeros(len(prompts) * beam)
        while len(rows.length):
            generated = [rows.tokens[r][len(prompts[w]):] for r, w in enumerate(rows.window)]
            logprobs = log_softmax(apply_rules(logits, generated, options, self.rules, timestamps))
            parents, tokens, new_scores = [], [], []
            for w in np.unique(rows.window):
                members = np.flatnonzero(rows.window == w)
                seqs = [tuple(rows.tokens[r]) for r in members]
                live = hyps[w].step(seqs, scores[members], logprobs[members], eot)
                if hyps[w].done or not live:
                    continue
                if any(self._limit_reached(rows, members[p], len(prompts[w]), options) for p, _, _ in live):
                    hyps[w].finalize([seqs[p] + (t,) for p, t, _ in live], np.array([s for _, _, s in live]), eot)
                    continue
                parents += [members[p] for p, _, _ in live]
                tokens += [t for _, t, _ in live]
                new_scores += [s for _, _, s in live]
            if not parents:
                break
            rows, scores = rows.take(parents), np.array(new_scores)
            logits, _ = self._step(rows, np.array(tokens))
        return [rank(h.finished, len(p), eot, options.length_penalty) if h.finished else ((), 0.0)
                for h, p in zip(hyps, prompts)]

    def _sample(self, rows: _Rows, logits: np.ndarray, prompts, options: DecodeOptions, timestamps: bool):
        n, eot = options.best_of, self.tokenizer.eot
        rng = self.rng if options.seed is None else np.random.default_rng(options.seed)  # seeded: this call alone
        rows = rows.take(np.repeat(np.arange(len(prompts)), n))
        logits, scores = np.repeat(logits, n, axis=0), np.zeros(len(prompts) * n)
        done: list[dict[tuple[int, ...], float]] = [{} for _ in prompts]
        while len(rows.length):
            generated = [rows.tokens[r][len(prompts[w]):] for r, w in enumerate(rows.window)]
            filtered = apply_rules(logits, generated, options, self.rules, timestamps)
            logprobs = log_softmax(filtered)
            picked = sample(filtered, options.temperature, rng)
            scores = scores + logprobs[np.arange(len(picked)), picked]
            keep = []
            for r, (w, token) in enumerate(zip(rows.window, picked.tolist())):
                seq = (*rows.tokens[r], token)
                if token == eot or self._limit_reached(rows, r, len(prompts[w]), options):
                    done[w][seq if token == eot else seq + (eot,)] = float(scores[r])
                else:
                    keep.append(r)
            if not keep:
                break
            tokens = picked[keep]
            rows, scores = rows.take(keep), scores[keep]
            logits, _ = self._step(rows, tokens)
        return [rank(d, len(p), eot, options.length_penalty) if d else ((), 0.0) for d, p in zip(done, prompts)]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _token_rules(folder: Path, tok: Tokenizer) -> TokenRules:
    """Suppression lists from config.json (CTranslate2) or generation_config.json (WhisperKit, HF)."""
    config, generation = _read_json(folder / "config.json"), _read_json(folder / "generation_config.json")
    suppress = config.get("suppress_ids") or generation.get("suppress_tokens") or config.get("suppress_tokens") \
        or list(tok.non_speech_tokens)
    begin = config.get("suppress_ids_begin") or generation.get("begin_suppress_tokens") \
        or [tok.encode(" ")[0], tok.eot]
    specials = [t for t in (tok.sot, tok.sot_prev, tok.sot_lm, tok.transcribe, tok.translate, tok.no_speech)
                if t is not None]
    return TokenRules(tok.eot, tok.timestamp_begin, tok.no_timestamps, tuple(specials),
                      tuple(int(t) for t in suppress), tuple(int(t) for t in begin))
