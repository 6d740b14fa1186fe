"""The backend seam: what the long-form loop needs from a model runtime, at window granularity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from engine.options import DecodeOptions


@dataclass(frozen=True)
class Generation:
    """One window's best hypothesis: tokens without the prompt, with scores."""

    tokens: tuple[int, ...]
    sum_logprob: float
    no_speech_prob: float
    cut: bool = False  # a hypothesis reached options.max_new_tokens without ending (backends that honour it)


@dataclass(frozen=True)
class Alignment:
    """Token-to-time alignment of one window: (text index, time index) pairs and token probabilities."""

    text_indices: np.ndarray
    time_indices: np.ndarray
    token_probs: tuple[float, ...]


@runtime_checkable
class Backend(Protocol):
    """A Whisper runtime. Arrays cross the seam as numpy; `encoded` is [B, frames/2, d_model]."""

    name: str
    compute: str
    # True when generate honours DecodeOptions.max_new_tokens and sets Generation.cut (engine.decoding's
    # trial runs of sampled attempts); a backend without it always decodes to the full length.
    cuts_short: bool

    def encode(self, features: np.ndarray) -> np.ndarray: ...

    def generate(self, encoded: np.ndarray, prompts: list[list[int]],
                 options: DecodeOptions) -> list[Generation]: ...

    def detect_language(self, encoded: np.ndarray) -> list[list[tuple[str, float]]]: ...

    def align(self, encoded: np.ndarray, start_sequence: list[int], text_tokens: list[list[int]],
              num_frames: list[int]) -> list[Alignment]: ...
