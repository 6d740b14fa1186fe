"""What `scriptorium bench` and `scriptorium eval` do: find files and references, run engines, score, report.

Files and references (bench.items) come from
  - a folder (bench): every media file under it; references from a manifest.json in the shared
    corpus format, LibriSpeech *.trans.txt files, or a sidecar NAME.txt next to NAME.wav;
  - a manifest (eval): JSON (a list of {file|path|audio, reference|text}), JSON lines, CSV or TSV
    with a header (path, reference), or a LibriSpeech-style folder (*.trans.txt with `ID TEXT`
    lines next to ID.flac). Relative paths are resolved against the manifest's folder.

Engines are "runners": a function from a list of Items to {item name: FileResult}. Scriptorium's
runner decodes the files together (Transcriber.transcribe_many with a batch size); the peer runs
faster-whisper on the same CTranslate2 model folder, device, compute type, threads and beam size,
in its own process (bench.peer), so it gets none of our process tuning.
Models are loaded before any timing. WER is Whisper-normalized (bench.wer).
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from bench.items import Item
from bench.wer import WordErrors, qoi, total_errors, word_errors

PEER = "faster-whisper"
PEER_BATCHED = "faster-whisper-batched"


@dataclass
class FileResult:
    """What one engine made of one file: its text and audio duration, or the error."""

    text: str = ""
    duration: float | None = None
    error: Exception | None = None
    seconds: float | None = None  # from the file's first window to its end (overlaps others when batched)


Runner = Callable[[list[Item]], dict[str, FileResult]]


def effective_threads(threads: int) -> int:
    """0 means every core this process may use: resolved here so both engines get the same number."""
    if threads > 0:
        return threads
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _text(segments) -> str:
    return "".join(s.text for s in segments).strip()


def scriptorium_runner(transcriber, options, batch_size: int = 1) -> Runner:
    """Scriptorium: Transcriber.transcribe_many over the items, batch_size files decoded together."""
    from engine.batching import FileFailed, FileTask

    def run(items: list[Item]) -> dict[str, FileResult]:
        by_path = {str(item.path): item.name for item in items}
        out: dict[str, FileResult] = {}
        # Batched, the longest files go first (as `scriptorium run` orders its queue): a long file
        # started last would finish alone, in a batch of one.
        order = sorted(items, key=lambda i: -(i.duration or 0.0)) if batch_size > 1 else items
        tasks = [FileTask(str(i.path), str(i.path), duration=i.duration) for i in order]
        for result in transcriber.transcribe_many(tasks, options, batch_size=batch_size):
            if isinstance(result, FileFailed):
                out[by_path.get(result.key, result.key)] = FileResult(error=result.error)
            else:
                out[by_path.get(result.info.path, result.info.path)] = FileResult(
                    _text(result.segments), result.info.duration, seconds=result.wall_seconds)
        return out

    return run


def peer_device(compute: str) -> str:
    """faster-whisper's device for one of our compute kinds (BackendUnavailable when impossible)."""
    from engine.backends.ctranslate2_backend import resolve_device

    return resolve_device(compute)


def peer_available() -> bool:
    """faster-whisper is installed (found, not imported: it runs in its own process, bench.peer)."""
    import importlib.util

    return importlib.util.find_spec("faster_whisper") is not None


# --------------------------------------------------------------------------- scoring

@dataclass
class EngineRun:
    """One engine over all items: wall times (one per repeat) and per-file results of the first repeat."""

    name: str
    walls: list[float] = field(default_factory=list)
    results: dict[str, FileResult] = field(default_factory=dict)
    unstable: set[str] = field(default_factory=set)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    def record(self, items: list[Item], wall: float, results: dict[str, FileResult]) -> None:
        first = not self.walls
        self.walls.append(wall)
        for item in items:
            res = results.get(item.name) or FileResult(error=RuntimeError("no result"))
            if first:
                self.results[item.name] = res
            elif self.results[item.name].text != res.text:
                self.unstable.add(item.name)

    def errors(self, items: list[Item]) -> dict[str, WordErrors]:
        """Word errors of every item with a reference (a failed file scores as all deletions)."""
        return {i.name: word_errors(i.reference, self.results[i.name].text)
                for i in items if i.reference is not None}

    def failed(self) -> dict[str, str]:
        return {n: f"{type(r.error).__name__}: {r.error}" for n, r in self.results.items() if r.error is not None}


def fill_durations(items: list[Item], runs: Iterable[EngineRun]) -> None:
    """Items without a known duration take the one an engine measured while decoding."""
    runs = list(runs)
    for item in items:
        if item.duration is None:
            item.duration = next((r.results[item.name].duration for r in runs
                                  if item.name in r.results and r.results[item.name].duration), None)


WARMUP_SECONDS = 20.0


