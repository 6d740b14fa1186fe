"""The README's commands work: every `scriptorium` invocation names real commands and options, and the
blocks a user can run here (no network, GPU, Mac, second machine or sudo) run as written.

A block is skipped only by a marker right before it: `<!-- readme-test: skip (reason) -->`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from runner.commands.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LANGUAGES = {"sh", "bash", "console", "python"}
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```\s*$", re.M | re.S)
CLIP = "jfk.flac"  # 11 s


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str
    skip: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for m in FENCE.finditer(text):
        if m["lang"] not in LANGUAGES:
            continue
        before = text[:m.start()].rstrip().rsplit("\n", 1)[-1]
        marker = SKIP.fullmatch(before.strip())
        blocks.append(Block(text.count("\n", 0, m.start()) + 1, m["lang"], m["body"],
                            marker["reason"] if marker else None))
    return blocks


BLOCKS = readme_blocks(README.read_text())


def command_lines(block: Block) -> list[str]:
    """A shell block's logical lines (continuations joined), comments and blank lines left out."""
    if block.lang == "python":
        return []
    joined = block.body.replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def invocations(text: str) -> list[tuple[str, list[str]]]:
    """(where, words after `scriptorium`) for every invocation in shell blocks and inline code spans."""
    found = []
    for block in BLOCKS:
        for line in command_lines(block):
            for part in re.split(r"&&|\|\||;|\|", line):
                words = shlex.split(part, comments=True)
                for i, word in enumerate(words):
                    if word == "scriptorium" or word.endswith("/scriptorium"):
                        found.append((f"{block.id}: {part.strip()}", words[i + 1:]))
                        break
    prose = FENCE.sub("", text)
    for span in re.findall(r"`(scriptorium [^`]+)`", prose):
        words = [w.strip("[]") for w in span.split()]
        found.append((f"README.md `{span}`", words[1:]))
    return found


def check_invocation(words: list[str]) -> list[str]:
    """Problems with one invocation: an unknown command or an option the command does not have."""
    command: click.Command = main
    names = ["scriptorium"]
    rest = list(words)
    while rest and isinstance(command, click.Group) and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        if sub is None:
            return [f"`{' '.join(names)}` has no command {rest[0]!r}"]
        command, names = sub, names + [rest.pop(0)]
    known = {"--help", "-h"}
    for param in command.params:
        known.update(param.opts + param.secondary_opts)
    problems = []
    for word in rest:
        if word.startswith("-") and len(word) > 1 and not re.fullmatch(r"-\d.*", word):
            option = word.split("=", 1)[0]
            if option not in known:
                problems.append(f"`{' '.join(names)}` has no option {option}")
    return problems


def test_the_readme_has_blocks_to_run_and_markers_with_reasons():
    runnable = [b for b in BLOCKS if not b.skip]
    assert runnable, "no README block is run: mark only the ones that cannot run here"
    assert all(b.skip.strip() for b in BLOCKS if b.skip is not None), "a skip marker needs a reason"


def test_every_scriptorium_invocation_names_real_commands_and_options():
    found = invocations(README.read_text())
    assert len(found) >= 20, f"only {len(found)} `scriptorium` invocations found: is the parser broken?"
    problems = [f"{where}: {p}" for where, words in found for p in check_invocation(words)]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def user(tmp_path_factory, shared_audio_dir):
    """A user's world: $HOME with ~/podcasts holding one short clip, a work folder with talk.mp3."""
    base = tmp_path_factory.mktemp("readme")
    home, work = base / "home", base / "work"
    (home / "podcasts").mkdir(parents=True)
    work.mkdir()
    shutil.copy(shared_audio_dir / CLIP, home / "podcasts" / CLIP)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(shared_audio_dir / CLIP),
                    str(work / "talk.mp3")], check=True)
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTORIUM_")}
    env.update(HOME=str(home), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
    return work, env


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs(block: Block, user):
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    work, env = user
    if block.lang == "python":
        argv = [sys.executable, "-c", block.body]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", block.body]
    result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{block.id} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    if "scriptorium search" in block.body:  # the catalog really holds the clip `run` transcribed
        assert CLIP in result.stdout, result.stdout
