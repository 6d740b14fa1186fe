"""Continuous batching, scheduled: each file runs its long-form loop in a thread of its own
(decoding audio, voice activity and features there, so that this work overlaps the model's),
and one server thread per model replica takes the windows waiting, up to batch_size / replicas
per call. A replica never waits for another: while one decodes a slow window (a temperature
fallback, a long prompt), the other goes on with the other files.

Callers run about LOOKAHEAD x batch_size files at once, so that each call can be filled with
windows of one prompt length; `run_tasks` does that for an iterable of tasks.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from contextlib import closing
from dataclasses import replace
from typing import Any, Callable, Iterable, Iterator

from engine.batching import (BatchTranscriber, Event, FileDone, FileFailed, FilePlanned, FileTask, PartDone,
                             WindowDone)
from engine.constants import SAMPLE_RATE
from engine.errors import HelperError, MediaError
from engine.options import TranscribeOptions
from engine.scheduling import LOOKAHEAD, choose

log = logging.getLogger(__name__)
_SLICE_S = 0.25  # longest single wait of a file's thread: rq's timeout (raised in that thread) gets through


class ServerClosed(Exception):
    """The server stopped before this window was decoded."""


class WindowServer:
    """Shares one model among threads; a finished file frees its place in the batch at once.

    Each file may come with options of its own (a job's language, beam size...): windows share a
    call when their options agree on what the call does (TranscribeOptions.call_key), so files
    with any options still batch, with the files that have the same."""

    def __init__(self, core: BatchTranscriber, max_wait: float = 0.2, name: str = "window-server"):
        self.core = core  # the default options' core; core_for() makes one per other option set
        self._cores: dict[TranscribeOptions, BatchTranscriber] = {core.options: core}
        self.max_wait = max_wait
        self.servers = max(1, int(getattr(core.backend, "replicas", 1)))
        self.call_size = max(1, -(-core.batch_size // self.servers))  # windows per model call
        self._cond = threading.Condition()
        self._waiting: list[tuple] = []  # (slot, window, box, core), oldest first
        self._ages: dict[int, int] = {}  # id(box) -> calls it was passed over by
        self._active = 0  # files streaming
        self._running = 0  # windows inside a model call
        self._busy = 0  # servers inside a model call
        self._closed = False
        self.broken: BaseException | None = None  # what ended a server thread: every window fails from then on
        # Parts of long files beyond each file's first, running at once: a backlog of long files would
        # otherwise open 8 decoders (ffmpeg, buffers, VAD) for each file in flight.
        self.extra_parts = threading.Semaphore(LOOKAHEAD * core.batch_size)
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
                         for i in range(self.servers)]
        for thread in self._threads:
            thread.start()

    def core_for(self, options: TranscribeOptions | None) -> BatchTranscriber:
        """The per-step work for files with these options (made once per option set)."""
        if options is None:
            return self.core
        with self._cond:
            if options not in self._cores:
                self._cores[options] = self.core.with_options(options)
            return self._cores[options]

    def stream(self, task: FileTask, stop: threading.Event | None = None,
               options: TranscribeOptions | None = None) -> Iterator[Event]:
        """One file's events, decoded with `options` (default: the server's); model calls are batched
        with other threads' files. With `stop` set, the file ends quietly after its current window.
        A long fresh file is cut into parts (FilePlanned comes first), each decoded in a thread of its own.
        A multilingual model without a language detects it first, once for the whole file
        (LanguageDetected, before anything else)."""
        core = self.core_for(options)
        try:
            task, detected = core.with_language(task)
        except MediaError as exc:
            yield FileFailed(task.key, exc)
            return
        if detected is not None:
            yield detected
        planned = core.plan(task)
        if planned.parts is not None and task.parts is None:
            yield FilePlanned(task.key, tuple(p.span for p in planned.parts))
        if planned.parts is None:
            yield from self._stream_one(core, planned, stop)
        else:
            yield from _merged_parts(self, core, planned, stop)

    def _stream_one(self, core: BatchTranscriber, task: FileTask, stop) -> Iterator[Event]:
        try:
            slot = core.open_slot(task)
        except MediaError as exc:
            yield FileFailed(task.key, exc)
            return
        with self._cond:
            self._active += 1
        try:
            while stop is None or not stop.is_set():
                try:
                    window = core.next_window(slot)
                except (MediaError, HelperError) as exc:  # bad media, or the VAD helper failed on it
                    yield FileFailed(task.key, exc)
                    return
                if isinstance(window, FileDone):
                    yield window
                    return
                try:
                    done = self._submit(core, slot, window)
                except HelperError as exc:  # the server failed choosing its call, or stopped
                    yield FileFailed(task.key, exc)
                    return
                yield done
        finally:
            slot.decoder.audio.close()  # done, failed or abandoned: the reader and ffmpeg end here
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the server threads once their calls are done; windows still waiting fail."""
        with self._cond:
            self._closed = True
            for _, _, box, _ in self._waiting:
                box["error"] = ServerClosed("the window server was closed")
            self._waiting = []
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                _join(thread)

    def _submit(self, core: BatchTranscriber, slot, window) -> WindowDone:
        """Wait, in slices, for the window's call; HelperError at once if a server thread is gone."""
        box: dict = {}
        with self._cond:
            if self._closed:
                raise ServerClosed("the window server was closed")
            self._check_alive(slot)
            self._waiting.append((slot, window, box, core))
            self._cond.notify_all()
            try:
                while not box:
                    self._cond.wait(_SLICE_S)
                    if not box:
                        self._check_alive(slot)
            except BaseException:  # the caller gave up (rq's timeout, a dead server): no call decodes it now
                self._waiting = [item for item in self._waiting if item[2] is not box]
                raise
        if "error" in box:
            raise box["error"]
        return box["done"]

    def _check_alive(self, slot) -> None:
        if self.broken is not None:
            raise HelperError(slot.task.path, f"the window server stopped ({_describe(self.broken)})")

    def _take_batch(self) -> list[tuple] | None:
        """Wait for windows, giving the files not in a call a moment to join; then pick one call's
        worth (engine.scheduling: the largest group of equal prompt length and call options, the
        long-passed-over first). None once closed."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self.max_wait
            while len(self._waiting) < self._active - self._running and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._waiting:  # another server took them, or closed meanwhile
                return [] if not self._closed else None
            picked = set(choose([(len(w.prompt), c.call_key) for _, w, _, c in self._waiting],
                                [self._ages.get(id(box), 0) for _, _, box, _ in self._waiting], self._share(),
                                remaining=[s.decoder.audio.duration - w.offset for s, w, _, _ in self._waiting]))
            batch = [item for i, item in enumerate(self._waiting) if i in picked]
            self._waiting = [item for i, item in enumerate(self._waiting) if i not in picked]
            for _, _, box, _ in batch:
                self._ages.pop(id(box), None)
            for _, _, box, _ in self._waiting:
                self._ages[id(box)] = self._ages.get(id(box), 0) + 1
            self._running += len(batch)
            self._busy += 1
            return batch

    def _share(self) -> int:
        """Windows this call may take: a full call, unless fewer files than that are left for each
        idle server; then they are spread out, so that the last files of a run decode on every
        replica at once rather than together on one (two files: 1.8x faster on 2 cores)."""
        idle = max(1, self.servers - self._busy)
        return max(1, min(self.call_size, -(-(self._active - self._running) // idle)))

    def _serve(self) -> None:
        try:
            self._serve_calls()
        except BaseException as exc:  # noqa: BLE001 - the thread ends here (logged): no window may wait for it
            self._fail_all(exc)

    def _serve_calls(self) -> None:
        while True:
            try:
                batch = self._take_batch()
            except Exception as exc:  # noqa: BLE001 - the windows chosen among fail, the others go on
                self._fail_choice(exc)
                continue
            if batch is None:
                return
            if not batch:
                continue
            left = set(range(len(batch)))
            with self._cond:  # nothing else waiting and no other call: a lone file, a run's last window
                alone = self._busy == 1 and not self._waiting
            core = batch[0][3]  # the call's windows agree on its options (one group of `choose`)
            try:  # each window is handed back as soon as it is settled, not when the whole call is
                for i, done in core.step([(s, w) for s, w, _, _ in batch], alone):
                    self._hand_back([batch[i][2]], "done", done)
                    left.discard(i)
            except Exception as exc:  # noqa: BLE001 - handed to every caller still waiting on this call
                self._hand_back([batch[i][2] for i in sorted(left)], "error", exc)
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def _fail_choice(self, exc: Exception) -> None:
        """Choosing a call failed (anything but the model call itself): the windows it chose among get
        the error, so their files fail instead of waiting for ever; this thread goes on serving."""
        with self._cond:
            failed, self._waiting = self._waiting, []  # _take_batch changes nothing before its choice
            log.error("%s: choosing a call failed; %d waiting windows fail", threading.current_thread().name,
                      len(failed), exc_info=exc)
            for slot, _, box, _ in failed:
                self._ages.pop(id(box), None)
                box["error"] = _helper_error(slot, f"the window server failed choosing a call ({_describe(exc)})", exc)
            self._cond.notify_all()

    def _fail_all(self, exc: BaseException) -> None:
        """A server thread ended unexpectedly: every window waiting, and every later one, fails."""
        with self._cond:
            self.broken = exc
            failed, self._waiting = self._waiting, []
            log.error("%s ended; %d waiting windows fail, and every later one", threading.current_thread().name,
                      len(failed), exc_info=exc)
            for slot, _, box, _ in failed:
                box["error"] = _helper_error(slot, f"the window server stopped ({_describe(exc)})", exc)
            self._cond.notify_all()

    def _hand_back(self, boxes: list[dict], kind: str, value) -> None:
        with self._cond:
            self._running -= len(boxes)
            for box in boxes:
                box[kind] = value
            self._cond.notify_all()


def _helper_error(slot, reason: str, cause: BaseException) -> HelperError:
    error = HelperError(slot.task.path, reason)
    error.__cause__ = cause
    return error


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _get(events: queue.Queue):
    """The next item, waited for in slices: a timeout raised in this thread (rq's) is not held up."""
    while True:
        try:
            return events.get(timeout=_SLICE_S)
        except queue.Empty:
            continue


def _join(thread: threading.Thread) -> None:
    """Join in slices, for the same reason."""
    while thread.is_alive():
        thread.join(_SLICE_S)


_END = object()
_runs = itertools.count()


class _Either:
    """Set when either of two events is (the caller's stop, or the end of a file's other parts)."""

    def __init__(self, first: threading.Event | None, second: threading.Event):
        self.first, self.second = first, second

    def is_set(self) -> bool:
        return self.second.is_set() or (self.first is not None and self.first.is_set())


def _merged_parts(server: WindowServer, core: BatchTranscriber, task: FileTask,
                  stop: threading.Event | None) -> Iterator[Event]:
    """The events of a file's parts, each part streamed in a thread of its own, as one file's:
    WindowDone with its part and the progress of the whole file, PartDone as each part ends, and
    one FileDone once all have (none if stopped). A part that fails fails the file and stops the rest.
    The first part runs at once, the others as the server's `extra_parts` allow."""
    parts = task.parts or ()
    halt = threading.Event()
    until = _Either(stop, halt)
    covered = {p.part: p.start_seek - p.span[0] for p in parts}  # samples done in each part
    sources = [(p, f"part{p.part} {str(task.path)[-30:]}", _part_events(server, core, p, until, extra=i > 0))
               for i, p in enumerate(parts)]
    finished: dict[int, FileDone] = {}
    with closing(_fan_in(sources, len(sources), halt.set)) as events:
        for part, item in events:
            if isinstance(item, FileFailed):
                yield item
                return
            if isinstance(item, FileDone):
                finished[part.part] = item
                yield PartDone(task.key, part.part)
            else:
                covered[part.part] = item.next_seek - part.span[0]
                yield replace(item, done_seconds=sum(covered.values()) / SAMPLE_RATE,
                              duration=max(item.duration, task.duration or 0.0))
    if len(finished) == len(parts):
        language = core.options.language or task.language
        yield _file_done(task, [finished[k] for k in sorted(finished)], language)


def _part_events(server: WindowServer, core: BatchTranscriber, part: FileTask, until: _Either,
                 extra: bool) -> Iterator[Event]:
    """One part's events; a part after the first waits for its turn among the server's `extra_parts`
    (none if the file stops first)."""
    held = False
    try:
        while extra and not held and not until.is_set():
            held = server.extra_parts.acquire(timeout=0.1)
        if extra and not held:
            return
        yield from server._stream_one(core, part, until)
    finally:
        if held:
            server.extra_parts.release()


def _file_done(task: FileTask, parts: list[FileDone], language: str | None) -> FileDone:
    """One FileDone for the parts' FileDones (in part order); the duration is the last part's end
    when it ran in this stream, else what the task says (a resume of a file whose parts all ended)."""
    timings: dict = {}
    for done in parts:
        for stage, seconds in done.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    duration = max([d.duration for d in parts] + [task.duration or 0.0])
    if not parts:
        return FileDone(task.key, duration, language or "en", task.language_probability, timings)
    return FileDone(task.key, duration, parts[0].language, parts[0].language_probability, timings)


class _Crash:
    def __init__(self, error: BaseException):
        self.error = error


def _fan_in(sources: Iterable[tuple[Any, str, Iterable]], width: int,
            halt: Callable[[], None]) -> Iterator[tuple[Any, Any]]:
    """(tag, item) for the items of each source (tag, thread name, iterable), each source iterated
    in a thread of its own, `width` of them at once, as the items come. Sources are pulled lazily,
    as threads end. A source that raises ServerClosed just ends; any other error in a source is
    raised here. However this ends (finished, raised, closed early), `halt` is called and every
    thread is joined."""
    items: queue.Queue = queue.Queue()
    pending = iter(sources)
    threads: list[threading.Thread] = []

    def drain(tag, source: Iterable) -> None:
        try:
            for item in source:
                items.put((tag, item))
        except ServerClosed:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised again in the consuming thread
            items.put((tag, _Crash(exc)))
        finally:
            items.put((tag, _END))

    try:
        live = 0
        while True:
            while live < width:
                source = next(pending, None)
                if source is None:
                    break
                tag, name, iterable = source
                thread = threading.Thread(target=drain, args=(tag, iterable), name=name, daemon=True)
                thread.start()
                threads.append(thread)
                live += 1
            if live == 0:
                return
            tag, item = _get(items)
            if item is _END:
                live -= 1
                threads = [t for t in threads if t.is_alive()]
            elif isinstance(item, _Crash):
                raise item.error
            else:
                yield tag, item
    finally:  # finished, failed, or the caller stopped early: every source's reader and ffmpeg end
        halt()
        for thread in threads:
            _join(thread)


def run_tasks(core: BatchTranscriber, tasks: Iterable[FileTask], in_flight: int) -> Iterator[Event]:
    """Events of many files, `in_flight` at a time, each in a thread of its own, through one
    server that this run starts and stops. Tasks are pulled lazily; an unexpected error in any
    file (not bad media, which fails that file alone) stops the run and is raised here."""
    run = next(_runs)
    server = WindowServer(core, name=f"run{run}-server")
    stop = threading.Event()

    def halt() -> None:  # the server closes before the threads are joined: waiting windows fail at once
        stop.set()
        server.close()

    sources = ((task.key, f"run{run}-file", server.stream(task, stop)) for task in tasks)
    with closing(_fan_in(sources, in_flight, halt)) as events:
        for _, event in events:
            yield event