def _duration(item: Item) -> float:
    """The item's duration, probed when the folder did not say (0 when it cannot be probed)."""
    if item.duration is not None:
        return item.duration
    from engine.audio import probe
    from engine.errors import MediaError

    try:
        return probe(item.path).duration or 0.0
    except MediaError:
        return 0.0


def _excerpt(path: Path, folder: Path) -> Path:
    """The first WARMUP_SECONDS of a file as a 16 kHz mono wav in `folder`."""
    import wave

    import numpy as np

    from engine.audio import stream_audio
    from engine.constants import SAMPLE_RATE

    audio = next(iter(stream_audio(path, chunk_seconds=WARMUP_SECONDS)))
    out = folder / "warmup.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes())
    return out


def timed(runners: dict[str, Runner], items: list[Item], repeats: int = 1, warmup: bool = True,
          log: Callable[[str], None] = lambda m: None) -> dict[str, EngineRun]:
    """Run every runner over all items `repeats` times, taking turns, after one untimed warm-up file each."""
    runs = {name: EngineRun(name) for name in runners}
    if warmup and items:
        short = min(items, key=lambda i: i.duration if i.duration is not None else i.path.stat().st_size)
        with tempfile.TemporaryDirectory() as tmp:
            if _duration(short) > WARMUP_SECONDS:  # a folder of long files: warm up on a piece of one
                short = Item(f"{short.name} (first {WARMUP_SECONDS:.0f} s)", _excerpt(short.path, Path(tmp)))
            for name, runner in runners.items():
                log(f"warm-up {name} on {short.name}")
                runner([short])
    names = list(runners)
    for repeat in range(repeats):
        # Rotate the starting engine too, so none is always first after a pause.
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            gc.collect()
            start = time.perf_counter()
            results = runners[name](items)
            wall = time.perf_counter() - start
            runs[name].record(items, wall, results)
            log(f"{name}: {wall:.2f} s" + (f" (repeat {repeat + 1}/{repeats})" if repeats > 1 else ""))
    fill_durations(items, runs.values())
    return runs


def _counts(e: WordErrors | None) -> dict:
    if e is None:
        return {"wer": None, "substitutions": None, "deletions": None, "insertions": None, "reference_words": 0}
    return {"wer": e.wer, "substitutions": e.substitutions, "deletions": e.deletions, "insertions": e.insertions,
            "reference_words": e.reference_words}


def _sdi(row: dict) -> str:
    if row.get("wer") is None:
        return "-"
    return f"{row['substitutions']}/{row['deletions']}/{row['insertions']}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


# --------------------------------------------------------------------------- bench report

def bench_data(config: dict, items: list[Item], runs: dict[str, EngineRun], baseline: str | None) -> dict:
    """Machine-readable bench results: config, one row per engine, one row per file."""
    audio = sum(i.duration or 0.0 for i in items)
    scored = [i for i in items if i.reference is not None]
    base_wall = runs[baseline].wall if baseline in runs else None
    engines = {}
    per_file_errors = {}
    for name, run in runs.items():
        errors = run.errors(items)
        per_file_errors[name] = errors
        total = total_errors(errors) if errors else None
        engines[name] = {
            "audio_seconds": audio, "audio_minutes": audio / 60, "wall_seconds": run.wall, "walls": run.walls,
            "x_realtime": audio / run.wall if run.wall > 0 else None,
            "ratio_vs_peer": (base_wall / run.wall) if base_wall and run.wall > 0 else None,
            **_counts(total), "failed": run.failed(), "unstable_files": sorted(run.unstable),
        }
    files = []
    for item in items:
        row = {"file": item.name, "duration": item.duration, "reference": item.reference,
               "reference_words": item.reference_words, "engines": {}}
        for name, run in runs.items():
            res = run.results[item.name]
            row["engines"][name] = {"text": res.text, "error": None if res.error is None else str(res.error),
                                    **_counts(per_file_errors[name].get(item.name))}
        files.append(row)
    return {"config": {**config, "files": len(items), "scored_files": len(scored), "audio_seconds": audio},
            "engines": engines, "files": files}


