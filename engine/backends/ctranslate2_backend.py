"""CTranslate2 runtime: CPU (int8, float32) and CUDA (float16, int8_float16)."""

from __future__ import annotations

import os
import threading

import numpy as np

from engine.backends.base import Alignment, Generation
from engine.constants import TIME_PRECISION
from engine.errors import BackendUnavailable, ModelError
from engine.models import ModelSpec
from engine.options import DecodeOptions

_DEFAULT_TYPES = {"cpu": "int8", "cuda": "float16"}


def reuses_host_buffers(compute: str) -> bool:
    """Whether this compute kind re-allocates its activations in host memory on every call (CPU), so
    that its process gains from engine.heap.keep_heap; a kind this machine lacks does not."""
    try:
        return resolve_device(compute) == "cpu"
    except BackendUnavailable:
        return False


def cuda_available() -> bool:
    """True when CTranslate2 sees an NVIDIA GPU."""
    import ctranslate2

    try:
        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - a broken driver means no GPU for us
        return False


def resolve_device(compute: str) -> str:
    """CTranslate2 device for a worker kind; BackendUnavailable when this machine lacks it."""
    if compute in ("gpu", "cuda"):
        if not cuda_available():
            raise BackendUnavailable("gpu", "no CUDA GPU is visible to CTranslate2 on this machine")
        return "cuda"
    if compute == "auto":
        return "cuda" if cuda_available() else "cpu"
    if compute == "cpu":
        return "cpu"
    if compute in ("ane", "all"):
        raise BackendUnavailable(
            compute, "the Neural Engine needs macOS with Core ML (use --compute cpu or gpu on Linux)")
    raise BackendUnavailable(compute, "unknown compute kind (cpu, gpu, ane, all, auto)")


# CTranslate2's seed is process-wide and reaches a worker thread only at that thread's first draw (4.8:
# set_random_seed does not restart a thread that has drawn): seeded calls take turns, each on a fresh copy.
_SEEDED = threading.Lock()

# Windows per encoder call on CPU: each row costs ~80 MB of activations, and rows past two gain little
# (4 windows: 1.88 s in one call, 2.04 s in two, 2.13 s in four, one thread): a batch-8 worker's
# peak on a 3-hour file fell from 1.54 GB.
CPU_ENCODE_ROWS = 2


def default_replicas(compute: str, threads: int, batch: int) -> int:
    """Model replicas for a batching worker: 2 on CPU with 2+ threads (1.08-1.15x on 2 cores), 4 on
    a GPU (H200, the engine bench at batch 8: 7.8-8.8 s with 4 against 14.3-15.6 s with 1, since
    CTranslate2's timestamp rules make batch rows cost nearly as much as calls), else 1.
    RuntimeOptions.replicas (a worker's --replicas) overrides it."""
    try:
        device = resolve_device(compute)
    except BackendUnavailable:
        return 1
    if batch <= 1:
        return 1
    if device == "cuda":
        return min(4, batch)
    return 2 if (threads or os.cpu_count() or 1) >= 2 else 1


