"""engine.heap: CPU model calls reuse freed memory instead of page-faulting it in again (real model, real glibc)."""

import os
import subprocess
import sys

import pytest

from engine.heap import keep_heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

_PROBE = """
import resource, sys, numpy as np
from engine.api import Transcriber
t = Transcriber(compute="cpu", compute_type="int8", threads=2)
features = np.random.default_rng(0).normal(0, 0.1, (2, t.model.n_mels, 3000)).astype(np.float32)
t.backend.encode(features)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t.backend.encode(features)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: str) -> int:
    """Minor page faults of a second 2-window encoder call of the packaged model, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "SCRIPTORIUM_KEEP_HEAP": keep}, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


def test_second_encoder_call_does_not_fault_pages_in():
    kept = _faults("1")
    default = _faults("0")
    # Measured: ~100k faults (400 MB of fresh pages) per 2-window call with glibc's defaults, ~0 kept.
    assert default > 20_000
    assert kept < default / 20


def test_keep_heap_is_idempotent_and_can_be_declined(monkeypatch):
    assert keep_heap() is True
    assert keep_heap() is True
    monkeypatch.setattr("engine.heap._done", False)
    monkeypatch.setenv("SCRIPTORIUM_KEEP_HEAP", "0")
    assert keep_heap() is False
