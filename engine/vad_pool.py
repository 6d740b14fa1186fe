"""Silero VAD in helper processes, so voice activity never competes with decoding for the GIL.

A reader thread per file runs VAD ahead of the decoder; in-process, Silero's ~0.2 ms frame calls
hold the GIL (or convoy on it), which serialised them with the decoding thread: on a 16-core GPU
machine 7.6 s of a 24 s bench went to waiting on them. Here a small pool of `python -m
engine.vad_pool` processes keeps each file's Silero state; a reader thread sends a chunk down a
pipe and blocks, GIL released, until its frame probabilities come back (VAD_REPLY_S at most: a
wedged helper is killed, and the pool starts another for the next file).

Wire format, little-endian: request = stream id u32, op u8, n u32, then n float32 samples;
reply = n u32, then n float32 probabilities (or n = 0xFFFFFFFF and a UTF-8 error of length u32).
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import os
import selectors
import struct
import subprocess
import sys
import threading
import time

import numpy as np

from engine.silero import LocalFrames, preload

OP_PROCESS, OP_FINISH, OP_DROP = 1, 2, 3
_REQUEST, _COUNT = struct.Struct("<IBI"), struct.Struct("<I")
_ERROR = 0xFFFFFFFF
# A 40 s chunk takes ~0.25 s in a helper, a few s on a loaded machine: one that has not answered in
# 30 s is wedged (stopped, deadlocked). Its first answer also waits for it to import and load Silero
# (~0.5 s; START_S more allows for a machine that is swapping or starting many workers at once).
VAD_REPLY_S = 30.0
START_S = 60.0
_SLICE_S = 0.25  # longest single wait on a helper's pipe


class VadWorkerError(RuntimeError):
    """The VAD helper process failed, went away or stopped answering."""


class _NoReply(Exception):
    """The helper's pipe was not ready before the call's deadline."""


def default_size() -> int:
    """Helper processes when none are asked for: half the cores (1 to 8), so that decoding keeps the rest."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError
    return data


