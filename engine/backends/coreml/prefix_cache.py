"""A precomputed key/value cache for fixed prompt prefixes (WhisperKit's "prefill" table).

The decoder's keys and values for the first tokens of a prompt (<|startoftranscript|>, language,
task; or <|startofprev|> at position 0) depend on the audio only through cross-attention in the
layers above the first. WhisperKit shipped a table of them, computed once, so the decoder loop
could skip those steps. The table here is the mean over calibration windows; the host fills the
cache columns from it and still runs the prompt's last token (its logits pick the first token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FILE_NAME = "prefix_kv_cache.npz"


@dataclass
class PrefixCache:
    """Token prefix -> (keys, values), each [D*L, len(prefix)]."""

    entries: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def match(self, prompt: list[int]) -> tuple[int, np.ndarray, np.ndarray] | None:
        """The longest entry that starts `prompt` and leaves at least its last token to run."""
        best = None
        for prefix, (keys, values) in self.entries.items():
            n = len(prefix)
            if n < len(prompt) and tuple(prompt[:n]) == prefix and (best is None or n > best[0]):
                best = (n, keys, values)
        return best

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        arrays = {}
        for i, (prefix, (keys, values)) in enumerate(self.entries.items()):
            arrays[f"tokens_{i}"] = np.asarray(prefix, dtype=np.int32)
            arrays[f"keys_{i}"], arrays[f"values_{i}"] = keys, values
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PrefixCache":
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        with np.load(path) as data:
            count = len([k for k in data.files if k.startswith("tokens_")])
            return cls({tuple(int(t) for t in data[f"tokens_{i}"]): (data[f"keys_{i}"], data[f"values_{i}"])
                        for i in range(count)})
