"""Worker processes started by one command: how many of which kind, their command lines, start and stop.

Light on imports on purpose: `run` starts the pool before it imports the catalog code, so the
workers load the model while the run opens the catalog and scans.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys

from engine.options import RuntimeOptions
from runner.config import Settings

DEFAULT_BATCH = 8  # fastest of 1/8/32 on 2 CPU cores (bench_engine.py) and on an H100/H200 (bench_gpu.py)


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """How many worker processes of which kind, threads for each, and how each runs its model."""

    kinds: tuple[str, ...]
    threads: int
    batch: int = DEFAULT_BATCH
    runtime: RuntimeOptions = RuntimeOptions()  # each worker's --replicas and --vad-processes
    keep_heap: bool = True  # each worker tunes its allocator (engine.heap); False: --no-keep-heap


def plan_pool(workers: int | None, threads: int | None, compute: str = "cpu", batch: int | None = None,
              runtime: RuntimeOptions | None = None, keep_heap: bool = True) -> PoolPlan:
    """One process using every core, batching 8 files: CTranslate2 parallelises inside a call."""
    cores = os.cpu_count() or 1
    count = workers or 1
    return PoolPlan((compute,) * count, threads or max(1, cores // count), batch or DEFAULT_BATCH,
                    runtime or RuntimeOptions(), keep_heap)


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Linux: get `sig` when the parent dies, so a killed `run` leaves no stray worker or Redis
    (a child's preexec_fn: the one place that asks for PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_command(settings: Settings, kind: str, plan: PoolPlan, model: str | None, burst: bool = True) -> list[str]:
    """The `scriptorium worker` command line of a `kind` worker of `plan` (the only one: run, watch,
    workers and serve start theirs here). The catalog and Redis URLs are not on it (`ps` shows every
    user the arguments, passwords included): see worker_env."""
    cmd = [sys.executable, "-m", "runner.commands.cli", "worker", "--data", str(settings.data_dir), "--compute", kind,
           "--threads", str(plan.threads), "--outputs", settings.outputs, "--batch", str(plan.batch)]
    cmd += ["--burst"] if burst else []
    cmd += ["--replicas", str(plan.runtime.replicas)] if plan.runtime.replicas is not None else []
    cmd += ["--vad-processes", str(plan.runtime.vad_processes)] if plan.runtime.vad_processes is not None else []
    cmd += [] if plan.keep_heap else ["--no-keep-heap"]
    cmd += ["--model", model] if model else []
    cmd += ["--overwrite"] if settings.overwrite else []
    for src, dst in settings.path_map:
        cmd += ["--path-map", f"{src}={dst}"]
    return cmd


def worker_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the catalog and Redis URLs the workers read (their
    SCRIPTORIUM_DB and SCRIPTORIUM_REDIS): a process's environment is readable by its user only."""
    return {**os.environ, "SCRIPTORIUM_DB": settings.db_url, "SCRIPTORIUM_REDIS": settings.redis_url or ""}


def start_pool(settings: Settings, plan: PoolPlan, model: str | None, burst: bool = True) -> list[subprocess.Popen]:
    env = worker_env(settings)
    return [subprocess.Popen(worker_command(settings, kind, plan, model, burst), env=env,
                             stdin=subprocess.DEVNULL, preexec_fn=set_parent_death_signal) for kind in plan.kinds]


def stop_pool(pool: list[subprocess.Popen]) -> None:
    """SIGTERM every worker (each ends between windows; nothing committed is lost) and reap it."""
    for proc in pool:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in pool:
        proc.wait()
