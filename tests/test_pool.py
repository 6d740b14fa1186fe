"""runner.queue.pool: the one worker command line carries a command's runtime flags (--replicas,
--vad-processes, --keep-heap) to the workers it starts, and a worker builds its Transcriber with them
(the real CLI, embedded Redis and SQLite, the packaged model)."""

from __future__ import annotations

from click.testing import CliRunner

from engine.api import Transcriber
from engine.options import RuntimeOptions
from runner.commands.cli import main
from runner.queue.pool import plan_pool, worker_command


class _Stop(Exception):
    """Ends a command once the thing under test has been seen."""


def test_run_replicas_and_vad_processes_reach_the_worker_and_its_transcriber(tmp_path, monkeypatch):
    seen: dict = {}

    def start_pool(settings, plan, model, burst=True):  # what `run` would start: its workers' plan
        seen.update(settings=settings, plan=plan, model=model)
        raise _Stop

    monkeypatch.setattr("runner.commands.run.start_pool", start_pool)
    (tmp_path / "media").mkdir()
    res = CliRunner().invoke(main, ["run", str(tmp_path / "media"), "--data", str(tmp_path / "data"), "--compute",
                                    "cpu", "--threads", "2", "--replicas", "1", "--vad-processes", "0"])
    assert isinstance(res.exception, _Stop), res.output
    plan = seen["plan"]
    assert plan.runtime == RuntimeOptions(replicas=1, vad_processes=0) and plan.keep_heap
    cmd = worker_command(seen["settings"], plan.kinds[0], plan, seen["model"])
    assert cmd[cmd.index("--replicas") + 1] == "1" and cmd[cmd.index("--vad-processes") + 1] == "0"
    assert "--no-keep-heap" not in cmd

    built: list[Transcriber] = []

    class Probe(Transcriber):  # the worker's Transcriber, seen once built
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            built.append(self)
            raise _Stop

    tuned: list[bool] = []
    monkeypatch.setattr("runner.queue.worker.Transcriber", Probe)
    monkeypatch.setattr("engine.heap.keep_heap", lambda: tuned.append(True) or True)  # not this test process's
    assert cmd[3] == "worker"
    res = CliRunner().invoke(main, cmd[3:])
    assert isinstance(res.exception, _Stop), res.output
    (transcriber,) = built
    # 2 threads at batch 8 would get 2 replicas by default; --vad-processes 0: voice activity in-process
    assert transcriber.backend.replicas == 1 and transcriber.vad_pool is None
    assert tuned == [True]  # the worker process asked for its allocator to be tuned before loading


def test_workers_get_no_runtime_flags_unless_asked(tmp_path):
    from runner.config import Settings

    settings = Settings.resolve(str(tmp_path), None, None)
    cmd = worker_command(settings, "cpu", plan_pool(1, 2), None)
    assert not {"--replicas", "--vad-processes", "--no-keep-heap"} & set(cmd)
    declined = worker_command(settings, "cpu", plan_pool(1, 2, keep_heap=False), None)
    assert "--no-keep-heap" in declined