def format_bench(data: dict, per_file: bool = False) -> str:
    """The human-readable bench table."""
    cfg = data["config"]
    lines = [f"{cfg['files']} files ({cfg['scored_files']} with a reference), {cfg['audio_seconds'] / 60:.2f} "
             f"audio minutes; model {cfg['model']}, {cfg['device']} {cfg['compute_type']}, beam {cfg['beam_size']}, "
             f"threads {cfg['threads']}, batch {cfg['batch_size']}; model load excluded"
             + (f"; median of {cfg['repeats']} runs" if cfg.get("repeats", 1) > 1 else "")]
    if per_file:
        names = list(data["engines"])
        width = min(max([len(f["file"]) for f in data["files"]] + [4]), 48)
        lines += ["", f"{'file':<{width}} {'sec':>6} {'words':>5} " + " ".join(f"{n[:22]:>22}" for n in names)]
        for f in data["files"]:
            cells = " ".join(f"{_pct(f['engines'][n]['wer']):>22}" for n in names)
            lines.append(f"{f['file'][:width]:<{width}} {f['duration'] or 0:6.1f} {f['reference_words']:5d} {cells}")
    header = f"{'engine':<24} {'audio min':>9} {'wall s':>8} {'x real time':>11} {'ratio':>7} {'WER':>8} {'S/D/I':>12}"
    lines += ["", header]
    for name, e in data["engines"].items():
        label = f"scriptorium (batch {cfg['batch_size']})" if name == "scriptorium" else name
        ratio = "-" if e["ratio_vs_peer"] is None else f"{e['ratio_vs_peer']:.2f}x"
        xrt = "-" if e["x_realtime"] is None else f"{e['x_realtime']:.1f}"
        lines.append(f"{label:<24} {e['audio_minutes']:9.2f} {e['wall_seconds']:8.2f} {xrt:>11} {ratio:>7} "
                     f"{_pct(e['wer']):>8} {_sdi(e):>12}")
        if e["failed"]:
            lines.append("  failed: " + "; ".join(f"{k}: {v}" for k, v in e["failed"].items()))
        if e["unstable_files"]:
            lines.append(f"  text changed between repeats: {', '.join(e['unstable_files'])}")
    if any(e["ratio_vs_peer"] is not None for e in data["engines"].values()):
        lines.append(f"ratio: throughput relative to {PEER} (sequential transcribe); higher is faster")
    elif cfg.get("peer_note"):
        lines.append(cfg["peer_note"])
    return "\n".join(lines)


# --------------------------------------------------------------------------- eval report

def eval_side(label: str, description: dict, items: list[Item], run: EngineRun) -> dict:
    """One model/backend's evaluation: per-file errors, totals, real-time factor."""
    errors = run.errors(items)
    total = total_errors(errors)
    audio = sum(i.duration or 0.0 for i in items)
    return {
        "label": label, **description, **_counts(total), "errors": errors,
        "audio_seconds": audio, "wall_seconds": run.wall,
        "rtf": run.wall / audio if audio else None, "x_realtime": audio / run.wall if run.wall > 0 else None,
        "failed": run.failed(),
    }


def eval_data(config: dict, items: list[Item], sides: list[dict], runs: list[EngineRun]) -> dict:
    """Machine-readable evaluation: config, each side's totals, files, and QoI of the second side vs the first."""
    out = {"config": {**config, "files": len(items), "audio_seconds": sum(i.duration or 0.0 for i in items)}}
    out["models"] = [{k: v for k, v in s.items() if k != "errors"} for s in sides]
    files = []
    for item in items:
        row = {"file": item.name, "path": str(item.path), "duration": item.duration, "reference": item.reference,
               "reference_words": item.reference_words, "results": []}
        for side, run in zip(sides, runs):
            res = run.results[item.name]
            row["results"].append({"label": side["label"], "hypothesis": res.text,
                                   "error": None if res.error is None else f"{type(res.error).__name__}: {res.error}",
                                   "seconds": res.seconds, **_counts(side["errors"][item.name])})
        files.append(row)
    out["files"] = files
    if len(sides) == 2:
        q = qoi(sides[0]["errors"], sides[1]["errors"])
        out["qoi"] = {"baseline": sides[0]["label"], "candidate": sides[1]["label"], "value": q.value,
                      "files": q.files, "not_worse": q.files - len(q.regressed),
                      "regressed": [{"file": f, "baseline_wer": b, "candidate_wer": c} for f, b, c in q.regressed]}
    return out


def _side_title(side: dict) -> str:
    return f"{side['label']} ({side['backend']}, {side['device']} {side['compute_type']})"


