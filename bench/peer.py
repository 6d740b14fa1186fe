"""faster-whisper (the peer) in its own spawned process, as users run it, for `bench`, `eval` and the benchmarks.

In our process it would inherit what Scriptorium does to the process (engine.heap's glibc
tuning, our threads); a fresh interpreter loads only faster-whisper. Runners are timed here.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from bench.items import BenchError, Item
from bench.harness import PEER, PEER_BATCHED, FileResult, Runner, _text, peer_available


class PeerFailed(Exception):
    """A file the peer's process could not transcribe; the message is its "Type: message"."""


class PeerProcess:
    """faster_whisper.WhisperModel loaded once in a spawned child; runners() send it files.

    A context manager (close() ends the child; so does interpreter exit). child_init,
    "module:function", is called in the child before the model loads (to patch faster-whisper there).
    """

    def __init__(self, model_path: str | Path, device: str = "cpu", compute_type: str = "int8", threads: int = 0,
                 child_init: str | None = None):
        if not peer_available():
            raise BenchError("faster-whisper is not installed (pip install faster-whisper)")
        ctx = multiprocessing.get_context("spawn")  # fresh interpreter: nothing of ours is inherited
        self._conn, child_end = ctx.Pipe()
        self._process = ctx.Process(target=_serve, name=f"{PEER} peer", daemon=True,
                                    args=(child_end, str(model_path), device, compute_type, threads, child_init))
        self._closed = False
        self._process.start()
        child_end.close()  # ours only: when the child dies, recv() sees EOF instead of waiting forever
        atexit.register(self.close)
        kind, value = self._receive("loading the model")
        if kind == "error":
            self.close()
            raise BenchError(f"{PEER} cannot load {model_path}: {value}")
        self.pid: int = value

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def runners(self, beam_size: int = 5, batched_size: int | None = None,
                word_timestamps: bool = True) -> dict[str, Runner]:
        """{PEER: sequential WhisperModel.transcribe (condition on previous text, no VAD: its defaults)} and,
        with batched_size, {PEER_BATCHED: BatchedInferencePipeline with that batch size}.

        Callers time a runner here, in the parent: the request (names and paths) and the results
        (texts) cross the pipe in well under a millisecond, against seconds of transcription.
        """
        def runner(batch_size: int | None) -> Runner:
            return lambda items: self.transcribe(items, beam_size, word_timestamps, batch_size)

        runners = {PEER: runner(None)}
        if batched_size:
            runners[PEER_BATCHED] = runner(batched_size)
        return runners

    def transcribe(self, items: list[Item], beam_size: int = 5, word_timestamps: bool = True,
                   batch_size: int | None = None) -> dict[str, FileResult]:
        """Every item through the child, one after another; BenchError if the child is gone."""
        files = [(item.name, str(item.path)) for item in items]
        self._send(("run", files, beam_size, word_timestamps, batch_size), "transcribing")
        _, rows = self._receive("transcribing")
        return {name: FileResult(text, duration, None if error is None else PeerFailed(error), seconds)
                for name, text, duration, seconds, error in rows}

    def info(self) -> dict:
        """The child's pid and the engine modules it has imported (text helpers only: never heap or backends)."""
        self._send(("info",), "answering")
        return self._receive("answering")[1]

    def close(self) -> None:
        """End the child: ask, then terminate it if it does not leave within 10 s."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._conn.send(("close",))
        except OSError:
            pass
        self._conn.close()
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    def _send(self, message: tuple, doing: str) -> None:
        if self._closed:
            raise BenchError(f"{PEER}'s process is closed")
        try:
            self._conn.send(message)
        except OSError as exc:
            raise self._gone(doing) from exc

    def _receive(self, doing: str) -> tuple:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._gone(doing) from exc

    def _gone(self, doing: str) -> BenchError:
        self._process.join(5)
        code = self._process.exitcode
        self.close()
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return BenchError(f"{PEER}'s process ended while {doing} ({how})")


# --------------------------------------------------------------------------- the child

def _serve(conn, model_path: str, device: str, compute_type: str, threads: int, child_init: str | None) -> None:
    """The child: load the model once, then answer requests until ("close",) or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    try:
        if child_init:
            module, _, function = child_init.partition(":")
            getattr(importlib.import_module(module), function)()
        from faster_whisper import WhisperModel

        model = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=threads)
    except Exception as exc:  # noqa: BLE001 - its own errors: a tokenizer download, missing CUDA libraries
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    pipelines: dict = {}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request[0] == "run":
            conn.send(("results", _transcribe(model, pipelines, *request[1:])))
        elif request[0] == "info":
            conn.send(("info", {"pid": os.getpid(),
                                "modules": sorted(m for m in sys.modules if m.split(".")[0] == "engine")}))
        else:
            return


def _transcribe(model, pipelines: dict, files: list[tuple[str, str]], beam_size: int, word_timestamps: bool,
                batch_size: int | None) -> list[tuple]:
    """(name, text, duration, seconds, error) per file, with the same arguments bench always gave faster-whisper."""
    common = dict(beam_size=beam_size, word_timestamps=word_timestamps)
    if batch_size:
        if "batched" not in pipelines:
            from faster_whisper import BatchedInferencePipeline

            pipelines["batched"] = BatchedInferencePipeline(model=model)
        transcribe = lambda p: pipelines["batched"].transcribe(p, batch_size=batch_size, **common)  # noqa: E731
    else:
        transcribe = lambda p: model.transcribe(p, condition_on_previous_text=True, vad_filter=False,  # noqa: E731
                                                **common)
    rows = []
    for name, path in files:
        start = time.perf_counter()
        try:
            segments, info = transcribe(path)
            text = _text(segments)  # consuming the generator is what decodes
            rows.append((name, text, info.duration, time.perf_counter() - start, None))
        except Exception as exc:  # noqa: BLE001 - a failure is a result here
            rows.append((name, "", None, None, f"{type(exc).__name__}: {exc}"))
    return rows
