"""What each tuned default costs or saves: Scriptorium's WER and wall time with the defaults, and with each
one set back to its value before tuning, on a folder (shared-corpus manifest.json) or an eval manifest.

Variants (TranscribeOptions unless said):
  defaults           speech_pad 1.0, min_silence 5, vad_hysteresis 0.15, skipped-speech rules on, parts
  speech_pad 0.4     the pad before the fourth session
  min_silence 3      the silence length before the fifth session
  vad_hysteresis 0   Silero without hysteresis
  rules off          the skipped-speech rules disabled (engine.transcribe's LongFormDecoder._skipped_speech
                     and _unheard_speech patched to find nothing; there is no option for them)
  all four old       all four of the above at once: the engine before the tuning
  no parts           part_seconds None: a long file is one chain of windows
  no VAD             vad False: every window decoded, no silence cut out (faster-whisper's default)

Every variant runs in this process on one loaded model, with the batch and threads `scriptorium bench`
uses (two replicas on 2+ threads), one after the other after one warm-up file; WER is Whisper-normalized
as in `scriptorium bench`. Wall times move with the machine's load: compare WER first. Windows in
temperature fallback sample without a fixed seed, so files that fall back often (noisy synthetic speech)
can change by a few errors from run to run: run `defaults` more than once to see that spread.

    python benchmarks/defaults_table.py /tmp/evalset --threads 2 --batch 8
    python benchmarks/defaults_table.py ../shared/audio --variants defaults "rules off" --json /tmp/d.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.api import Transcriber  # noqa: E402
from bench.wer import total_errors  # noqa: E402
from engine.options import RuntimeOptions, TranscribeOptions  # noqa: E402
from bench.items import folder_items, read_manifest  # noqa: E402
from bench.harness import effective_threads, scriptorium_runner, timed  # noqa: E402
from engine.backends.ctranslate2_backend import default_replicas  # noqa: E402

OLD = {"speech_pad": 0.4, "min_silence": 3.0, "vad_hysteresis": 0.0}
VARIANTS = {  # name -> (option changes, skipped-speech rules on)
    "defaults": ({}, True),
    "speech_pad 0.4": ({"speech_pad": 0.4}, True),
    "min_silence 3": ({"min_silence": 3.0}, True),
    "vad_hysteresis 0": ({"vad_hysteresis": 0.0}, True),
    "rules off": ({}, False),
    "all four old": (OLD, False),
    "no parts": ({"part_seconds": None}, True),
    "no VAD": ({"vad": False}, True),
}


@contextmanager
def skipped_speech_rules(on: bool):
    """The skipped-speech rules as they are (on), or finding nothing (off)."""
    from engine.transcribe import LongFormDecoder

    saved = LongFormDecoder._skipped_speech, LongFormDecoder._unheard_speech
    if not on:
        LongFormDecoder._skipped_speech = lambda self, window, groups: None
        LongFormDecoder._unheard_speech = lambda self, window, end: None
    try:
        yield
    finally:
        LongFormDecoder._skipped_speech, LongFormDecoder._unheard_speech = saved


def items_of(source: Path):
    """Scored items of a folder (its manifest.json, as `scriptorium bench --scored-only` finds them) or
    of a manifest file (as `scriptorium eval` reads it)."""
    return folder_items(source, scored_only=True) if source.is_dir() else read_manifest(source)


def run(source: Path, names: list[str], threads: int, batch: int, beam_size: int) -> dict:
    items = items_of(source)
    threads = effective_threads(threads)
    transcriber = Transcriber(compute="cpu", threads=threads, runtime=RuntimeOptions(replicas=default_replicas("cpu", threads, batch)))
    base = TranscribeOptions(beam_size=beam_size)
    rows, per_file = [], {}
    for k, name in enumerate(names):
        changes, rules = VARIANTS[name]
        with skipped_speech_rules(rules):
            runner = scriptorium_runner(transcriber, replace(base, **changes), batch)
            engine_run = timed({name: runner}, items, warmup=k == 0,
                               log=lambda m: print(m, file=sys.stderr, flush=True))[name]
        errors = engine_run.errors(items)
        total = total_errors(errors)
        per_file[name] = {f: e.errors for f, e in errors.items()}
        rows.append({"variant": name, "changes": {**changes, **({} if rules else {"skipped_speech_rules": False})},
                     "wer": total.wer, "errors": total.errors, "substitutions": total.substitutions,
                     "deletions": total.deletions, "insertions": total.insertions,
                     "reference_words": total.reference_words, "wall_seconds": engine_run.wall,
                     "failed": engine_run.failed(), "file_errors": per_file[name]})
    base_files = per_file.get("defaults")
    for row in rows:
        if base_files is not None and row["variant"] != "defaults":
            row["files_changed"] = {f: [base_files[f], n] for f, n in per_file[row["variant"]].items()
                                    if n != base_files[f]}
    audio = sum(i.duration or 0.0 for i in items)
    return {"source": str(source), "files": len(items), "audio_seconds": audio, "threads": threads,
            "batch": batch, "beam_size": beam_size, "rows": rows}


def markdown(data: dict) -> str:
    rows = data["rows"]
    base = next((r for r in rows if r["variant"] == "defaults"), None)
    out = [f"{data['files']} files, {data['audio_seconds'] / 60:.1f} min, {rows[0]['reference_words']} reference "
           f"words ({data['source']}); threads {data['threads']}, batch {data['batch']}, beam {data['beam_size']}", "",
           "| variant | WER | errors | S/D/I | vs defaults | wall s | files changed (errors defaults -> variant) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        delta = "" if base is None or r is base else f"{r['errors'] - base['errors']:+d} errors"
        changed = ", ".join(f"{f} {a}->{b}" for f, (a, b) in sorted(r.get("files_changed", {}).items()))
        out.append(f"| {r['variant']} | {100 * r['wer']:.2f}% | {r['errors']} | {r['substitutions']}/"
                   f"{r['deletions']}/{r['insertions']} | {delta} | {r['wall_seconds']:.1f} | {changed} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="a folder with manifest.json, or a manifest file")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
                    help=f"which to run, in this order (default all: {', '.join(VARIANTS)})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    start = time.perf_counter()
    data = run(args.source, args.variants, args.threads, args.batch, args.beam_size)
    data["total_seconds"] = time.perf_counter() - start
    if args.json:
        args.json.write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(markdown(data))


if __name__ == "__main__":
    main()
