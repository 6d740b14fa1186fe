"""`scriptorium bench` and `scriptorium eval` (bench/commands.py) on a few short real recordings.

The commands run through a local click group, so these tests do not depend on how runner/commands/cli.py
registers them. Every WER the commands print or write is checked against bench.wer on
the same reference and hypothesis texts.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bench.wer import total_errors, word_errors
from bench.items import BenchError, Item, folder_items, read_manifest
from bench.commands import bench, eval_

REPO = Path(__file__).resolve().parents[1]
SHORT = ["LJ002-0020.wav", "speechbrain_spk2_snt2.wav"]  # 1.5 s and 1.8 s
LIBRI = {"1089/134686": ["1089-134686-0001"], "1089/134691": ["1089-134691-0000", "1089-134691-0001"]}


@pytest.fixture(scope="module")
def cli() -> click.Group:
    @click.group()
    def group():
        """Local group for the tests."""

    group.add_command(bench)
    group.add_command(eval_)
    return group


def invoke(cli, *args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="scriptorium", catch_exceptions=False)
    return result


def link(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(src)
    return dest


def assert_scored(reference: str, hypothesis: str, row: dict) -> None:
    """A per-file (or total) row agrees with bench.wer on the same texts."""
    expected = word_errors(reference, hypothesis)
    assert (row["substitutions"], row["deletions"], row["insertions"], row["reference_words"]) == (
        expected.substitutions, expected.deletions, expected.insertions, expected.reference_words)
    assert row["wer"] == pytest.approx(expected.wer)


# --------------------------------------------------------------------------- manifests, no model

def test_read_manifest_formats(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.flac").write_bytes(b"x")
    entries = [{"file": "a.wav", "reference": "Hello there."}, {"path": "sub/b.flac", "text": "Two words"},
               {"audio": "a.wav", "reference": None}, {"file": "sub/b.flac", "reference": "x",
                                                        "reference_quality": "silver"}]
    (tmp_path / "m.json").write_text(json.dumps(entries))
    items = read_manifest(tmp_path / "m.json")
    assert [(i.name, i.path, i.reference, i.reference_words) for i in items] == [
        ("a.wav", tmp_path / "a.wav", "Hello there.", 2), ("sub/b.flac", tmp_path / "sub" / "b.flac", "Two words", 2)]

    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(e) for e in entries[:2]) + "\n")
    assert [i.name for i in read_manifest(tmp_path / "m.jsonl")] == ["a.wav", "sub/b.flac"]

    (tmp_path / "m.csv").write_text("Path,Reference\na.wav,\"Hello, there.\"\n" f"{tmp_path / 'sub' / 'b.flac'},b\n")
    items = read_manifest(tmp_path / "m.csv")
    assert [(i.path, i.reference) for i in items] == [(tmp_path / "a.wav", "Hello, there."),
                                                      (tmp_path / "sub" / "b.flac", "b")]

    (tmp_path / "m.tsv").write_text("path\tsentence\na.wav\tHi\n")
    assert [i.reference for i in read_manifest(tmp_path / "m.tsv")] == ["Hi"]


def test_read_manifest_errors(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps([{"file": "missing.wav", "reference": "x"}]))
    with pytest.raises(BenchError, match="missing.wav"):
        read_manifest(tmp_path / "m.json")
    (tmp_path / "bad.csv").write_text("name,words\na.wav,x\n")
    with pytest.raises(BenchError, match="header"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "dupe.json").write_text(json.dumps([{"file": "a.wav", "text": "x"}] * 2))
    with pytest.raises(BenchError, match="more than once"):
        read_manifest(tmp_path / "dupe.json")
    (tmp_path / "libri" / "1" / "2").mkdir(parents=True)
    (tmp_path / "libri" / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    with pytest.raises(BenchError, match="1-2-0000"):
        read_manifest(tmp_path / "libri")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no manifest.json"):
        read_manifest(tmp_path / "empty")


def test_folder_items_references(tmp_path):
    for name in ("a.wav", "b.wav", "c.mp3", "notes.md", "sub/d.flac"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "manifest.json").write_text(json.dumps([
        {"file": "a.wav", "duration_s": 1.5, "reference": "from manifest", "reference_quality": "exact"},
        {"file": "b.wav", "reference": None, "reference_quality": "silver"}]))
    (tmp_path / "b.txt").write_text("from sidecar\n")
    (tmp_path / "sub" / "x.trans.txt").write_text("d FROM LIBRISPEECH\n")
    items = {i.name: i for i in folder_items(tmp_path)}
    assert sorted(items) == ["a.wav", "b.wav", "c.mp3", "sub/d.flac"]
    assert (items["a.wav"].reference, items["a.wav"].duration) == ("from manifest", 1.5)
    assert items["b.wav"].reference == "from sidecar"
    assert items["c.mp3"].reference is None
    assert items["sub/d.flac"].reference == "FROM LIBRISPEECH"
    assert sorted(i.name for i in folder_items(tmp_path, scored_only=True)) == ["a.wav", "b.wav", "sub/d.flac"]


def test_item_counts_normalized_reference_words():
    assert Item("x", Path("x"), reference="Mr. Smith paid $5, didn't he?").reference_words == \
        word_errors("Mr. Smith paid $5, didn't he?", "").reference_words


# --------------------------------------------------------------------------- help and examples

@pytest.mark.parametrize("command,name", [(bench, "bench"), (eval_, "eval")])
def test_help_example_and_option_help(cli, command, name):
    assert command.name == name
    doc = command.callback.__doc__.rstrip()
    example = [line.strip() for line in doc.split("Example:", 1)[1].splitlines() if line.strip()]
    assert example and all(line.startswith(f"scriptorium {name} ") for line in example)  # the docstring ends there
    undocumented = [o.opts[0] for o in command.params if isinstance(o, click.Option) and not (o.help or "").strip()]
    assert not undocumented
    result = invoke(cli, name, "--help")
    assert result.exit_code == 0 and f"Usage: scriptorium {name}" in result.output


def test_bench_engine_script_still_runs():
    res = subprocess.run([sys.executable, "benchmarks/bench_engine.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--fw-batched" in res.stdout


def test_eval_rejects_two_comparisons(cli, tmp_path):
    (tmp_path / "m.json").write_text("[]")
    result = invoke(cli, "eval", tmp_path / "m.json", "--compare-model", "x", "--compare-backend", "y")
    assert result.exit_code == 2 and "not both" in result.output


def test_eval_unknown_backend(cli, tmp_path):
    (tmp_path / "m.json").write_text("[]")
    result = invoke(cli, "eval", tmp_path / "m.json", "--compare-backend", "nope")
    assert result.exit_code == 2 and "unknown backend" in result.output


# --------------------------------------------------------------------------- eval on real speech

def test_eval_json_manifest(cli, tmp_path, shared_audio_dir, manifest_by_file):
    for name in SHORT:
        link(shared_audio_dir / name, tmp_path / "audio" / name)
    entries = [{"file": f"audio/{SHORT[0]}", "reference": manifest_by_file[SHORT[0]]["reference"]},
               {"path": f"audio/{SHORT[1]}", "text": manifest_by_file[SHORT[1]]["reference"]},
               {"file": "audio/not-scored.wav", "reference": None}]
    (tmp_path / "refs.json").write_text(json.dumps(entries))
    result = invoke(cli, "eval", tmp_path / "refs.json", "--threads", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [f["file"] for f in data["files"]] == [f"audio/{n}" for n in SHORT]
    hyps = {}
    for f in data["files"]:
        (res,) = f["results"]
        assert res["hypothesis"] and res["error"] is None
        assert_scored(f["reference"], res["hypothesis"], res)
        hyps[f["file"]] = (f["reference"], res["hypothesis"])
    (model,) = data["models"]
    total = total_errors([word_errors(r, h) for r, h in hyps.values()])
    assert_scored(" ".join(r for r, _ in hyps.values()), " ".join(h for _, h in hyps.values()), model)
    assert model["wer"] == pytest.approx(total.wer)
    assert model["rtf"] > 0 and model["x_realtime"] == pytest.approx(1 / model["rtf"])
    assert model["audio_seconds"] == pytest.approx(sum(manifest_by_file[n]["duration_s"] for n in SHORT), abs=0.1)
    assert "qoi" not in data


def test_eval_csv_manifest_compare_same_model(cli, tmp_path, shared_audio_dir, manifest_by_file):
    from engine.models import resolve_model

    with (tmp_path / "refs.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reference"])
        for name in SHORT:
            writer.writerow([str(link(shared_audio_dir / name, tmp_path / "clips" / name).relative_to(tmp_path)),
                             manifest_by_file[name]["reference"]])
    report = tmp_path / "report.md"
    same = resolve_model(None).path
    result = invoke(cli, "eval", tmp_path / "refs.csv", "--threads", "2", "--compare-model", same, "--json",
                    "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["qoi"]["value"] == 1.0 and data["qoi"]["regressed"] == [] and data["qoi"]["files"] == 2
    a, b = data["models"]
    assert a["wer"] == b["wer"] and a["model_path"] == b["model_path"]
    for f in data["files"]:
        ra, rb = f["results"]
        assert ra["hypothesis"] == rb["hypothesis"]
        assert_scored(f["reference"], ra["hypothesis"], ra)
    text = report.read_text()
    assert "Quality of inference (B vs A): 100.0%" in text
    assert "| WER A | S A | D A | I A |" in text and "clips/" + SHORT[0] in text


def test_eval_librispeech_folder_prints_wer_and_sdi(cli, tmp_path, shared_audio_dir, manifest_by_file):
    root = tmp_path / "LibriSpeech" / "test-clean"
    for chapter, ids in LIBRI.items():
        lines = []
        for utt in ids:
            link(shared_audio_dir / f"{utt}.flac", root / chapter / f"{utt}.flac")
            lines.append(f"{utt} {manifest_by_file[utt + '.flac']['reference']}")
        (root / chapter / f"{chapter.replace('/', '-')}.trans.txt").write_text("\n".join(lines) + "\n")
    report = tmp_path / "eval.md"
    result = invoke(cli, "eval", root, "--threads", "2", "--report", report)
    assert result.exit_code == 0, result.output
    # Hypotheses from the report's transcripts section; the printed rows must score them as bench.wer does.
    transcripts = report.read_text().split("## Transcripts", 1)[1]
    hyps = {}
    for block in transcripts.split("### ")[1:]:
        name, body = block.split("\n", 1)
        hyps[name.strip()] = body.split("- hypothesis: ", 1)[1].split("\n", 1)[0]
    names = [f"{chapter}/{utt}.flac" for chapter, ids in LIBRI.items() for utt in ids]
    assert sorted(hyps) == sorted(names)
    refs = {n: manifest_by_file[n.rsplit("/", 1)[1]]["reference"] for n in names}
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.split()
            and (line.split()[0] in names or line.split()[0] == "total")}
    (header,) = [line.split() for line in result.stdout.splitlines() if line.startswith("file ")]
    assert header == ["file", "words", "WER", "S", "D", "I"]
    errors = {n: word_errors(refs[n], hyps[n]) for n in names}
    for name in [*names, "total"]:
        e = errors[name] if name != "total" else total_errors(errors)
        assert rows[name][-4:] == [f"{100 * e.wer:.2f}%", str(e.substitutions), str(e.deletions),
                                   str(e.insertions)], (name, rows[name])
    assert "real-time factor" in result.stdout


# --------------------------------------------------------------------------- bench on real speech

def short_folder(tmp_path: Path, shared: Path, manifest_by_file: dict) -> Path:
    folder = tmp_path / "bench"
    for name in SHORT:
        link(shared / name, folder / name)
    (folder / Path(SHORT[0]).with_suffix(".txt").name).write_text(manifest_by_file[SHORT[0]]["reference"])
    return folder


def test_bench_no_peer(cli, tmp_path, shared_audio_dir, manifest_by_file):
    folder = short_folder(tmp_path, shared_audio_dir, manifest_by_file)
    result = invoke(cli, "bench", folder, "--no-peer", "--threads", "2", "--batch", "2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "2 files (1 with a reference)" in out
    (row,) = [line for line in out.splitlines() if line.startswith("scriptorium (batch 2)")]
    audio_min, wall, xrt = (float(v) for v in row.split()[3:6])
    seconds = sum(manifest_by_file[n]["duration_s"] for n in SHORT)
    assert audio_min == pytest.approx(seconds / 60, abs=0.01)
    assert wall > 0 and xrt == pytest.approx(seconds / wall, rel=0.05)  # printed rounded: 0.01 s, 0.1x
    assert "faster-whisper" not in row and "not run (--no-peer)" in out
    assert not [line for line in out.splitlines() if line.startswith("faster-whisper ")]


def test_bench_with_faster_whisper(cli, tmp_path, shared_audio_dir, manifest_by_file):
    pytest.importorskip("faster_whisper")
    folder = short_folder(tmp_path, shared_audio_dir, manifest_by_file)
    result = invoke(cli, "bench", folder, "--threads", "2", "--compute", "cpu", "--compute-type", "int8", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["engines"]) == ["scriptorium", "faster-whisper"]
    assert data["config"]["peer"] and data["config"]["compute_type"] == "int8" and data["config"]["threads"] == 2
    fw, scr = data["engines"]["faster-whisper"], data["engines"]["scriptorium"]
    assert fw["ratio_vs_peer"] == pytest.approx(1.0)
    assert scr["ratio_vs_peer"] == pytest.approx(fw["wall_seconds"] / scr["wall_seconds"])
    for e in (fw, scr):
        assert e["x_realtime"] > 0 and e["audio_seconds"] == pytest.approx(scr["audio_seconds"])
        assert e["failed"] == {}
    scored = [f for f in data["files"] if f["reference"]]
    assert len(scored) == 1
    for name, e in data["engines"].items():
        f = scored[0]
        assert_scored(f["reference"], f["engines"][name]["text"], f["engines"][name])
        assert_scored(f["reference"], f["engines"][name]["text"], e)  # one scored file: total == that file
