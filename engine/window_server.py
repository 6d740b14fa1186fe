"""Continuous batching for callers in many threads: each thread runs one file's long-form loop
(decoding audio, voice activity and features there, so that work overlaps the model's), and
one server thread runs the model on the windows waiting, up to batch_size per step. Callers
should run about LOOKAHEAD x batch_size threads, so that the server can fill its calls.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

from engine.batching import BatchTranscriber, Event, FileDone, FileFailed, FileTask, WindowDone
from engine.errors import MediaError
from engine.scheduling import choose


class WindowServer:
    """Shares one model among threads; a finished file frees its place in the batch at once."""

    def __init__(self, core: BatchTranscriber, max_wait: float = 0.2):
        self.core = core
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._waiting: list[tuple] = []  # (slot, window, box), oldest first
        self._ages: dict[int, int] = {}  # id(box) -> steps passed over
        self._active = 0
        self._thread = threading.Thread(target=self._serve, name="window-server", daemon=True)
        self._thread.start()

    def stream(self, task: FileTask) -> Iterator[Event]:
        """One file's events; model calls are batched with other threads' files."""
        try:
            slot = self.core.open_slot(task)
        except MediaError as exc:
            yield FileFailed(task.key, exc)
            return
        with self._cond:
            self._active += 1
        try:
            while True:
                try:
                    window = self.core.next_window(slot)
                except MediaError as exc:
                    yield FileFailed(task.key, exc)
                    return
                if isinstance(window, FileDone):
                    yield window
                    return
                yield self._submit(slot, window)
        finally:
            slot.decoder.audio.close()  # done, failed or abandoned: the reader and ffmpeg end here
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def _submit(self, slot, window) -> WindowDone:
        box: dict = {}
        with self._cond:
            self._waiting.append((slot, window, box))
            self._cond.notify_all()
            while not box:
                self._cond.wait()
        if "error" in box:
            raise box["error"]
        return box["done"]

    def _take_batch(self) -> list[tuple]:
        """Wait for windows, giving the other active files a moment to join; then pick a batch
        (engine.scheduling: the largest group of equal prompt length, the long-passed-over first)."""
        with self._cond:
            while not self._waiting:
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait
            while len(self._waiting) < self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            picked = set(choose([len(w.prompt) for _, w, _ in self._waiting],
                                [self._ages.get(id(box), 0) for _, _, box in self._waiting], self.core.batch_size))
            batch = [item for i, item in enumerate(self._waiting) if i in picked]
            self._waiting = [item for i, item in enumerate(self._waiting) if i not in picked]
            for _, _, box in batch:
                self._ages.pop(id(box), None)
            for _, _, box in self._waiting:
                self._ages[id(box)] = self._ages.get(id(box), 0) + 1
            return batch

    def _serve(self) -> None:
        while True:
            batch = self._take_batch()
            try:
                outcome = [("done", r) for r in self.core.step([(s, w) for s, w, _ in batch])]
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this step
                outcome = [("error", exc)] * len(batch)
            with self._cond:
                for (_, _, box), (kind, value) in zip(batch, outcome):
                    box[kind] = value
                self._cond.notify_all()