class _TurnLock:
    """A lock handed to the waiter with the lowest rank, the earliest first among equals.

    Ranked by (the chunk's place in its file, the file's place in the opening order): when many
    files open at once, every file's first chunk, which its first window waits for, goes before any
    file's read-ahead, and the files opened first (a batching worker takes the longest first) go first.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._queue: list[tuple[tuple[int, int], int]] = []
        self._held = False
        self._tickets = itertools.count()

    def acquire(self, rank: tuple[int, int]) -> None:
        with self._cond:
            entry = (rank, next(self._tickets))
            heapq.heappush(self._queue, entry)
            while self._held or self._queue[0] != entry:
                self._cond.wait(_SLICE_S)  # the holder's call is bounded (VAD_REPLY_S); so is this wait
            heapq.heappop(self._queue)
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


class _Worker:
    """One helper process and the lock that keeps its request/reply pairs in order."""

    def __init__(self, reply_s: float | None = None):
        self.lock = _TurnLock()
        self.streams = 0
        self.reply_s = reply_s  # None: VAD_REPLY_S as it is at each call
        self.answered = False  # the first reply waits for the helper to start, too
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.vad_pool"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0, env={**os.environ, "OMP_NUM_THREADS": "1"})
        os.set_blocking(self.proc.stdin.fileno(), False)  # every wait is on select, with a deadline
        os.set_blocking(self.proc.stdout.fileno(), False)

    def call(self, stream_id: int, op: int, samples: np.ndarray | None = None, chunk: int = 0) -> np.ndarray:
        data = b"" if samples is None else np.ascontiguousarray(samples, dtype="<f4").tobytes()
        self.lock.acquire((chunk, stream_id))
        reply_s = (VAD_REPLY_S if self.reply_s is None else self.reply_s) + (0.0 if self.answered else START_S)
        deadline = time.monotonic() + reply_s
        try:
            self._send(_REQUEST.pack(stream_id, op, len(data) // 4) + data, deadline)
            (n,) = _COUNT.unpack(self._receive(4, deadline))
            self.answered = True
            if n == _ERROR:
                (length,) = _COUNT.unpack(self._receive(4, deadline))
                message = self._receive(length, deadline).decode("utf-8", "replace")
                raise VadWorkerError(f"voice activity helper: {message}")
            return np.frombuffer(self._receive(4 * n, deadline), dtype="<f4").astype(np.float32)
        except _NoReply:
            pid = self.proc.pid
            self.kill()
            raise VadWorkerError(f"voice activity helper (pid {pid}) did not answer within {reply_s:g} s; "
                                 "killed, the next file gets a new one") from None
        except (BrokenPipeError, EOFError, OSError, ValueError) as exc:
            raise VadWorkerError(f"voice activity helper process exited (code {self.proc.poll()})") from exc
        finally:
            self.lock.release()

    def _send(self, data: bytes, deadline: float) -> None:
        view, fd = memoryview(data), self.proc.stdin.fileno()
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                _wait(fd, selectors.EVENT_WRITE, deadline)

    def _receive(self, n: int, deadline: float) -> bytes:
        parts, fd = [], self.proc.stdout.fileno()
        while n:
            try:
                data = os.read(fd, n)
            except BlockingIOError:
                _wait(fd, selectors.EVENT_READ, deadline)
                continue
            if not data:
                raise EOFError
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def kill(self) -> None:
        """End a wedged helper (SIGKILL ends a stopped one too) and close its pipes: calls waiting for
        their turn fail at once, and the pool starts a new helper for the next stream."""
        self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _wait(fd: int, event: int, deadline: float) -> None:
    """Block until `fd` is ready for `event`, in short slices; _NoReply once past `deadline`."""
    with selectors.DefaultSelector() as ready:
        ready.register(fd, event)
        while not ready.select(_SLICE_S):
            if time.monotonic() >= deadline:
                raise _NoReply


class VadPool:
    """Hands out remote detectors, each pinned to the least busy helper for its whole stream."""

    def __init__(self, size: int, reply_s: float | None = None):
        self.size = size
        self.reply_s = reply_s  # a helper's longest answer before it is killed; None: VAD_REPLY_S
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._next_id = 0

    def stream(self) -> "RemoteFrames":
        with self._lock:
            self._workers = [w for w in self._workers if w.proc.poll() is None]
            if len(self._workers) < self.size:
                self._workers.append(_Worker(self.reply_s))
            worker = min(self._workers, key=lambda w: w.streams)
            worker.streams += 1
            self._next_id = (self._next_id + 1) & 0x7FFFFFFF
            return RemoteFrames(self, worker, self._next_id)

    def start(self) -> None:
        """Start every helper now (each imports and loads Silero, ~0.5 s), e.g. while the model loads,
        rather than when the first file opens."""
        with self._lock:
            self._workers = [w for w in self._workers if w.proc.poll() is None]
            while len(self._workers) < self.size:
                self._workers.append(_Worker(self.reply_s))

    def _done(self, worker: _Worker) -> None:
        with self._lock:
            worker.streams -= 1

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()


class RemoteFrames:
    """The model side of a SpeechDetector (process / finish / release), run in a helper process."""

    def __init__(self, pool: VadPool, worker: _Worker, stream_id: int):
        self._pool, self._worker, self._id = pool, worker, stream_id
        self._open = True
        self._chunks = 0  # chunks processed: a file's first waits for no other file's later ones

    def process(self, audio: np.ndarray) -> np.ndarray:
        self._chunks += 1
        return self._worker.call(self._id, OP_PROCESS, audio, chunk=self._chunks - 1)

    def finish(self) -> np.ndarray:
        tail = self._worker.call(self._id, OP_FINISH)
        self._release(remote=False)
        return tail

    def release(self) -> None:
        self._release(remote=True)

    def _release(self, remote: bool) -> None:
        if not self._open:
            return
        self._open = False
        if remote and self._worker.proc.poll() is None:
            try:
                self._worker.call(self._id, OP_DROP)
            except VadWorkerError:
                pass
        self._pool._done(self._worker)


_pools: dict[int, VadPool] = {}
_pools_lock = threading.Lock()


def shared_pool(size: int | None = None) -> VadPool | None:
    """The process-wide pool of `size` helpers (None: default_size()), shared by every Transcriber that
    asks for that size; None for 0 (voice activity in-process). Helpers start on first use."""
    size = default_size() if size is None else size
    if size <= 0:
        return None
    with _pools_lock:
        if size not in _pools:
            _pools[size] = VadPool(size)
            atexit.register(_pools[size].close)
        return _pools[size]


def serve(stdin=None, stdout=None) -> None:
    """The helper's loop: one stream of Silero frames per stream id, until stdin closes."""
    preload()  # before the first request: a helper started early has its model ready
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    detectors: dict[int, LocalFrames] = {}
    while True:
        try:
            stream_id, op, n = _REQUEST.unpack(_read_exact(stdin, _REQUEST.size))
            samples = np.frombuffer(_read_exact(stdin, 4 * n), dtype="<f4") if n else None
        except EOFError:
            return
        try:
            if op == OP_PROCESS:
                detector = detectors.setdefault(stream_id, LocalFrames())
                out = detector.process(samples if samples is not None else np.empty(0, np.float32))
            elif op == OP_FINISH:
                detector = detectors.pop(stream_id, None)
                out = detector.finish() if detector else np.empty(0, np.float32)
            elif op == OP_DROP:
                detector = detectors.pop(stream_id, None)
                if detector:
                    detector.release()
                out = np.empty(0, np.float32)
            else:
                raise ValueError(f"unknown request {op}")
            stdout.write(_COUNT.pack(len(out)) + np.ascontiguousarray(out, dtype="<f4").tobytes())
        except Exception as exc:  # noqa: BLE001 - sent back to the reader thread, raised there
            message = f"{type(exc).__name__}: {exc}".encode()
            stdout.write(_COUNT.pack(_ERROR) + _COUNT.pack(len(message)) + message)
        stdout.flush()


if __name__ == "__main__":
    serve()
