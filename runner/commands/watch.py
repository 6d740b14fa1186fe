"""`scriptorium watch`: transcribe each file that lands in watched folders, seconds after it settles.

File events (inotify through watchfiles, or polling) and a periodic full rescan feed one path: a
file is taken once it has been quiet for `settle_s` (by its events and its mtime), scanned with its
watched folder as root, and queued. The catalog is the state: a restart scans again, re-queues what
was in flight, and the workers resume each file from its last committed window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from runner.config import Settings
from runner.errors import RunnerError
from runner.queue.pool import PoolPlan, start_pool, stop_pool
from runner.queue.scanner import SETTLE_SECONDS, Scanner, walk

TICK_S = 0.25  # how often the loop looks at events, settled files, workers and the catalog
EARLY_EXIT_S = 30.0  # a worker that exits sooner than this after its start is broken, not unlucky


@dataclass(frozen=True)
class WatchOptions:
    """How `watch` notices files: the full rescan's period, the quiet time that counts as settled, polling."""

    rescan_s: float = 60.0
    settle_s: float = SETTLE_SECONDS
    poll: bool = False  # poll the folders instead of inotify (network mounts whose changes inotify never sees)

    def __post_init__(self):
        if self.rescan_s <= 0:
            raise ValueError(f"rescan must be a positive number of seconds, got {self.rescan_s}")
        if self.settle_s < SETTLE_SECONDS:
            raise ValueError(f"settle must be at least {SETTLE_SECONDS:g} s (the scanner's own check), "
                             f"got {self.settle_s}")


