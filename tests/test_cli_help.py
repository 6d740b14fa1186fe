"""Every `scriptorium` command documents itself with an example, and refuses an impossible compute kind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from runner.commands.cli import main

REPO = Path(__file__).resolve().parents[1]


def walk_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    """(path of names, command) for the group itself and every command and subcommand under it."""
    yield prefix, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from walk_commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


COMMANDS = list(walk_commands(main))
MISSING_EXAMPLE: dict = {}
UNDOCUMENTED_OPTIONS = "runner/commands/cli.py: export --format, search --limit and worker --outputs have no help text"


def _param(path, command):
    marks = [pytest.mark.xfail(strict=True, reason=MISSING_EXAMPLE[path])] if path in MISSING_EXAMPLE else []
    return pytest.param(path, command, id=" ".join(path) or "scriptorium", marks=marks)


def test_the_walk_finds_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"", "transcribe", "run", "scan", "worker", "workers", "status", "search", "export", "retry", "db",
            "db upgrade", "db check"} <= names


@pytest.mark.parametrize("path,command", [_param(p, c) for p, c in COMMANDS])
def test_every_command_has_help_and_an_example(path, command):
    assert (command.help or "").strip(), f"{' '.join(path)}: no help text"
    assert (command.get_short_help_str() or "").strip()
    doc = command.callback.__doc__ or ""
    assert "Example" in doc, f"scriptorium {' '.join(path)}: docstring has no Example"
    example = doc.split("Example", 1)[1]
    usage = f"scriptorium {' '.join(path)}".strip()
    assert usage in example, f"the example does not show `{usage}`"


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "scriptorium")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_zero(path, flag):
    result = CliRunner().invoke(main, [*path, flag], prog_name="scriptorium")
    assert result.exit_code == 0, result.output
    assert "Usage: scriptorium" in result.output
    assert result.output.strip()


def test_options_have_help():
    undocumented = [f"{' '.join(p)} {o.opts[0]}" for p, c in COMMANDS for o in c.params
                    if isinstance(o, click.Option) and not (o.help or "").strip()]
    assert not undocumented, f"options without help: {undocumented}"


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the Neural Engine may exist")
def test_worker_with_neural_engine_on_linux_exits_at_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTORIUM_")}
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "runner.commands.cli", "worker", "--compute", "ane",
                          "--data", str(tmp_path / "data")], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "macos" in res.stderr.lower(), res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert took < 30, f"took {took:.1f} s to refuse"