class CTranslate2Backend:
    """Whisper on CTranslate2; `compute` is cpu, gpu or auto."""

    name = "ctranslate2"
    cuts_short = True

    def __init__(self, model: ModelSpec, compute: str = "auto", compute_type: str | None = None,
                 threads: int = 0, device_index: int = 0, replicas: int = 1):
        import ctranslate2

        if model.format != "ctranslate2":
            raise ModelError(model.name, f"is a {model.format} model; the ctranslate2 backend needs model.bin")
        device = resolve_device(compute)
        self.compute = "gpu" if device == "cuda" else "cpu"
        self.compute_type = compute_type or _DEFAULT_TYPES[device]
        self._ct2 = ctranslate2
        self._where = {"device": device, "device_index": device_index, "compute_type": self.compute_type}
        self._path = str(model.path)
        # `replicas` calls can run at once (engine.window_server runs one server per replica); on CPU the
        # threads are shared out: 2 x 1 thread beat 1 x 2 threads by 1.14x on 2 cores at batch 8.
        self.replicas = max(1, int(replicas))
        wide = 0  # threads of the copy that encodes lone windows (encode_wide); 0: no copy
        if self.replicas > 1 and device == "cpu":
            wide = threads or os.cpu_count() or 1  # at 0 each replica would take every core
            threads = max(1, wide // self.replicas)
            wide = wide if wide > 1 else 0
        try:
            self.model = ctranslate2.models.Whisper(
                str(model.path), device=device, device_index=device_index,
                compute_type=self.compute_type, intra_threads=threads, inter_threads=self.replicas)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(model.name, f"cannot load with CTranslate2 ({exc})") from exc
        # With replicas on CPU, a copy on all the threads encodes a window that no other call runs beside
        # (a lone file, a run's last windows); loaded in the background, used once ready.
        self._wide = None
        self._wide_loader = threading.Thread(target=self._load_wide, args=(model, wide), daemon=True) \
            if wide else None
        if self._wide_loader is not None:
            self._wide_loader.start()

    def _load_wide(self, model: ModelSpec, threads: int) -> None:
        try:
            self._wide = self._ct2.models.Whisper(str(model.path), device="cpu", compute_type=self.compute_type,
                                                  intra_threads=threads, inter_threads=1)
        except (RuntimeError, ValueError):  # the replicas loaded: this copy is only an optimisation
            self._wide = None

    def _view(self, array: np.ndarray):
        return self._ct2.StorageView.from_array(np.ascontiguousarray(array))

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Run the encoder on [B, n_mels, 3000] features; returns [B, 1500, d] on the host."""
        return self._encode(self.model, features)

    def _encode(self, model, features: np.ndarray) -> np.ndarray:
        features = features.astype(np.float32, copy=False)
        rows = CPU_ENCODE_ROWS if self.compute == "cpu" else len(features)
        parts = [np.asarray(model.encode(self._view(features[i:i + rows]), to_cpu=True))
                 for i in range(0, len(features), rows)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def encode_wide(self, features: np.ndarray) -> np.ndarray:
        """`encode` on every thread, for windows encoded while no other call runs. 2 AVX-512 cores: 0.21 s
        per window against 0.38 s on one thread, bitwise the same output (beam-5 generate of one
        window gains nothing from a second thread, so only the encoder goes wide)."""
        return self._encode(self._wide if self._wide is not None else self.model, features)

    def generate(self, encoded: np.ndarray, prompts: list[list[int]],
                 options: DecodeOptions) -> list[Generation]:
        """Beam search at temperature 0, best-of-N sampling above."""
        sampling = options.temperature > 0
        limit = options.max_new_tokens
        # CTranslate2 stops after min(max_length - prompt + 1, max_length // 2) tokens (prompts in a call
        # have one length): this max_length makes that exactly `limit`
        max_length = options.max_length if limit is None else max(2 * limit, len(prompts[0]) + limit - 1)
        kwargs = dict(
            beam_size=1 if sampling else options.beam_size,
            num_hypotheses=options.best_of if sampling else 1,
            sampling_topk=0 if sampling else 1,
            sampling_temperature=options.temperature if sampling else 1.0,
            patience=options.patience, length_penalty=options.length_penalty,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
            max_length=max_length, return_scores=True, return_no_speech_prob=True,
            suppress_blank=options.suppress_blank, suppress_tokens=list(options.suppress_tokens),
            max_initial_timestamp_index=int(round(options.max_initial_timestamp / TIME_PRECISION)))
        if sampling and options.seed is not None:
            results = self._generate_seeded(encoded, prompts, options.seed, kwargs)
        else:
            results = self.model.generate(self._view(encoded), prompts, **kwargs)
        return [self._generation(r, options.length_penalty, limit) for r in results]

    def _generate_seeded(self, encoded: np.ndarray, prompts: list[list[int]], seed: int, kwargs: dict) -> list:
        """A sampled call that draws from `seed` alone: on a fresh copy of the model with one thread (its
        first draw takes the seed), so neither the replicas nor their threads change what is sampled.
        The copy costs a load per sampled call: tiny.en int8 on CPU 0.18 s; apollo11.mp3's looping window
        (the VAD settings of tests/test_fallback_trial.py) makes 5 sampled calls, 0.9 s of loads in a file
        that took 23-32 s on a busy 2-core machine. Fallback is rare, so this is not worth a spare copy."""
        with _SEEDED:
            self._ct2.set_random_seed(seed)
            fresh = self._ct2.models.Whisper(self._path, intra_threads=1, inter_threads=1, **self._where)
            return fresh.generate(self._view(encoded), prompts, **kwargs)

    @staticmethod
    def _generation(result, length_penalty: float, limit: int | None = None) -> Generation:
        tokens = tuple(result.sequences_ids[0])
        # CTranslate2 returns the score normalized by length**penalty: undo that for the sum.
        sum_logprob = result.scores[0] * (max(len(tokens), 1) ** length_penalty)
        # without <|endoftext|> in the ids, a hypothesis that ended on the limit's last token counts as cut
        cut = limit is not None and any(len(seq) >= limit - 1 for seq in result.sequences_ids)
        return Generation(tokens, float(sum_logprob), float(result.no_speech_prob), cut)

    def detect_language(self, encoded: np.ndarray) -> list[list[tuple[str, float]]]:
        results = self.model.detect_language(self._view(encoded))
        return [[(token[2:-2], prob) for token, prob in r] for r in results]

    def align(self, encoded: np.ndarray, start_sequence: list[int], text_tokens: list[list[int]],
              num_frames: list[int]) -> list[Alignment]:
        """Cross-attention alignment over the model's alignment heads (DTW inside CTranslate2)."""
        results = self.model.align(self._view(encoded), start_sequence, text_tokens, num_frames,
                                   median_filter_width=7)
        out = []
        for r in results:
            pairs = np.asarray(r.alignments, dtype=np.int64).reshape(-1, 2)
            out.append(Alignment(pairs[:, 0], pairs[:, 1], tuple(r.text_token_probs)))
        return out