class WatchRefused(RunnerError):
    """`watch` cannot start on these folders: `path` names the folder, `reason` says why."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def file_events(roots: list[Path], stop: threading.Event, poll: bool, out: queue_mod.SimpleQueue) -> None:
    """Put the path of every file added or changed, or folder added, under `roots` on `out` until `stop` is set
    (run it in a thread). If events cannot be had (inotify limits, an odd filesystem), the exception
    is put on `out` instead: the rescans still find every file, only later."""
    import watchfiles

    try:
        for changes in watchfiles.watch(*roots, watch_filter=None, stop_event=stop, force_polling=poll or None,
                                        debounce=400, step=50, rust_timeout=1000, yield_on_timeout=True,
                                        raise_interrupt=False):
            for change, path in changes:
                # a folder added (moved in whole, or made before inotify watched it) is walked; one
                # merely modified (its times) is not: the files in it report themselves
                if change == watchfiles.Change.added or (change == watchfiles.Change.modified
                                                         and not os.path.isdir(path)):
                    out.put(Path(path))
    except Exception as exc:  # noqa: BLE001 - reported by the loop, which goes on with rescans
        out.put(exc)


class Settler:
    """Files seen changing, each handed over once quiet for `settle_s`: no event and no mtime change."""

    def __init__(self, settle_s: float):
        self.settle_s = settle_s
        self.pending: dict[Path, tuple[Path, float]] = {}  # file -> (its watched root, last event, monotonic)

    def note(self, path: Path, root: Path, seen: float = float("-inf")) -> None:
        """A file changed at `seen` (monotonic), or was found by a rescan (-inf: its mtime decides)."""
        if not path.name.startswith("."):  # as the scanner's walk: hidden files (rsync's partials) are not media
            old = self.pending.get(path)
            self.pending[path] = (root, max(seen, old[1]) if old else seen)

    def ready(self, now: float) -> list[tuple[Path, Path]]:
        """(file, root) of every pending file that has settled; files gone meanwhile are dropped."""
        taken = []
        for path, (root, seen) in list(self.pending.items()):
            if now - seen < self.settle_s:
                continue
            try:
                quiet = time.time() - path.stat().st_mtime
            except OSError:
                del self.pending[path]  # renamed or deleted before it settled
                continue
            if quiet >= self.settle_s:
                del self.pending[path]
                taken.append((path, root))
        return taken


def watch(settings: Settings, roots: list[Path], plan: PoolPlan, model: str | None, options,
          wopts: WatchOptions = WatchOptions()) -> int:
    """Scan `roots`, then transcribe every new or changed file as it settles, until SIGTERM or SIGINT
    (then stop the workers between windows and return 0)."""
    from runner.queue.embedded_redis import ensure_redis

    roots = _check_roots(settings, roots)
    stop = threading.Event()
    with _only_watch(settings.data_dir), _stop_on_signals(stop):
        settings, embedded = ensure_redis(settings)
        try:
            return _watch(settings, roots, plan, model, options.to_dict(), wopts, stop)
        finally:
            if embedded is not None:
                embedded.stop()


def _check_roots(settings: Settings, roots: list[Path]) -> list[Path]:
    """The roots resolved; refused if the data folder is inside one (its outputs would be watched too)."""
    roots = [Path(r).expanduser().resolve() for r in roots]
    data = settings.data_dir.resolve()
    for root in roots:
        if data == root or data.is_relative_to(root):
            raise WatchRefused(root, f"the data folder {data} is inside it, so its own outputs would be "
                                     "watched too; pass --data with a folder outside it")
    return roots


@contextlib.contextmanager
def _only_watch(data_dir: Path) -> Iterator[None]:
    """One `watch` per data folder (two would race to queue the same files); a killed one lets go."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "watch.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WatchRefused(data_dir, "another 'scriptorium watch' uses this data folder") from None
        yield


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` (the loop ends, then the workers are stopped between windows)."""
    handler = lambda _sig, _frame: stop.set()  # noqa: E731
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _watch(settings: Settings, roots: list[Path], plan: PoolPlan, model: str | None, options: dict,
           wopts: WatchOptions, stop: threading.Event) -> int:
    from engine.models import resolve_model
    from runner.catalog.db import Catalog
    from runner.queue.jobqueue import claim_queue, connect, job_queue
    from runner.catalog.reconcile import requeue_orphans
    from runner.queue.submit import submit
    from runner.commands.watch_progress import Progress

    model_hash = resolve_model(model, settings.models_dir).sha256
    queue = job_queue(connect(settings.redis_url), settings.queue_name)
    with contextlib.closing(Catalog.open(settings.db_url)) as catalog:
        claim_queue(queue.connection, settings.queue_name, catalog.identity(),
                    catalog.url.render_as_string(hide_password=True))
        progress = Progress(catalog)

        def take(items: list[tuple[int, float | None]]) -> None:
            submit(catalog, queue, items, options, model)
            progress.queued(items)

        watcher = Watcher(roots, wopts, stop, Scanner(catalog, model_hash, requeue_unfinished=False), take,
                          lambda: requeue_orphans(catalog, queue), progress)
        watcher.start_events()  # before the first scan: a file landing during it is noted, not missed
        summary = Scanner(catalog, model_hash).scan(roots, progress=sys.stderr.isatty())
        progress.say(f"scan: {summary.new} new, {summary.changed} changed, {summary.unchanged} unchanged, "
                     f"{summary.busy} still being written")
        for path, root in summary.busy_paths:
            watcher.settler.note(path, root)
        take(summary.to_queue)
        requeue_orphans(catalog, queue)  # before the workers start, so that they find nothing to re-queue
        pool = Pool(settings, plan, model)
        progress.say(f"watching {', '.join(map(str, roots))} ({'polling' if wopts.poll else 'inotify'}, "
                     f"rescan every {wopts.rescan_s:g} s); SIGTERM or Ctrl-C stops")
        try:
            watcher.run(pool)
        finally:
            pool.stop()
        progress.say("stopped: files not finished resume at the next start")
    return 0


class Watcher:
    """The loop: note events, rescan on schedule, scan and queue what settled, report, mind the workers."""

    def __init__(self, roots: list[Path], wopts: WatchOptions, stop: threading.Event, scanner: Scanner,
                 take, reconcile, progress):
        self.roots, self.wopts, self.stop, self.scanner = roots, wopts, stop, scanner
        self.take, self.reconcile, self.progress = take, reconcile, progress  # queue files; re-queue lost jobs
        self.settler = Settler(wopts.settle_s)
        self.events: queue_mod.SimpleQueue = queue_mod.SimpleQueue()

    def start_events(self) -> None:
        threading.Thread(target=file_events, args=(self.roots, self.stop, self.wopts.poll, self.events),
                         name="file-events", daemon=True).start()

    def run(self, pool: "Pool") -> None:
        next_rescan = time.monotonic() + self.wopts.rescan_s
        while not self.stop.wait(TICK_S):
            self._note_events()
            if time.monotonic() >= next_rescan:
                self._rescan()
                next_rescan = time.monotonic() + self.wopts.rescan_s
            ready = self.settler.ready(time.monotonic())
            if ready:
                summary = self.scanner.scan_files(ready)
                for path, root in summary.busy_paths:  # changed again between the settle check and the scan
                    self.settler.note(path, root, time.monotonic())
                self.take(summary.to_queue)
            self.progress.poll(pool.pids())
            pool.mind(self.stop)

    def _rescan(self) -> None:
        """Every file under the roots goes to the settler (unchanged ones cost a stat and a lookup)."""
        for root in self.roots:
            for path in walk(root):
                self.settler.note(path, root)
        self.reconcile()  # jobs lost with a worker that was still ending when this watch started

    def _note_events(self) -> None:
        """Hand each changed path to the settler under its watched root; a new folder's files all."""
        now = time.monotonic()
        while True:
            try:
                item = self.events.get_nowait()
            except queue_mod.Empty:
                return
            if isinstance(item, Exception):
                self.progress.say(f"file events stopped ({type(item).__name__}: {item}); new files are found "
                                  "by the rescans only", err=True)
                continue
            root = next((r for r in self.roots if item.is_relative_to(r)), None)
            if root is not None and item.is_dir():  # moved in whole, or made before inotify watched it
                for path in walk(item):
                    self.settler.note(path, root, now)
            elif root is not None and item.is_file():
                self.settler.note(item, root, now)


class Pool:
    """The watch's workers: waiting for jobs (not burst), restarted if one dies, stopped between windows."""

    def __init__(self, settings: Settings, plan: PoolPlan, model: str | None):
        self.settings, self.plan, self.model = settings, plan, model
        self.procs = start_pool(settings, plan, model, burst=False)  # from the main thread: see set_parent_death_signal
        self.started = [time.monotonic()] * len(self.procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def mind(self, stop: threading.Event) -> None:
        """Start another worker in place of one that exited; one that exits at start is an error."""
        for i, proc in enumerate(self.procs):
            code = proc.poll()
            if code is None or stop.is_set():
                continue
            if time.monotonic() - self.started[i] < EARLY_EXIT_S:
                raise RunnerError(f"a worker exited with code {code} within {EARLY_EXIT_S:.0f} s of its start "
                                  "(its message is above); watch stops")
            print(f"worker {proc.pid} exited with code {code}; starting another", file=sys.stderr, flush=True)
            plan = dataclasses.replace(self.plan, kinds=(self.plan.kinds[i],))  # its runtime flags too
            self.procs[i] = start_pool(self.settings, plan, self.model, burst=False)[0]
            self.started[i] = time.monotonic()

    def stop(self) -> None:
        stop_pool(self.procs)