def format_eval(data: dict) -> str:
    """The human-readable evaluation: per-file WER with S/D/I, totals, real-time factor, QoI."""
    cfg, models = data["config"], data["models"]
    lines = [f"{cfg['files']} files, {cfg['audio_seconds'] / 60:.2f} audio minutes from {cfg['manifest']}; "
             f"beam {cfg['beam_size']}, batch {cfg['batch_size']}, threads {cfg['threads']}"]
    for k, m in enumerate(models):
        lines.append(f"{'AB'[k]}: {_side_title(m)}")
    width = min(max([len(f["file"]) for f in data["files"]] + [5]), 48)
    head = f"{'file':<{width}} {'words':>5}"
    for k in range(len(models)):
        tag = f" {'AB'[k]}" if len(models) > 1 else ""
        head += f" {'WER' + tag:>9} {'S':>4} {'D':>4} {'I':>4}"
    lines += ["", head]

    def cells(rows: list[dict]) -> str:
        return "".join(f" {_pct(r['wer']):>9} {r['substitutions']:>4} {r['deletions']:>4} {r['insertions']:>4}"
                       for r in rows)

    for f in data["files"]:
        mark = "  (failed)" if any(r["error"] for r in f["results"]) else ""
        lines.append(f"{f['file'][:width]:<{width}} {f['reference_words']:>5}{cells(f['results'])}{mark}")
    lines.append(f"{'total':<{width}} {models[0]['reference_words']:>5}{cells(models)}")
    lines.append("")
    for k, m in enumerate(models):
        tag = f"{'AB'[k]} " if len(models) > 1 else ""
        rtf = "-" if m["rtf"] is None else f"{m['rtf']:.3f}"
        xrt = "-" if m["x_realtime"] is None else f"{m['x_realtime']:.1f}x real time"
        lines.append(f"{tag}real-time factor {rtf} ({xrt}): {m['wall_seconds']:.2f} s for "
                     f"{m['audio_seconds']:.1f} s of audio, model load excluded")
        for name, err in m["failed"].items():
            lines.append(f"  {tag}failed: {name}: {err}")
    q = data.get("qoi")
    if q:
        lines.append(f"QoI (B vs A): {100 * q['value']:.1f}% ({q['not_worse']} of {q['files']} files no worse)")
        for r in q["regressed"][:10]:
            lines.append(f"  worse: {r['file']}  {_pct(r['baseline_wer'])} -> {_pct(r['candidate_wer'])}")
        if len(q["regressed"]) > 10:
            lines.append(f"  ... and {len(q['regressed']) - 10} more")
    return "\n".join(lines)


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_report(data: dict) -> str:
    """The evaluation as a markdown document (the --report file)."""
    cfg, models = data["config"], data["models"]
    out = ["# Scriptorium evaluation", "",
           f"Manifest `{cfg['manifest']}`: {cfg['files']} files, {cfg['audio_seconds'] / 60:.2f} audio minutes. "
           f"Beam {cfg['beam_size']}, batch {cfg['batch_size']}, threads {cfg['threads']}. WER is computed on "
           f"Whisper-normalized text; real-time factor is wall time over audio time, model load excluded.", "",
           "| | model | backend | device | WER | S | D | I | reference words | RTF | x real time |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, m in enumerate(models):
        rtf = "-" if m["rtf"] is None else f"{m['rtf']:.3f}"
        xrt = "-" if m["x_realtime"] is None else f"{m['x_realtime']:.1f}"
        out.append(f"| {'AB'[k]} | {_md(m['label'])} | {m['backend']} | {m['device']} {m['compute_type']} | "
                   f"{_pct(m['wer'])} | {m['substitutions']} | {m['deletions']} | {m['insertions']} | "
                   f"{m['reference_words']} | {rtf} | {xrt} |")
    q = data.get("qoi")
    if q:
        out += ["", f"**Quality of inference (B vs A): {100 * q['value']:.1f}%** — {q['not_worse']} of {q['files']} "
                    f"files have a WER no worse than with A."]
        if q["regressed"]:
            out += ["", "| file got worse | WER A | WER B |", "|---|---:|---:|"]
            out += [f"| {_md(r['file'])} | {_pct(r['baseline_wer'])} | {_pct(r['candidate_wer'])} |"
                    for r in q["regressed"]]
    tags = [f" {'AB'[k]}" if len(models) > 1 else "" for k in range(len(models))]
    out += ["", "## Per file", "",
            "| file | seconds | words |" + "".join(f" WER{t} | S{t} | D{t} | I{t} |" for t in tags),
            "|---|---:|---:|" + "---:|---:|---:|---:|" * len(models)]
    for f in data["files"]:
        dur = "-" if f["duration"] is None else f"{f['duration']:.1f}"
        out.append(f"| {_md(f['file'])} | {dur} | {f['reference_words']} |" + "".join(
            f" {_pct(r['wer'])} | {r['substitutions']} | {r['deletions']} | {r['insertions']} |" for r in f["results"]))
    failed = [(f["file"], r["label"], r["error"]) for f in data["files"] for r in f["results"] if r["error"]]
    if failed:
        out += ["", "## Failed files", ""] + [f"- `{_md(n)}` ({_md(lbl)}): {_md(e)}" for n, lbl, e in failed]
    out += ["", "## Transcripts", ""]
    for f in data["files"]:
        out += [f"### {_md(f['file'])}", "", f"- reference: {_md(f['reference'])}"]
        out += [f"- {'AB'[k] if len(models) > 1 else 'hypothesis'}: {_md(r['hypothesis'])}"
                for k, r in enumerate(f["results"])]
        out.append("")
    return "\n".join(out).rstrip() + "\n"

