"""A long file in parts against the same file in one chain: wall time and WER, in one process.

For each MIX (a wav with its reference beside it as .txt, as make_mix.py writes them), Scriptorium
transcribes it twice with batch 8 as a worker does (two replicas on CPU): with the default parts and
with `part_seconds=None` (one chain of windows). Model load excluded. Prints one line per run and the
pooled WER of each way over all mixes.

    python benchmarks/make_mix.py /tmp/mixr9 --rotate 9
    python benchmarks/parts_wer.py /tmp/mix30/mix30.wav /tmp/mixr9/mix30.wav
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.api import Transcriber  # noqa: E402
from engine.backends.ctranslate2_backend import default_replicas  # noqa: E402
from engine.batching import FileTask  # noqa: E402
from bench.wer import word_errors  # noqa: E402
from engine.options import RuntimeOptions, TranscribeOptions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mixes", nargs="+", type=Path, help="wav files with a .txt reference beside each")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    tr = Transcriber(compute="cpu", threads=args.threads, runtime=RuntimeOptions(replicas=default_replicas("cpu", args.threads, args.batch)))
    ways = {"parts": TranscribeOptions(), "one chain": TranscribeOptions(part_seconds=None)}
    pooled = {name: [0, 0] for name in ways}
    for mix in args.mixes:
        reference = mix.with_suffix(".txt").read_text(encoding="utf-8")
        for name, options in ways.items():
            started = time.perf_counter()
            (result,) = tr.transcribe_many([FileTask(str(mix), str(mix))], options, batch_size=args.batch)
            wall = time.perf_counter() - started
            e = word_errors(reference, "".join(s.text for s in result.segments))
            errors = e.substitutions + e.deletions + e.insertions
            pooled[name][0] += errors
            pooled[name][1] += e.reference_words
            print(f"{mix}  {name:9s}  {wall:7.2f} s  WER {100 * errors / e.reference_words:5.2f}%  "
                  f"S/D/I {e.substitutions}/{e.deletions}/{e.insertions}", flush=True)
    for name, (errors, words) in pooled.items():
        print(f"pooled {name:9s}  WER {100 * errors / words:5.2f}% over {words} words")


if __name__ == "__main__":
    main()
