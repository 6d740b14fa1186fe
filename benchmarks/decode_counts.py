#!/usr/bin/env python
"""How many windows the long-form loop decodes per 30 s of audio, on every shared clip.

A window that moves the seek only a little is decoded again from just after it; a loop of those
(the unheard-speech rule moving one 32 ms VAD frame per decode) could take hundreds of decodes on
one file. This transcribes each clip in ../shared/audio/manifest.json with the packaged tiny.en
(CPU, int8, defaults: VAD, word times, parts) and prints, per file: its windows, windows per
ceil(duration / 30 s) and the smallest seek advance of any window; then the maximum windows per
30 s, the sampled fallback calls and how often MIN_ADVANCE moved a seek on. One run of everything
takes about 3 minutes on 2 cores.

  python benchmarks/decode_counts.py [--threads 2] [--batch 4] [--files F ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.api import Transcriber  # noqa: E402
from engine.batching import FileDone, FileFailed, FileTask, WindowDone  # noqa: E402
from engine.constants import SAMPLE_RATE  # noqa: E402
from engine.options import TranscribeOptions  # noqa: E402
from engine.transcribe import LongFormDecoder  # noqa: E402

SHARED = REPO.parent / "shared" / "audio"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--files", nargs="*")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    manifest = json.loads((args.shared / "manifest.json").read_text(encoding="utf-8"))
    names = args.files or [e["file"] for e in manifest]
    transcriber = Transcriber(compute="cpu", threads=args.threads)
    sampled: dict[str, int] = defaultdict(int)
    real = transcriber.backend.generate

    def count(encoded, prompts, options):  # sampled attempts run one window per call (engine.decoding)
        if options.temperature > 0 and options.max_new_tokens is None:
            sampled["calls"] += 1
        return real(encoded, prompts, options)

    transcriber.backend.generate = count
    bounded = LongFormDecoder._bounded

    def bound(self, window, next_seek):  # windows whose seek MIN_ADVANCE moved on
        out = bounded(self, window, next_seek)
        sampled["bounded"] += out != next_seek
        return out

    LongFormDecoder._bounded = bound
    windows: dict[str, list[WindowDone]] = defaultdict(list)
    rows = []
    tasks = [FileTask(n, str(args.shared / n)) for n in names]
    for event in transcriber.stream(tasks, TranscribeOptions(), batch_size=args.batch):
        if isinstance(event, WindowDone):
            windows[event.key].append(event)
        elif isinstance(event, FileFailed):
            print(f"{event.key}: {event.error}", file=sys.stderr)
        elif isinstance(event, FileDone):
            done = windows.pop(event.key, [])
            advances = [(e.next_seek - e.seek) / SAMPLE_RATE for e in done]
            rows.append({"file": event.key, "seconds": round(event.duration, 1), "windows": len(done),
                         "per_30s": round(len(done) / max(1, math.ceil(event.duration / 30)), 2),
                         "min_advance_s": round(min(advances), 2) if advances else None})
    rows.sort(key=lambda r: -r["per_30s"])
    worst = max(r["per_30s"] for r in rows)
    if args.json:
        print(json.dumps({"files": rows, "max_per_30s": worst, "sampled_calls": sampled["calls"],
                          "bounded": sampled["bounded"]}, indent=1))
        return 0
    for r in rows:
        print(f"{r['file']:<52} {r['seconds']:>7.1f} s {r['windows']:>4} windows {r['per_30s']:>5.2f} per 30 s"
              f"  min advance {r['min_advance_s']} s")
    print(f"max windows per 30 s: {worst}; sampled fallback calls (whole runs): {sampled['calls']}; "
          f"windows moved on by MIN_ADVANCE: {sampled['bounded']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
