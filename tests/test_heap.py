"""engine.heap: CPU model calls reuse freed memory instead of page-faulting it in again, once the process
asks for it; building a Transcriber never does (real model, real glibc)."""

import subprocess
import sys

import pytest

from engine.heap import keep_heap
from runner.commands.common import tune_heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

_PROBE = """
import resource, sys, numpy as np
import engine.heap
from engine.api import Transcriber
if sys.argv[1] == "worker":
    engine.heap.keep_heap()  # what a worker (or `transcribe`) does before it loads the model
t = Transcriber(compute="cpu", compute_type="int8", threads=2)
features = np.random.default_rng(0).normal(0, 0.1, (2, t.model.n_mels, 3000)).astype(np.float32)
t.backend.encode(features)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t.backend.encode(features)
print(engine.heap._done, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(role: str) -> tuple[bool, int]:
    """(allocator tuned?, minor page faults of a second 2-window encoder call) in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _PROBE, role], capture_output=True, text=True, check=True,
                         timeout=120)
    tuned, faults = out.stdout.strip().splitlines()[-1].split()
    return tuned == "True", int(faults)


@pytest.fixture(scope="module")
def probes():
    return {role: _probe(role) for role in ("library", "worker")}


def test_building_a_transcriber_leaves_the_allocator_alone(probes):
    tuned, faults = probes["library"]
    assert not tuned
    assert faults > 20_000  # glibc's defaults: ~100k faults (400 MB of fresh pages) per 2-window call


def test_second_encoder_call_does_not_fault_pages_in_once_the_process_asks(probes):
    tuned, kept = probes["worker"]
    assert tuned
    assert kept < probes["library"][1] / 20  # measured ~0


def test_keep_heap_is_idempotent():
    assert keep_heap() is True
    assert keep_heap() is True


def test_only_a_process_that_asks_tunes_its_heap(monkeypatch):
    """The commands' --keep-heap/--no-keep-heap: tuned for a CPU model unless declined."""
    calls = []
    monkeypatch.setattr("engine.heap.keep_heap", lambda: calls.append(True) or True)
    tune_heap(False, "cpu")
    assert calls == []
    tune_heap(True, "cpu")
    assert calls == [True]
