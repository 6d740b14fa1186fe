"""Scriptorium engine: media decoding, log-mel features, Whisper long-form decoding.

The engine never imports the runner: it is a library that the runner (and anyone) can use.
"""

__version__ = "0.1.0"

from engine.options import DecodeOptions, TranscribeOptions  # noqa: E402
from engine.results import Segment, TranscriptInfo, Word  # noqa: E402

__all__ = ["DecodeOptions", "TranscribeOptions", "Segment", "TranscriptInfo", "Word", "__version__"]
