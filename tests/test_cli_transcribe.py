"""`scriptorium transcribe` as a user runs it: a subprocess, real media, real outputs.

One good file among bad ones: exit code 1, one stderr line per bad file naming it, and the
good file's four outputs, named after its stem, parseable by independent SRT/WebVTT readers.
Also: every command (and subcommand) answers --help.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import srt
import webvtt
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
GOOD_NAME = "kennedy inaugural.v2.flac"  # spaces and dots: the stem is everything before ".flac"
GOOD_STEM = "kennedy inaugural.v2"


def scriptorium(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI module with this interpreter (the venv's), from the repository root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SCRIPTORIUM_MODEL", None)
    return subprocess.run([sys.executable, "-m", "runner.commands.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def vtt_seconds(stamp: str) -> float:
    """'HH:MM:SS.mmm' (or 'MM:SS.mmm') as webvtt-py gives it, in seconds to the millisecond."""
    parts = [float(p) for p in stamp.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


@pytest.fixture(scope="module")
def mixed_run(shared_audio_dir, media_factory, tmp_path_factory):
    """One run over a good file and five bad ones; returns (result, good path, bad paths, out dir)."""
    folder = tmp_path_factory.mktemp("cli")
    good = folder / GOOD_NAME
    good.symlink_to(shared_audio_dir / "jfk.flac")  # a link, not a copy of the audio
    (folder / "a folder.mp3").mkdir()
    bad = [media_factory.get("empty"), media_factory.get("random_mp3"), media_factory.get("video_no_audio"),
           folder / "a folder.mp3", folder / "missing.wav"]
    out = folder / "out"
    res = scriptorium("transcribe", str(bad[0]), str(good), *map(str, bad[1:]), "-o", str(out),
                      "--compute", "cpu", "--threads", "2")
    return res, good, bad, out


def test_exit_code_is_1_when_any_file_failed(mixed_run):
    res = mixed_run[0]
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_one_error_line_per_bad_file_naming_it(mixed_run):
    res, good, bad, _ = mixed_run
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad), res.stderr
    for path in bad:
        assert sum(str(path) in line for line in errors) == 1, (path, errors)
    assert not any(str(good) in line for line in errors)


def test_outputs_of_the_good_file_are_named_after_its_stem(mixed_run):
    out = mixed_run[3]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{GOOD_STEM}.{f}" for f in ("json", "srt", "txt", "vtt"))


def test_srt_parses(mixed_run):
    cues = list(srt.parse((mixed_run[3] / f"{GOOD_STEM}.srt").read_text(encoding="utf-8")))
    assert cues and [c.index for c in cues] == list(range(1, len(cues) + 1))
    for a, b in zip(cues, cues[1:]):
        assert a.end <= b.start
    assert all(c.start < c.end and c.end.total_seconds() <= 11.01 for c in cues)
    text = " ".join(c.content.replace("\n", " ") for c in cues)
    assert "ask not what your country can do for you" in text


def test_vtt_parses_and_matches_srt(mixed_run):
    out = mixed_run[3]
    captions = webvtt.read(str(out / f"{GOOD_STEM}.vtt")).captions
    cues = list(srt.parse((out / f"{GOOD_STEM}.srt").read_text(encoding="utf-8")))
    assert len(captions) == len(cues)
    for cap, cue in zip(captions, cues):
        assert vtt_seconds(cap.start) == pytest.approx(cue.start.total_seconds(), abs=0.0005)
        assert vtt_seconds(cap.end) == pytest.approx(cue.end.total_seconds(), abs=0.0005)
        assert cap.text.replace("\n", " ") == cue.content.replace("\n", " ")


def test_txt_and_json(mixed_run):
    out = mixed_run[3]
    txt = (out / f"{GOOD_STEM}.txt").read_text(encoding="utf-8")
    data = json.loads((out / f"{GOOD_STEM}.json").read_text(encoding="utf-8"))
    assert "ask not what your country can do for you" in " ".join(txt.split())
    assert "ask not what your country can do for you" in data["text"]
    assert data["duration"] == pytest.approx(11.0, abs=0.01)
    assert data["model"] == "tiny.en"


def test_all_good_exits_0_and_writes_only_the_asked_format(shared_audio_dir, tmp_path):
    out = tmp_path / "subs"
    res = scriptorium("transcribe", str(shared_audio_dir / "LDC93S1.wav"), "--format", "srt", "-o", str(out),
                      "--compute", "cpu", "--threads", "2")
    assert res.returncode == 0, res.stderr
    assert not any(line.startswith("error:") for line in res.stderr.splitlines())
    assert [p.name for p in out.iterdir()] == ["LDC93S1.srt"]
    assert "greasy wash" in (out / "LDC93S1.srt").read_text(encoding="utf-8")


def test_inputs_with_the_same_stem_do_not_overwrite_each_other(shared_audio_dir, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "talk.wav", tmp_path / "b" / "talk.wav"
    first.symlink_to(shared_audio_dir / "LDC93S1.wav")
    second.symlink_to(shared_audio_dir / "speechbrain_spk1_snt1.wav")
    out = tmp_path / "out"
    res = scriptorium("transcribe", str(first), str(second), "--format", "txt", "-o", str(out),
                      "--compute", "cpu", "--threads", "2")
    texts = " ".join(p.read_text(encoding="utf-8") for p in out.glob("*.txt"))
    both_kept = "greasy wash" in texts and "small dog" in texts
    refused = res.returncode == 1 and any(line.startswith("error:") and str(second) in line
                                          for line in res.stderr.splitlines())
    assert both_kept or refused, (res.returncode, res.stderr, texts)


# --------------------------------------------------------------------------- --help everywhere

def _command_paths() -> list[tuple[str, ...]]:
    from runner.commands.cli import main

    paths: list[tuple[str, ...]] = [()]

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, cmd in sorted(group.commands.items()):
            paths.append(prefix + (name,))
            if isinstance(cmd, click.Group):
                walk(cmd, prefix + (name,))

    walk(main, ())
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "scriptorium")
def test_help_works_for_every_command(path):
    from runner.commands.cli import main

    res = CliRunner().invoke(main, [*path, "--help"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output
    assert len(res.output.strip().splitlines()) >= 3


def test_help_through_the_module_entry_point():
    res = scriptorium("transcribe", "--help", timeout=60)
    assert res.returncode == 0 and "Usage:" in res.stdout and "--output-dir" in res.stdout
